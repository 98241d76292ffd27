"""`lab k8s render`: the manifests validate offline against the Kubernetes OpenAPI schemas
(kubernetes-validate), carry the index → shard mapping, grant only what the lab needs, and the
pods' shell steps dry-run here: with stand-ins for `lab`, `mount` and `aws` that record their
arguments, each pod's `lab` command parses with the lab's own parser and names a scenario that
`lab validate` accepts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lab.cli import build_parser, main
from lab.errors import BadInput
from lab.k8s.manifests import CAPABILITIES
from lab.k8s.options import RenderOptions, parse_results
from lab.k8s.render import documents, render_scenario
from lab.run.plan import parse_shard

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "scenarios" / "smoke.yaml"
LOSSY = REPO / "scenarios" / "lossy.yaml"
# the oldest release with every field used (appArmorProfile: 1.30) and the newest bundled
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
N = 3


def render(results: str = "pvc:lab-results", **kw: Any) -> list[dict[str, Any]]:
    text = render_scenario(
        SMOKE, RenderOptions(shards=N, repeat=3, results=parse_results(results), **kw)
    )
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cm, shard, merge = docs
    assert (cm["kind"], shard["kind"], merge["kind"]) == ("ConfigMap", "Job", "Job")
    return cm, shard, merge


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod(job)
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    return found[0]


# --- schema validation ---------------------------------------------------------------------
@pytest.mark.parametrize("results", ["pvc:lab-results", "s3://lab-bucket/runs/2026"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(results: str, version: str) -> None:
    docs = render(results, namespace="bench")
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_broken_manifest() -> None:
    _, shard, _ = by_kind(render())
    shard["spec"]["completionMode"] = 3
    with pytest.raises(kubernetes_validate.ValidationError, match="is not of type"):
        kubernetes_validate.validate(shard, K8S_VERSIONS[-1], strict=True)
    pod(shard)["containers"][0]["securityContext"]["capabilitiez"] = {}
    shard["spec"]["completionMode"] = "Indexed"
    with pytest.raises(kubernetes_validate.ValidationError, match="capabilitiez"):
        kubernetes_validate.validate(shard, K8S_VERSIONS[-1], strict=True)


# --- what the Job says ---------------------------------------------------------------------
def test_indexed_job_with_one_shard_per_node_and_fixed_cpus() -> None:
    _, shard, merge = by_kind(render(parallelism=2, cpus=3, memory="6Gi"))
    spec = shard["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == N
    assert spec["parallelism"] == 2 and spec["backoffLimitPerIndex"] == 2
    assert pod(shard)["restartPolicy"] == "Never"  # backoffLimitPerIndex requires it
    lab = container(shard, "shard")
    res = lab["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "3", "memory": "6Gi"}
    (term,) = pod(shard)["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == shard["spec"]["template"]["metadata"]["labels"]
    assert merge["spec"]["suspend"] is True and merge["spec"]["backoffLimit"] == 0
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [2]}}


def test_only_net_admin_and_sys_admin_each_with_its_reason() -> None:
    _, shard, merge = by_kind(render())
    sc = container(shard, "shard")["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    assert sc["privileged"] is False
    notes = shard["spec"]["template"]["metadata"]["annotations"]
    for cap in ("NET_ADMIN", "SYS_ADMIN"):
        assert notes[f"lab/capability-{cap}"] == CAPABILITIES[cap] and len(CAPABILITIES[cap]) > 40
    assert "(JOB_COMPLETION_INDEX) runs lab run --shard k+1/3" in notes["lab/shard"]
    tun = next(v for v in pod(shard)["volumes"] if v["name"] == "dev-net-tun")
    assert tun["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}
    merge_sc = container(merge, "merge")["securityContext"]
    assert merge_sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    text = render_scenario(SMOKE, RenderOptions(shards=N, repeat=3))
    assert all(f"#   capability {cap}: {CAPABILITIES[cap]}" in text for cap in CAPABILITIES)


def test_results_to_a_pvc_or_to_s3() -> None:
    _, shard, merge = by_kind(render("pvc:bench-results"))
    vol = next(v for v in pod(shard)["volumes"] if v["name"] == "results")
    assert vol == {"name": "results", "persistentVolumeClaim": {"claimName": "bench-results"}}
    assert "initContainers" not in pod(shard)
    _, shard, merge = by_kind(render("s3://lab-bucket/runs", s3_secret="minio"))
    assert [c["name"] for c in pod(shard)["initContainers"]] == ["download", "shard"]
    assert [c["name"] for c in pod(shard)["containers"]] == ["upload"]
    up = container(shard, "upload")
    assert up["envFrom"] == [{"secretRef": {"name": "minio"}}]
    assert {"name": "LAB_S3_URL", "value": "s3://lab-bucket/runs"} in up["env"]
    assert "envFrom" not in container(shard, "shard")  # the lab never sees the credentials
    assert [c["name"] for c in pod(merge)["initContainers"]] == ["download", "merge"]


@pytest.mark.parametrize(
    ("text", "why"),
    [("nfs:x", "expected pvc:NAME"), ("pvc:Bad_Name", "DNS label"), ("s3://A/x", "bucket"),
     ("s3://bucket/a b", "may not contain")],
)  # fmt: skip
def test_bad_results_targets(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_results(text)


def test_more_shards_than_pairs_is_refused() -> None:
    with pytest.raises(BadInput, match="only 1 \\(cell, repetition\\) pair"):
        documents(SMOKE, RenderOptions(shards=2))


def test_cli_writes_the_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k8s" / "lossy.yaml"
    rc = main(
        ["k8s", "render", str(LOSSY), "--shards", "4", "--image", "reg/lab:1", "-o", str(out)]
    )
    assert rc == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    assert docs[1]["spec"]["completions"] == 4 and docs[1]["metadata"]["name"] == "lab-lossy"
    assert container(docs[1], "shard")["image"] == "reg/lab:1"
    assert main(["k8s", "render", str(LOSSY), "--shards", "0"]) == 2
    assert "--shards must be between 1" in capsys.readouterr().err


# --- the pods' commands, dry-run here ------------------------------------------------------
@pytest.fixture
def stand_ins(tmp_path: Path) -> tuple[Path, Path]:
    """A bin/ directory with `lab`, `mount` and `aws` that append their argv (JSON) to a log;
    `lab` exits with $STAND_IN_EXIT."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("lab", "mount", "aws"):
        script = bin_dir / name
        script.write_text(
            "#!/usr/bin/env python3\nimport json, os, sys\n"
            f"open({str(log)!r}, 'a').write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
            f"sys.exit(int(os.environ.get('STAND_IN_EXIT', '0')) if {name!r} == 'lab' else 0)\n"
        )
        script.chmod(0o755)
    return bin_dir, log


def run_step(
    c: dict[str, Any], bin_dir: Path, results: Path, index: int | None, exit_code: int = 0
) -> tuple[int, list[list[str]]]:
    """Run a container's `sh -c` step with the stand-ins; (exit code, recorded calls)."""
    log = bin_dir.parent / "calls.jsonl"
    log.unlink(missing_ok=True)
    results.mkdir(parents=True, exist_ok=True)  # the pod's mount point
    assert c["command"][:2] == ["/bin/sh", "-c"]
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LAB_RESULTS": str(results),
        "LAB_S3_URL": "s3://lab-bucket/runs",
        "STAND_IN_EXIT": str(exit_code),
    }
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    p = subprocess.run(c["command"], env=env, capture_output=True, text=True, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p.returncode, calls


def test_each_pod_index_runs_its_shard(stand_ins: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = stand_ins
    cm, shard, _ = by_kind(render())
    results = tmp_path / "results"
    for k in range(N):
        rc, calls = run_step(container(shard, "shard"), bin_dir, results, k)
        assert rc == 0
        assert calls[0] == ["mount", "-o", "remount,rw", "/proc/sys"]
        (lab,) = [c[1:] for c in calls if c[0] == "lab"]
        args = build_parser().parse_args(lab)
        assert args.command == "run" and args.shard == f"{k + 1}/{N}"  # 0-based → 1-based
        assert parse_shard(args.shard).index == k + 1 and args.repeat == 3 and args.yes
        assert args.out == results / "lab-smoke" / f"shard-{k + 1}"
        # the scenario it names is the ConfigMap's file; `lab validate` accepts it
        assert args.scenario.startswith("/etc/lab/scenario/")
        local = tmp_path / Path(args.scenario).name
        local.write_text(cm["data"][Path(args.scenario).name])
        assert main(["validate", str(local)]) == 0


def test_a_retried_pod_resumes_its_shard(stand_ins: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = stand_ins
    _, shard, _ = by_kind(render())
    results = tmp_path / "results"
    earlier = results / "lab-smoke" / "shard-2" / "20260101-000000-smoke-ab12-s2of3"
    earlier.mkdir(parents=True)
    (earlier / "run.json").write_text("{}")
    _, calls = run_step(container(shard, "shard"), bin_dir, results, 1)
    (lab,) = [c[1:] for c in calls if c[0] == "lab"]
    args = build_parser().parse_args(lab)
    assert args.resume == earlier and args.scenario is None and args.shard is None
    _, calls = run_step(container(shard, "shard"), bin_dir, results, 0)  # shard 1: a new run
    assert build_parser().parse_args(calls[-1][1:]).shard == "1/3"


def test_s3_pod_uploads_and_passes_on_the_lab_exit_code(
    stand_ins: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, _ = stand_ins
    _, shard, merge = by_kind(render("s3://lab-bucket/runs"))
    results = tmp_path / "results"
    rc, calls = run_step(container(shard, "download"), bin_dir, results, 0)
    assert rc == 0 and calls[0][:3] == ["aws", "s3", "sync"]
    assert calls[0][3:] == [
        "s3://lab-bucket/runs/lab-smoke/shard-1",
        f"{results}/lab-smoke/shard-1",
    ]
    rc, calls = run_step(container(shard, "shard"), bin_dir, results, 0, exit_code=1)
    assert rc == 0 and (results / "exit-code").read_text().strip() == "1"  # the upload runs
    rc, calls = run_step(container(shard, "upload"), bin_dir, results, 0)
    assert rc == 1 and calls[0][:4] == ["aws", "s3", "sync", "--delete"]
    (results / "lab-smoke").mkdir(parents=True, exist_ok=True)
    rc, calls = run_step(container(merge, "merge"), bin_dir, results, None)
    args = build_parser().parse_args(calls[0][1:])
    assert rc == 0 and args.command == "merge" and args.out == Path("merged/lab-smoke-merged")


def test_merge_pod_merges_every_shard(stand_ins: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = stand_ins
    _, _, merge = by_kind(render())
    results = tmp_path / "results"
    for k in (1, 2, 3):
        (results / "lab-smoke" / f"shard-{k}" / f"run-s{k}of3").mkdir(parents=True)
    rc, calls = run_step(container(merge, "merge"), bin_dir, results, None)
    args = build_parser().parse_args(calls[0][1:])
    assert rc == 0 and args.command == "merge" and not args.keep_first
    assert [r.parent.name for r in args.runs] == ["shard-1", "shard-2", "shard-3"]
