"""docker-compose.yml for real: inside a lab vm guest, Debian's dockerd and docker-compose bring
up client, router and server; the router applies smoke.yaml's link with tc netem and the client
fetches over h2 and h3 through it (lab.vm.compose check)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lab.errors import HostNotCapable
from lab.vm.compose import hostroot_override, skeleton_tar
from lab.vm.host import run_in_guest
from lab.vm.kernel import find_kernel


def _guest_possible() -> bool:
    try:
        find_kernel()
    except HostNotCapable:
        return False
    return True


needs_guest = pytest.mark.skipif(not _guest_possible(), reason="no user-mode-linux here")

REPO = Path(__file__).resolve().parent.parent


def test_override_mounts_the_host_read_only() -> None:
    doc = json.loads(hostroot_override("/opt/py/bin/python3", Path("/src/lab")))
    router = doc["services"]["router"]
    assert "/opt/py:/opt/py:ro" in router["volumes"] and "/src/lab:/work:ro" in router["volumes"]
    assert router["environment"]["LAB_PYTHON"] == "/opt/py/bin/python3"
    assert len(skeleton_tar()) > 0


@pytest.mark.vm
@needs_guest
def test_three_services_run_smoke_through_netem(tmp_path: Path) -> None:
    program = [
        sys.executable,
        "-m",
        "lab.vm.compose",
        "check",
        "scenarios/smoke.yaml",
        str(tmp_path),
    ]
    r = run_in_guest([], program=program, shares=[tmp_path], timeout_s=400)
    assert r.exit_code == 0, (tmp_path / "compose.json").read_text()
    result = json.loads((tmp_path / "compose.json").read_text())
    assert set(result["services"]) == {"client", "router", "server"}
    router = json.loads((tmp_path / "router.json").read_text())
    assert all("delay 10000us" in t and "loss random 1%" in t for t in router["tc"])
    counters = [q for qs in router["qdiscs"].values() for q in qs if q["kind"] == "netem"]
    assert len(counters) == 2 and all(q["packets"] > 0 for q in counters)
    samples = json.loads((tmp_path / "client.json").read_text())
    for protocol in ("h2", "h3"):
        rows = samples[protocol]
        assert rows and all(row["status"] == 200 for row in rows)
        # through the router: every fetch takes at least one base RTT (2 × 10 ms)
        assert min(row["ttfb_ms"] for row in rows) > 20
