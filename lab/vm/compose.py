"""The three containers of docker-compose.yml (client ⇄ router ⇄ server) running a scenario.

    lab compose run SCENARIO [--out DIR]          # on a Docker host, as root (or in lab vm)
    python -m lab.vm.compose router SCENARIO OUT [CELL]   # in the router container (NET_ADMIN)
    python -m lab.vm.compose client OUT           # in the client container

`run` (the host side): `prepare` the run directory as `lab run --impair netem` does, then per
(cell, repetition): write the cell's scenario, agent configs and the lab's certificates into a
work directory mounted as /results in the containers, `docker-compose up` — the server runs
`lab serve`, the router applies the cell's link with tc netem on its two interfaces (uplink on the
server side, downlink on the client side; OUT/router.json: the tc lines and `tc -s` counters) —,
route client and server through the router (set from the Docker host, so that neither container
needs NET_ADMIN), let the client run the cell's agents (`python -m lab.run.agent`, one per
protocol, in the runner's order), collect their results with `cell_frame` into the RunWriter,
record the tc lines really applied and the counters in run.json (`impairment.applied`), tear down.

Without a Docker engine running (the lab vm guest), `run` starts dockerd itself (iptables' legacy
backend: UML has no nftables) and runs the services on an offline image: a skeleton root (empty
mount points) imported with `docker import`, the host's /usr, /etc and python prefix bind-mounted
read-only by a generated compose override (docs/vm.md, "Containers"). With a registry, the
Dockerfile builds a real image (`docker-compose build`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lab.errors import HostNotCapable, RunError, RunSetupError
from lab.http.tls import ensure_certs
from lab.link.netem import netem_commands, netem_not_expressed
from lab.peers import registry
from lab.run.collect import cell_frame
from lab.run.plan import effective_rate, protocol_order
from lab.run.records import CellOutcome, cell_key, cell_record
from lab.run.runner import RunOptions, prepare
from lab.run.stack import agent_config, cell_stack, reference_serve_args
from lab.scenario.load import load_scenario
from lab.scenario.matrix import expand_cells
from lab.scenario.models import Cell
from lab.workloads import estimate_s

CLIENT_NET = ("192.0.2.0/24", "192.0.2.1", "192.0.2.2")  # subnet, router, client (RFC 5737)
SERVER_NET = ("198.51.100.0/24", "198.51.100.1", "198.51.100.2")  # subnet, router, server
SERVER_PORT = 8443
IMAGE = "lab-hostroot:latest"
PROJECT = "labcompose"
WORK_IN_CONTAINER = "/results"  # where the containers see the host's work directory
AGENT_TIMEOUT_FACTOR = 4.0
CLIENT_WAIT_S = 120.0  # for the routes through the router
SKELETON_DIRS = (
    "bin",
    "dev",
    "etc",
    "lib",
    "lib64",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "var/tmp",
    "work",
    "results",
)


def _sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RunError(f"{' '.join(argv)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def _dev_with(address: str) -> str:
    """The interface that holds `address` (in this network namespace)."""
    for entry in json.loads(_sh(["ip", "-j", "-4", "addr", "show"]).stdout):
        if any(a.get("local") == address for a in entry.get("addr_info", [])):
            return str(entry["ifname"])
    raise RunError(f"no interface with {address}")


def qdisc_stats(dev: str) -> list[dict[str, Any]]:
    """`tc -s -j qdisc show dev DEV`: each qdisc's kind, options and counters."""
    return list(json.loads(_sh(["tc", "-s", "-j", "qdisc", "show", "dev", dev]).stdout or "[]"))


# --- inside the containers ----------------------------------------------------------------
def router(scenario_file: str, out: Path, cell_id: str | None = None) -> None:
    """Apply the link of cell `cell_id` (default: the first), then refresh OUT/router.json
    with the tc lines and counters every second until stopped."""
    cells = expand_cells(load_scenario(scenario_file))
    cell = next((c for c in cells if c.id == cell_id), cells[0]) if cell_id else cells[0]
    up, down = _dev_with(SERVER_NET[1]), _dev_with(CLIENT_NET[1])
    for dev in (up, down):  # no super-packets: one netem decision per MTU-sized packet
        _sh(["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"], check=False)
    cmds = netem_commands(cell.link, uplink_dev=up, downlink_dev=down)
    for argv in cmds:
        _sh(argv)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "cell": cell.id,
        "link": cell.link.model_dump(mode="json"),
        "tc": [" ".join(c) for c in cmds],
        "not_expressed": netem_not_expressed(cell.link),
    }
    while True:
        record["qdiscs"] = {"uplink": qdisc_stats(up), "downlink": qdisc_stats(down)}
        tmp = out / "router.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.rename(out / "router.json")
        time.sleep(1.0)


def client(out: Path, wait_s: float = CLIENT_WAIT_S) -> int:
    """Once the Docker host has routed this container through the router (OUT/routes.ready),
    run the agents of OUT/agents.json one after the other (`python -m lab.run.agent`); the
    first non-zero exit code, else 0."""
    deadline = time.monotonic() + wait_s
    while not (out / "routes.ready").exists():
        if time.monotonic() > deadline:
            raise RunError("no routes through the router (routes.ready) in time")
        time.sleep(0.2)
    rc = 0
    for config in json.loads((out / "agents.json").read_text()):
        log = out / (Path(config).stem + ".log")
        with log.open("wb") as f:
            argv = [sys.executable, "-m", "lab.run.agent", "--config", config]
            code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        rc = rc or code
    return rc


# --- the Docker host side ------------------------------------------------------------------
def skeleton_tar() -> bytes:
    """A root file system of empty mount points, for `docker import`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in SKELETON_DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    return buf.getvalue()


def hostroot_override(python: str, project: Path) -> str:
    """The compose override that runs the services on the skeleton image with the host's
    /usr, /etc and python prefix bind-mounted read-only (JSON is YAML)."""
    prefix = str(Path(python).resolve().parents[1])
    mounts = [
        "/usr:/usr:ro",
        "/etc:/etc:ro",
        "/usr/bin:/bin:ro",
        "/usr/sbin:/sbin:ro",
        "/usr/lib:/lib:ro",
        "/usr/lib64:/lib64:ro",
        f"{prefix}:{prefix}:ro",
        f"{project}:/work:ro",
        "${LAB_RESULTS:-./results}:/results",  # repeated: an override's list replaces the base's
    ]
    env = {"LAB_PYTHON": python, "PYTHONPATH": "/work"}
    service = {"image": IMAGE, "volumes": mounts, "environment": env}
    doc = {"version": "2.4", "services": {s: service for s in ("client", "router", "server")}}
    return json.dumps(doc, indent=1)


def _pid(container: str) -> str:
    return _sh(["docker", "inspect", "-f", "{{.State.Pid}}", container]).stdout.strip()


def route_through_router(client_id: str, server_id: str) -> None:
    """From the Docker host: client and server reach each other only through the router."""
    for cid, (net, via) in (
        (client_id, (SERVER_NET[0], CLIENT_NET[1])),
        (server_id, (CLIENT_NET[0], SERVER_NET[1])),
    ):
        _sh(["nsenter", "-t", _pid(cid), "-n", "ip", "route", "replace", net, "via", via])


@contextlib.contextmanager
def docker_engine(log: Path) -> Iterator[None]:
    """A running dockerd: the host's, or (none running, as in the lab vm guest) one started
    here with iptables' legacy backend (UML's kernel has no nf_tables) and the vfs storage
    driver on a tmpfs, stopped again on the way out."""
    if _sh(["docker", "info"], check=False).returncode == 0:
        yield
        return
    if shutil.which("dockerd") is None:
        raise HostNotCapable("no Docker engine running and no dockerd to start")
    for tool in ("iptables", "ip6tables"):
        _sh(["update-alternatives", "--set", tool, f"/usr/sbin/{tool}-legacy"], check=False)
    Path("/var/lib/docker").mkdir(parents=True, exist_ok=True)
    _sh(["mount", "-t", "tmpfs", "-o", "size=512m", "labdocker", "/var/lib/docker"])
    dockerd = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--iptables=true"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while _sh(["docker", "info"], check=False).returncode != 0:
            if time.monotonic() > deadline or dockerd.poll() is not None:
                raise RunError(f"dockerd did not start; {log}")
            time.sleep(0.5)
        yield
    finally:
        dockerd.terminate()
        dockerd.wait(timeout=30)


class Compose:
    """docker-compose on this project's docker-compose.yml (plus the offline override), with
    the run's work directory as the services' /results."""

    def __init__(self, work: Path, hostroot: bool) -> None:
        self.project = Path(__file__).resolve().parents[2]
        self.work = work
        self.files = [self.project / "docker-compose.yml"]
        if hostroot:
            override = work / "docker-compose.hostroot.yml"
            override.write_text(hostroot_override(sys.executable, self.project))
            self.files.append(override)

    def argv(self, env: dict[str, str], *args: str) -> list[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        pre = ["env", *(f"{k}={v}" for k, v in {"LAB_RESULTS": str(self.work), **env}.items())]
        base = ["docker-compose", "-p", PROJECT, "--project-directory", str(self.project)]
        return [*pre, *base, *files, *args]

    def image(self, hostroot: bool) -> None:
        if hostroot:
            subprocess.run(
                ["docker", "import", "-", IMAGE],
                input=skeleton_tar(),
                check=True,
                capture_output=True,
            )
        else:
            _sh(self.argv({}, "build"))


def _limit_s(cell: Cell) -> float:
    """How long the client's agents may take (s), as the runner allows them, plus start-up."""
    rate = effective_rate(cell)
    per_protocol = sum(
        AGENT_TIMEOUT_FACTOR * estimate_s(w, cell.link.base_rtt_ms, rate) + 25
        for w in cell.workloads
    )
    return per_protocol * len(cell.scenario.protocols) + 60


def _write_pair_files(work: Path, cell: Cell, repetition: int, implementation: str) -> list[str]:
    """The agent configs of (cell, repetition) in the work directory; their container paths
    in the runner's protocol order (also written to agents.json for the client)."""
    impl = registry.get(implementation)
    tag = f"{cell.id}-{repetition}"
    configs = []
    for protocol in protocol_order(cell.scenario.protocols, repetition):
        cfg = agent_config(
            cell,
            None,
            protocol=protocol,
            host=SERVER_NET[2],
            port=SERVER_PORT,
            ca_file=f"{WORK_IN_CONTAINER}/tls/ca.pem",
            early_data_header=impl.early_data_header,
            out=f"{WORK_IN_CONTAINER}/{tag}-{protocol}.json",
            timeout_factor=AGENT_TIMEOUT_FACTOR,
        )
        (work / f"{tag}-{protocol}-config.json").write_text(cfg.model_dump_json())
        configs.append(f"{WORK_IN_CONTAINER}/{tag}-{protocol}-config.json")
    (work / "agents.json").write_text(json.dumps(configs))
    for stale in ("routes.ready", "router.json"):
        (work / stale).unlink(missing_ok=True)
    return configs


def run_pair(
    compose: Compose, cell: Cell, repetition: int, implementation: str
) -> tuple[CellOutcome, list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """One (cell, repetition) through the three services: (outcome, [(protocol, agent
    result)], router.json); the services are always taken down again."""
    out = CellOutcome(cell.id, repetition, ok=False, seed=cell.seed(repetition))
    t0 = time.monotonic()
    work = compose.work
    configs = _write_pair_files(work, cell, repetition, implementation)
    env = {
        "LAB_SCENARIO": f"{WORK_IN_CONTAINER}/scenario.json",
        "LAB_CELL": cell.id,
        "LAB_SERVE_ARGS": " ".join(reference_serve_args(cell_stack(cell, None))),
    }
    try:
        _sh(compose.argv(env, "up", "-d"))
        ids = {
            s: _sh(compose.argv(env, "ps", "-q", s)).stdout.strip()
            for s in ("client", "router", "server")
        }
        route_through_router(ids["client"], ids["server"])
        (work / "routes.ready").touch()
        out.setup_s = time.monotonic() - t0
        t_go = time.monotonic()
        wait = subprocess.run(
            ["docker", "wait", ids["client"]],
            capture_output=True,
            text=True,
            timeout=_limit_s(cell),
            check=False,
        )
        out.workload_s = time.monotonic() - t_go
        time.sleep(1.5)  # the router's last counters
        code = wait.stdout.strip()
        if code != "0":
            logs = _sh(["docker", "logs", "--tail", "20", ids["client"]], check=False)
            raise RunError(f"the client container exited with {code}: {logs.stderr[-1500:]}")
        results = []
        for config in configs:
            protocol = config.rsplit("-", 2)[-2]
            result_file = work / f"{cell.id}-{repetition}-{protocol}.json"
            results.append((protocol, json.loads(result_file.read_text())))
        router_record = json.loads((work / "router.json").read_text())
        out.ok = True
        return out, results, router_record
    finally:
        td = time.monotonic()
        _sh(compose.argv(env, "down", "-t", "2"), check=False)
        out.teardown_s = time.monotonic() - td
        out.wall_s = time.monotonic() - t0


def run(scenario_file: str, out_dir: Path, *, hostroot: bool) -> tuple[Path, int]:
    """`lab compose run`: the scenario through docker-compose.yml's three services into a
    results directory under `out_dir` (as `lab run --impair netem` writes it); (its path, the
    number of errors recorded). A failed pair is recorded in errors.json and the run goes on."""
    scenario = load_scenario(scenario_file)
    if scenario.server != "reference":
        raise RunSetupError("lab compose runs the reference server only (server: reference)")
    prep = prepare(scenario, scenario_file, RunOptions(backend="netem", out_dir=out_dir))
    writer = prep.writer
    t0 = time.monotonic()
    workload = 0.0
    with tempfile.TemporaryDirectory(prefix="lab-compose-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        ensure_certs(work / "tls")
        scenario_doc = scenario.model_dump(mode="json", exclude_unset=True)
        (work / "scenario.json").write_text(json.dumps(scenario_doc))
        with docker_engine(work / "dockerd.log"):
            compose = Compose(work, hostroot)
            compose.image(hostroot)
            applied = dict(writer.meta["impairment"]["applied"])
            for cell, repetition in prep.todo:
                try:
                    outcome, results, router_record = run_pair(
                        compose, cell, repetition, scenario.server
                    )
                except (RunError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                    msg = f"{type(e).__name__}: {e}"
                    writer.record_error(cell.id, repetition, None, None, msg)
                    continue
                workload += outcome.workload_s
                for protocol, result in results:
                    frame, errors = cell_frame(
                        cell, repetition, protocol, scenario.server, result, emulator=False
                    )
                    for kind, err in errors:
                        outcome.errors.append(f"{protocol}/{kind}: {err}")
                        writer.record_error(cell.id, repetition, protocol, kind, err)
                    if len(frame):
                        writer.append_samples(pd.concat([frame], ignore_index=True))
                applied[cell.id] = {
                    **applied[cell.id],
                    "tc": router_record["tc"],
                    "where": "router container (docker-compose.yml)",
                    "qdiscs": router_record["qdiscs"],
                }
                runs = dict(writer.meta.get("cell_runs", {}))
                earlier = runs.get(cell_key(outcome), {})
                runs[cell_key(outcome)] = cell_record(outcome, earlier, datetime.now(UTC))
                writer.meta["cell_runs"] = runs
                writer.meta["impairment"] = {**writer.meta["impairment"], "applied": applied}
                writer.mark_completed(cell.id, repetition)
    wall = time.monotonic() - t0
    overhead = max(0.0, wall - workload)
    timing: dict[str, float | None] = {
        "wall_s": round(wall, 3),
        "workload_s": round(workload, 3),
        "overhead_s": round(overhead, 3),
        "overhead_fraction": round(overhead / wall, 4) if wall else None,
    }
    writer.update_meta(timing=timing, backend="netem")
    writer.finish("complete")
    return writer.path, len(writer.errors)


def main(argv: list[str]) -> int:
    cmd, rest = argv[1], argv[2:]
    if cmd == "router":
        router(rest[0], Path(rest[1]), rest[2] if len(rest) > 2 and rest[2] else None)
    elif cmd == "client":
        return client(Path(rest[0]))
    else:
        print(f"unknown command {cmd!r} (router, client)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
