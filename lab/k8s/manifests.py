"""The Kubernetes objects of a sharded run, as plain dicts (YAML-ready): the scenario's
ConfigMap, the shards' Indexed Job, the merge Job.

The shard pods run the lab's own network namespaces inside the pod: they get exactly the
capabilities that needs (CAPABILITIES, each with its reason, also as a pod annotation) and the
host's `/dev/net/tun`. One shard per node (pod anti-affinity) and CPU requests = limits keep
shards from disturbing each other's timing. The merge Job is created suspended: un-suspend it
once the shards' Job is complete (docs/scale.md).
"""

from __future__ import annotations

from typing import Any

from lab.k8s.options import DEFAULT_UPLOADER_IMAGE, PvcResults, RenderOptions, S3Results
from lab.k8s.scripts import (
    merge_script,
    s3_download_all_script,
    s3_download_shard_script,
    s3_upload_merged_script,
    s3_upload_shard_script,
    shard_script,
)

RESULTS_MOUNT = "/results"
SCENARIO_MOUNT = "/etc/lab/scenario"
TUN_DEVICE = "/dev/net/tun"
ANNOTATION_PREFIX = "lab"  # annotation keys: lab/<what>
# Linux capabilities of a shard pod (every other one is dropped), with the reason for each.
CAPABILITIES: dict[str, str] = {
    "NET_ADMIN": "veth pairs, addresses, routes (congctl), tc netem, TUN devices, ethtool, "
    "net.* sysctls in the lab's own network namespaces",
    "SYS_ADMIN": "creating and entering network namespaces (ip netns add: unshare, setns, "
    "the bind mount under /run/netns) and remounting the pod's /proc/sys read-write",
}
# What else a shard pod gets beyond the defaults, with the reason.
OTHER_GRANTS: dict[str, str] = {
    "dev-net-tun": f"hostPath {TUN_DEVICE} (a character device): the userspace emulator's TUN "
    "devices; the container runtime's default device rules allow it",
    "apparmor": "Unconfined: the runtime's default AppArmor profile denies mount(2), which "
    "ip netns add needs; seccomp stays RuntimeDefault",
    "run-as-root": "namespaces and TUN need uid 0 within the capabilities above",
}


def labels(name: str, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "lab",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": role,
    }


def _meta(obj: str, name: str, namespace: str | None, role: str) -> dict[str, Any]:
    """metadata of object `obj` of the run `name`."""
    meta: dict[str, Any] = {"name": obj, "labels": labels(name, role)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def scenario_configmap(
    name: str, namespace: str | None, filename: str, text: str
) -> dict[str, Any]:
    """The scenario file, as the pods read it (at SCENARIO_MOUNT/<filename>)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{name}-scenario", name, namespace, "scenario"),
        "data": {filename: text},
    }


def _env(opts: RenderOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "LAB_RESULTS", "value": RESULTS_MOUNT},
        {"name": "LAB_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if isinstance(opts.results, S3Results):
        env.append({"name": "LAB_S3_URL", "value": opts.results.url})
    return env


def _results_volume(opts: RenderOptions) -> dict[str, Any]:
    if isinstance(opts.results, PvcResults):
        return {"name": "results", "persistentVolumeClaim": {"claimName": opts.results.claim}}
    return {"name": "results", "emptyDir": {}}


def _uploader(name: str, script: str, opts: RenderOptions) -> dict[str, Any]:
    """A container of the aws CLI image with the S3 credentials (Secret `opts.s3_secret`)."""
    return {
        "name": name,
        "image": opts.uploader_image or DEFAULT_UPLOADER_IMAGE,
        "command": ["/bin/sh", "-c", script],
        "env": _env(opts),
        "envFrom": [{"secretRef": {"name": opts.s3_secret}}],
        "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT}],
        "securityContext": _unprivileged(),
    }


def _unprivileged() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def shard_job(
    name: str, scenario_file: str, run_args: list[str], opts: RenderOptions
) -> dict[str, Any]:
    """The Indexed Job: pod k (JOB_COMPLETION_INDEX) runs `lab run … --shard k+1/N`."""
    n = opts.shards
    s3 = isinstance(opts.results, S3Results)
    cpu = str(opts.cpus)
    lab = {
        "name": "shard",
        "image": opts.image,
        "command": [
            "/bin/sh",
            "-c",
            shard_script(name, n, f"{SCENARIO_MOUNT}/{scenario_file}", run_args, keep_exit=s3),
        ],
        "env": _env(opts),
        "resources": {  # requests = limits: Guaranteed QoS, whole CPUs (pinned by the
            # static CPU manager policy where the node has it)
            "requests": {"cpu": cpu, "memory": opts.memory},
            "limits": {"cpu": cpu, "memory": opts.memory},
        },
        "securityContext": {
            "runAsUser": 0,
            "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
            "appArmorProfile": {"type": "Unconfined"},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "scenario", "mountPath": SCENARIO_MOUNT, "readOnly": True},
            {"name": "results", "mountPath": RESULTS_MOUNT},
            {"name": "dev-net-tun", "mountPath": TUN_DEVICE},
        ],
    }
    if s3:
        init = [_uploader("download", s3_download_shard_script(name), opts), lab]
        containers = [_uploader("upload", s3_upload_shard_script(name), opts)]
    else:
        init, containers = [], [lab]
    pod_labels = labels(name, "shard")
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "affinity": {
            "podAntiAffinity": {  # one shard per node: shards never share a machine's CPUs
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": pod_labels},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
        "containers": containers,
        "volumes": [
            {"name": "scenario", "configMap": {"name": f"{name}-scenario"}},
            _results_volume(opts),
            {"name": "dev-net-tun", "hostPath": {"path": TUN_DEVICE, "type": "CharDevice"}},
        ],
    }
    if init:
        pod_spec["initContainers"] = init
    annotations = {
        f"{ANNOTATION_PREFIX}/shard": f"pod index k (JOB_COMPLETION_INDEX) runs lab run --shard "
        f"k+1/{n}",
        **{f"{ANNOTATION_PREFIX}/capability-{cap}": why for cap, why in CAPABILITIES.items()},
        **{f"{ANNOTATION_PREFIX}/{what}": why for what, why in OTHER_GRANTS.items()},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**_meta(name, name, opts.namespace, "shard"), "annotations": annotations},
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": opts.parallelism or n,
            "backoffLimitPerIndex": opts.backoff_limit_per_index,
            "podFailurePolicy": {
                "rules": [
                    {  # exit 2: bad input or a node that cannot do it; a retry cannot help
                        "action": "FailIndex",
                        "onExitCodes": {"operator": "In", "values": [2]},
                    },
                    {  # a drained or preempted node is not the shard's fault
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def merge_job(name: str, opts: RenderOptions) -> dict[str, Any]:
    """The merge Job (created suspended): `lab merge` of every shard's run."""
    s3 = isinstance(opts.results, S3Results)
    merge = {
        "name": "merge",
        "image": opts.image,
        "command": ["/bin/sh", "-c", merge_script(name, keep_exit=s3)],
        "env": _env(opts),
        "resources": {
            "requests": {"cpu": "1", "memory": opts.memory},
            "limits": {"cpu": "1", "memory": opts.memory},
        },
        "securityContext": _unprivileged(),
        "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT}],
    }
    if s3:
        init = [_uploader("download", s3_download_all_script(name), opts), merge]
        containers = [_uploader("upload", s3_upload_merged_script(name), opts)]
    else:
        init, containers = [], [merge]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": [_results_volume(opts)],
    }
    if init:
        pod_spec["initContainers"] = init
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(f"{name}-merge", name, opts.namespace, "merge"),
        "spec": {
            "suspend": True,  # un-suspend when the shards' Job is complete (docs/scale.md)
            "completions": 1,
            "backoffLimit": 0,  # a second attempt would find the merged run already there
            "template": {
                "metadata": {"labels": labels(name, "merge")},
                "spec": pod_spec,
            },
        },
    }
