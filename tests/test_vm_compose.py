"""docker-compose.yml for real: inside a lab vm guest, Debian's dockerd and docker-compose bring
up client, router and server; `lab compose run scenarios/smoke.yaml`: the router applies the
link with tc netem, the client runs the workloads' agents through it, and the results directory
reaches the host (lab.vm.compose)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_vm import needs_guest

from lab.vm.compose import hostroot_override, skeleton_tar

REPO = Path(__file__).resolve().parent.parent


def test_override_mounts_the_host_read_only() -> None:
    doc = json.loads(hostroot_override("/opt/py/bin/python3", Path("/src/lab")))
    router = doc["services"]["router"]
    assert "/opt/py:/opt/py:ro" in router["volumes"] and "/src/lab:/work:ro" in router["volumes"]
    assert router["environment"]["LAB_PYTHON"] == "/opt/py/bin/python3"
    assert len(skeleton_tar()) > 0


@pytest.mark.vm
@needs_guest
def test_smoke_runs_through_the_router_container(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "lab", "vm", "--timeout", "400", "compose", "run"]
    p = subprocess.run(
        [*argv, "scenarios/smoke.yaml", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (run,) = tmp_path.iterdir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete" and meta["impairment"]["backend"] == "netem"
    applied = meta["impairment"]["applied"]["c000"]
    assert applied["where"].startswith("router container")
    assert all("delay 10000us" in t and "loss random 1%" in t for t in applied["tc"])
    assert not any("<router" in t for t in applied["tc"])  # the container's real interfaces
    counters = [q for qs in applied["qdiscs"].values() for q in qs if q["kind"] == "netem"]
    assert len(counters) == 2 and all(q["packets"] > 100 for q in counters)
    assert " 6.1." in meta["environment"]["kernel"]  # prepared in the UML guest
    samples = pd.read_parquet(run / "samples.parquet")
    assert set(samples["protocol"]) == {"h2", "h3"}
    assert set(samples["workload"]) >= {"bulk", "handshake"}
