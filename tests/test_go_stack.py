"""The Kubernetes stacks in `lab run`, end to end and for real: `server: go, client: go` over
IPv4 and IPv6 (every workload, both protocols, versions and UDP buffers in run.json); a matrix
over servers and `stack.tcp_congestion` where Caddy's TCP follows the scenario's algorithm
(cubic, and bbr: the measurement can tell them apart), workloads Caddy cannot serve are skipped
with their reason, and `lab check` and the report flag the cells whose h2 and h3 senders used
different congestion controllers (and not the one where they match). Plus the pure rules that
turn run.json's measured senders into that flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from lab.evidence.check import check_run
from lab.evidence.claims import controller_confound, controller_mismatches, measured_confound
from lab.results.reader import RunResults, load

ROOT = Path(__file__).resolve().parents[1]
LAB_RUN = [sys.executable, "-m", "lab", "run"]

GO_GO = """
name: gostack
seed: 3
repeat: 1
link: {delay_ms: 5, rate_mbit: 50}
server: go
client: go
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 1}
  - {kind: handshake, modes: [cold, resumed, zero_rtt], connections: 2}
  - {kind: bulk, bytes: 500000}
  - {kind: rpc_under_load, interval_ms: 20, rpc_bytes: 1000, bulk_bytes: 300000}
  - {kind: k8s_mix, gets: 10, list_pages: 2, list_limit: 20, watches: 2, duration_s: 1}
matrix:
  address_family: [ipv4, ipv6]
"""
# bulk lasts ~0.4 s at 20 Mbit/s: several inet_diag samples (0.1 s apart) see its connection
CONGESTION = """
name: congestion
seed: 4
repeat: 1
link: {delay_ms: 5, rate_mbit: 20}
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 1}
  - {kind: bulk, bytes: 1000000}
matrix:
  server: [reference, caddy]
  stack.tcp_congestion: [cubic, bbr]
"""
THRESHOLDS = """
thresholds:
  - {name: bulk-goodput, workload: bulk, metric: goodput_mbit, ratio: h3/h2, min: 0.0}
"""


def _lab_run(tmp_path: Path, name: str, text: str) -> tuple[RunResults, float]:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("needs root and /dev/net/tun")
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text)
    out = tmp_path / "results"
    t0 = time.monotonic()
    p = subprocess.run(
        [*LAB_RUN, str(scenario), "--out", str(out), "--impair", "emulator", "--yes"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run_dir,) = out.iterdir()
    return load(run_dir), time.monotonic() - t0


@pytest.fixture(scope="module")
def go_run(go_built: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResults, float]:
    return _lab_run(tmp_path_factory.mktemp("go"), "gostack", GO_GO)


@pytest.fixture(scope="module")
def cc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResults, float]:
    return _lab_run(tmp_path_factory.mktemp("cc"), "congestion", CONGESTION)


def _assert_complete(run: RunResults, wall_s: float, max_wall_s: float) -> None:
    """The run finished with no error row, within `max_wall_s` seconds of wall time."""
    assert run.meta["status"] == "complete" and len(run.errors) == 0, run.errors
    assert wall_s < max_wall_s, f"{wall_s:.0f} s"


def _transport(meta: dict[str, Any], cell: str) -> dict[str, Any]:
    record: dict[str, Any] = meta["cell_runs"][f"{cell}-0"]["transport"]
    return record


# --- server: go, client: go ------------------------------------------------------------------
@pytest.mark.netns
@pytest.mark.timeout(300)
def test_go_server_and_go_client_run_every_workload_over_ipv4_and_ipv6(go_run) -> None:
    run, wall = go_run
    _assert_complete(run, wall, max_wall_s=60)
    s = run.samples
    assert set(s["implementation"]) == {"go"}
    kinds = {"watch", "handshake", "bulk", "rpc_under_load", "k8s_mix"}
    for family in ("ipv4", "ipv6"):
        rows = s[s["address_family"] == family]
        for protocol in ("h2", "h3"):
            mine = rows[rows["protocol"] == protocol]
            assert set(mine["workload"]) == kinds, (family, protocol)
            goodput = mine[(mine["workload"] == "bulk") & (mine["metric"] == "goodput_mbit")]
            assert 1 < goodput["value"].iloc[0] <= 50, (family, protocol)
    zero = s[(s["protocol"] == "h3") & (s["mode"] == "zero_rtt") & (s["metric"] == "ttfb_rtt")]
    assert zero["early_data"].any()  # quic-go's 0-RTT, proven by the Go server's header
    cells = {c["cell"]: c for c in run.meta["cells"]}
    assert [(c["server"], c["client"]) for c in cells.values()] == [("go", "go")] * 2
    # the h2 connections came from the family the cell asked for
    for cell, peer in (("c000", "192.0.2.2"), ("c001", "2001:db8:1::2")):
        assert cells[cell]["address_family"] == ("ipv6" if ":" in peer else "ipv4")
        assert _transport(run.meta, cell)["h2"]["tcp_peers"] == [peer]


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_go_run_records_versions_controllers_and_udp_buffers(go_run) -> None:
    run, _ = go_run
    stacks = run.meta["stacks"]
    for name in ("go", "go_agent"):
        versions = stacks[name]["versions"]
        assert versions["go"].startswith("go1.") and versions["quic-go"].startswith("0.29")
        assert versions["x/net"] and stacks[name]["quic_congestion"] == "reno"
    for cell in ("c000", "c001"):
        t = _transport(run.meta, cell)
        assert t["h2"]["tcp_congestion"]["server"].keys() == {"cubic"}  # the routes' congctl
        assert t["h2"]["tcp_congestion"]["client"].keys() == {"cubic"}
        assert t["h3"]["quic_congestion"] == {"server": "reno", "client": "reno"}
        buffers = t["h3"]["udp_buffers"]
        assert buffers["server"]["sockets"] == 1 and buffers["server"]["rcvbuf_bytes"][0] > 0
        reported = t["h3"]["udp_buffers_reported_by_client"]["udp_rcvbuf_bytes"]
        assert buffers["client"]["rcvbuf_bytes"] == [reported]  # inet_diag = the Go agent's own
    # quic-go 0.29 is NewReno: against TCP cubic the two senders differ in both cells
    assert set(controller_mismatches(run.meta)) == {"c000", "c001"}


# --- Caddy's TCP follows the scenario; skipped workloads; the flag -----------------------------
@pytest.mark.netns
@pytest.mark.timeout(300)
def test_caddys_tcp_uses_the_scenarios_algorithm(cc_run) -> None:
    run, wall = cc_run
    _assert_complete(run, wall, max_wall_s=90)
    by_cell = {c["cell"]: (c["server"], c["stack"]["tcp_congestion"]) for c in run.meta["cells"]}
    assert by_cell == {
        "c000": ("reference", "cubic"),
        "c001": ("reference", "bbr"),
        "c002": ("caddy", "cubic"),
        "c003": ("caddy", "bbr"),
    }
    for cell, (_, algorithm) in by_cell.items():
        h2 = _transport(run.meta, cell)["h2"]
        assert h2["tcp_congestion"]["server"].keys() == {algorithm}, (cell, h2)
        assert h2["tcp_congestion"]["client"].keys() == {algorithm}, (cell, h2)
        assert h2["sender"] == algorithm


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_workloads_caddy_cannot_serve_are_skipped_with_their_reason(cc_run) -> None:
    run, _ = cc_run
    skipped = run.meta["skipped"]
    assert [(s["cell"], s["workload"], s["server"]) for s in skipped] == [
        ("c002", "watch", "caddy"),
        ("c003", "watch", "caddy"),
    ]
    assert all("watch route" in s["reason"] for s in skipped)
    s = run.samples
    caddy = s[s["implementation"] == "caddy"]
    assert set(caddy["workload"]) == {"bulk"} and set(caddy["protocol"]) == {"h2", "h3"}
    reference = s[s["implementation"] == "reference"]
    assert set(reference["workload"]) == {"bulk", "watch"}


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_check_and_report_flag_cells_whose_senders_used_different_controllers(
    cc_run, tmp_path: Path
) -> None:
    run, _ = cc_run
    flags = controller_mismatches(run.meta)
    assert "c000" not in flags  # TCP cubic, aioquic cubic: like for like
    assert flags["c001"] == "different congestion controllers: h2 TCP bbr (measured), h3 QUIC cubic"
    assert "h2 TCP cubic (measured), h3 QUIC reno" in flags["c002"]  # quic-go: NewReno
    assert "h2 TCP bbr (measured), h3 QUIC reno" in flags["c003"]
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text(THRESHOLDS)
    report, junit = check_run(run.path, thresholds)
    (result,) = report.results
    assert result.status == "pass"
    flagged = {c.cell for c in result.cells if c.different_controllers}
    assert flagged == {"c001", "c002", "c003"}
    assert "different congestion controllers in c001 (h2 TCP bbr (measured)" in result.message
    assert set(report.controller_flags) == {"c001", "c002", "c003"}
    out = ET.fromstring(junit).find(".//system-out")
    assert out is not None and out.text is not None
    assert "c000: " in out.text and out.text.count("different_controllers") == 3
    p = subprocess.run(
        [sys.executable, "-m", "lab", "report", str(run.path), "--out", str(tmp_path / "rep")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    skipped = md.split("## Skipped workloads", 1)[1].split("##", 1)[0]
    assert "| c002 | caddy | watch | server 'caddy' does not serve the watch route(s) |" in skipped
    senders = md.split("## Congestion control and UDP buffers", 1)[1].split("\n## ", 1)[0]
    assert "3 cell(s) whose h2 and h3 senders used different congestion controllers" in senders
    rows = {
        line.split(" | ")[0].strip("| "): line for line in senders.splitlines() if "| c0" in line
    }
    assert rows["c000"].rstrip().endswith("|  |")  # no flag
    assert "caddy" in rows["c003"] and "bbr (" in rows["c003"] and "reno / cubic" in rows["c003"]


# --- the rule, on run.json alone -----------------------------------------------------------
def _meta(*senders: tuple[str, int, str | None, str | None]) -> dict[str, Any]:
    """run.json with cells and one `transport` record per (cell, repetition, h2, h3 sender)."""
    runs = {
        f"{cell}-{rep}": {"transport": {"h2": {"sender": h2}, "h3": {"sender": h3}}}
        for cell, rep, h2, h3 in senders
    }
    cells = [{"cell": c} for c in dict.fromkeys(s[0] for s in senders)]
    return {"cells": cells, "cell_runs": runs, "stacks": {"stack": {"tcp_congestion": "cubic"}}}


def test_measured_senders_decide_the_confound() -> None:
    meta = _meta(
        ("c0", 0, "cubic", "cubic"),
        ("c0", 1, "cubic", "cubic"),
        ("c1", 0, "bbr", "cubic"),
        ("c2", 0, "cubic", "cubic"),
        ("c2", 1, "bbr", "cubic"),  # one repetition's connections used bbr
        ("c3", 0, None, "reno"),  # no h2 connection seen
        ("c10", 0, "reno", "reno"),  # "c1" must not read c10's records
    )
    assert measured_confound(meta, "c0") is None
    assert measured_confound(meta, "c1") == (
        "different congestion controllers: h2 TCP bbr (measured), h3 QUIC cubic"
    )
    assert measured_confound(meta, "c2") == (
        "different congestion controllers: h2 TCP bbr/cubic (measured), h3 QUIC cubic"
    )
    assert measured_confound(meta, "c3") == (
        "congestion controllers unknown: h2 TCP ? (measured), h3 QUIC reno"
    )
    assert measured_confound(meta, "c10") is None
    assert set(controller_mismatches(meta)) == {"c1", "c2"}  # unknown is not "different"
    # measured values win over the stack settings (which say cubic/? here)
    assert controller_confound(meta, "c0", "caddy") is None
    # without measurements: the stack settings, as before
    old = {"stacks": {"stack": {"tcp_congestion": "bbr", "quic_congestion_control": "cubic"}}}
    assert controller_confound(old, "c0", None) == (
        "different congestion controllers: h2 TCP bbr, h3 QUIC cubic"
    )
    assert controller_mismatches(old) == {}
