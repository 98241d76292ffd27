"""`lab run` end to end, for real: namespaces, the userspace emulator, the reference server and
the agents. smoke.yaml's results are loaded back and every metric is checked for sane values;
an interrupted run (SIGINT after its first finished cell) resumes without redoing that cell."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from labrun import (
    EMULATOR,
    ROOT,
    lab_argv,
    run_lab,
    run_scenario,
    skip_without_netns,
    write_scenario,
)

from lab.net import nsenter
from lab.results.reader import load
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS

pytestmark = [pytest.mark.netns, pytest.mark.timeout(600)]

SMOKE = ROOT / "scenarios" / "smoke.yaml"


def _prefixes(meta: dict) -> set[str]:
    found = {r["prefix"] for r in meta.get("cell_runs", {}).values() if r.get("prefix")}
    if meta.get("current") and meta["current"].get("prefix"):
        found.add(meta["current"]["prefix"])
    return found


def _assert_no_namespaces_left(prefixes: set[str]) -> None:
    assert prefixes, "run.json names no topology prefix"
    left = [ns for ns in nsenter.list_namespaces() if any(ns.startswith(p) for p in prefixes)]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):
    """Run smoke.yaml once; (completed process, results)."""
    skip_without_netns()
    run = run_scenario(SMOKE, tmp_path_factory.mktemp("smoke") / "results")
    return run.process, run.results, run.wall_s


def test_smoke_prints_plan_then_run_dir(smoke) -> None:
    p, res, _ = smoke
    lines = p.stdout.splitlines()
    assert lines[0].startswith("smoke: 1 cell(s) × 1 repetition(s) × 2 protocol(s); estimated")
    assert str(res.path) in p.stdout
    assert "complete:" in p.stdout


def test_smoke_run_json(smoke) -> None:
    _, res, wall = smoke
    m = res.meta
    assert m["status"] == "complete" and m["completed"] == [["c000", 0]]
    assert m["schema_version"] == 2 and m["seed"] == 1
    assert m["link_model_reseeded_per_protocol"] is True
    assert m["impairment"]["backend"] == "emulator"
    assert "c000" in m["impairment"]["applied"]
    assert {"h2", "quic"} <= set(m["stacks"]["reference"])
    assert m["stacks"]["reference"]["h2"]["initial_stream_window_bytes"] > 65_535
    assert m["environment"]["python"] and m["environment"]["kernel"]
    assert m["cells"][0]["cell"] == "c000"
    run = m["cell_runs"]["c000-0"]
    assert run["ok"] and run["errors"] == [] and isinstance(run["seed"], int)
    t = m["timing"]
    assert 0 < t["workload_s"] < t["wall_s"] <= wall
    assert t["overhead_s"] == pytest.approx(t["wall_s"] - t["workload_s"], abs=0.01)
    assert wall < 120  # the 60 s budget, with room for a loaded CI box
    emu = res.path / "emulator" / "c000-0"
    stats = json.loads((emu / "emulator.json").read_text())
    assert stats["seed"] == run["seed"]
    assert (emu / "drops.csv").read_text().startswith("time_ns,direction")
    assert res.errors.empty


def test_smoke_every_metric_present_for_both_protocols(smoke) -> None:
    _, res, _ = smoke
    s = res.samples
    for protocol in ("h2", "h3"):
        present = set(s[s["protocol"] == protocol]["metric"])
        missing = (SAMPLE_METRICS | AGGREGATE_METRICS) - present
        assert not missing, f"{protocol} lacks {sorted(missing)}"
    assert set(s["workload"]) == {"watch", "handshake", "bulk", "rpc_under_load"}
    assert len(res.summary) == 2 * 4


def _values(s, protocol, metric, **eq):
    sel = (s["protocol"] == protocol) & (s["metric"] == metric)
    for k, v in eq.items():
        sel &= s[k] == v
    return s[sel]["value"]


def test_smoke_ttfb_matches_the_textbook(smoke) -> None:
    """h2 ≈ 3 RTT, h3 1-RTT ≈ 2 RTT, h3 0-RTT ≈ 1 RTT (plus Python's handshake CPU)."""
    s = _hs = smoke[1].samples
    h2_cold = _values(s, "h2", "ttfb_rtt", mode="cold").median()
    h3_cold = _values(s, "h3", "ttfb_rtt", mode="cold").median()
    assert 2.5 <= h2_cold <= 5.0
    assert 1.5 <= h3_cold <= 4.0
    assert h3_cold < h2_cold
    zero = _hs[
        (_hs["protocol"] == "h3") & (_hs["metric"] == "ttfb_rtt") & (_hs["mode"] == "zero_rtt")
    ]
    early = zero[zero["early_data"] == True]  # noqa: E712 — a pandas boolean mask
    assert len(early) >= 1, "no h3 0-RTT request was confirmed as early data by the server"
    assert early["value"].median() < h3_cold
    assert 0.8 <= early["value"].median() <= 3.0
    h2_zero = s[(s["protocol"] == "h2") & (s["mode"] == "zero_rtt")]
    assert len(h2_zero) and not h2_zero["early_data"].any()  # Python's ssl has no early data
    ms = _values(s, "h2", "ttfb_ms", mode="cold")
    assert (ms >= 3 * 20 * 0.95).all()  # never faster than 3 RTT of 20 ms


def test_smoke_watch_and_throughput_values_are_sane(smoke) -> None:
    s = smoke[1].samples
    for p in ("h2", "h3"):
        lat = _values(s, p, "event_latency_ms")
        assert len(lat) == 4 * 150  # 4 streams × 3 s / 20 ms
        assert lat.min() >= 10.0 * 0.99  # at least the one-way delay
        excess = _values(s, p, "event_excess_ms").to_numpy()
        assert np.sort(excess) == pytest.approx(np.sort(lat.to_numpy()) - lat.min())
        for q, level in (("p50", 50), ("p99", 99)):  # the aggregates come from these samples
            got = float(_values(s, p, f"excess_{q}_ms").iloc[0])
            assert got == pytest.approx(np.percentile(excess, level))
        for m in ("hol_spread", "stalled_fraction", "rpc_delayed_fraction"):
            v = _values(s, p, m)
            assert ((v >= 0) & (v <= 1)).all(), m
        good = _values(s, p, "goodput_mbit")
        assert ((good > 0.1) & (good <= 10 * 1.05)).all()
        util = _values(s, p, "utilisation")
        assert ((util > 0) & (util <= 1.05)).all()
        assert (_values(s, p, "rpc_latency_ms") >= 20 * 0.99).all()  # ≥ 1 RTT
        assert _values(s, p, "rpc_p95_ms").iloc[0] >= 20
        for m in ("cpu_server_s", "cpu_client_s"):  # each process worked
            assert (_values(s, p, m) > 0).all(), m
        # CPU time comes in clock ticks (10 ms): the emulator forwards a few hundred packets in
        # the handshake workload and may stay under one tick, so only the seconds-long ones count.
        emulator = s[(s["protocol"] == p) & (s["metric"] == "cpu_emulator_s")]
        assert (emulator[emulator["workload"] != "handshake"]["value"] > 0).all()
        assert (emulator["value"] >= 0).all() and len(emulator) == 4
        assert set(_values(s, p, "cpu_bound")) <= {0.0, 1.0}


def test_smoke_left_no_namespace(smoke) -> None:
    _assert_no_namespaces_left(_prefixes(smoke[1].meta))


TWO_CELLS = """
name: resumable
seed: 9
repeat: 1
link: {delay_ms: 5, rate_mbit: 20}
protocols: [h2, h3]
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 2}
  - {kind: bulk, bytes: 200000}
matrix:
  watch.streams: [1, 2]
"""


def test_interrupted_run_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    skip_without_netns()
    scenario = write_scenario(tmp_path, "resumable", TWO_CELLS)
    out = tmp_path / "results"
    proc = subprocess.Popen(
        lab_argv("run", str(scenario), "--out", str(out), *EMULATOR),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 180
        run_json = None
        while time.monotonic() < deadline:
            found = list(out.glob("*/run.json")) if out.exists() else []
            if found:
                run_json = found[0]
                with_first = json.loads(run_json.read_text()).get("completed", [])
                if with_first:
                    break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.05)
        else:
            pytest.fail("the first cell did not finish in time")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(120)
        text = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, text
    run_dir = run_json.parent
    assert f"lab run --resume {run_dir}" in text
    meta = json.loads(run_json.read_text())
    assert meta["status"] == "interrupted"
    assert meta["completed"] == [["c000", 0]]
    first = meta["cell_runs"]["c000-0"]
    _assert_no_namespaces_left(_prefixes(meta))
    partial = load(run_dir)
    assert {
        (c, int(r))
        for c, r in zip(partial.samples["cell"], partial.samples["repetition"], strict=True)
    } == {("c000", 0)}

    run_lab("run", "--resume", str(run_dir), "--yes")
    res = load(run_dir)
    assert res.status == "complete"
    assert sorted(map(tuple, res.meta["completed"])) == [("c000", 0), ("c001", 0)]
    assert res.meta["cell_runs"]["c000-0"] == first  # not redone: same record, same time
    s = res.samples
    pairs = {(c, int(r)) for c, r in zip(s["cell"], s["repetition"], strict=True)}
    assert pairs == {("c000", 0), ("c001", 0)}
    per = s[s["metric"] == "cpu_bound"].groupby(["cell", "protocol", "workload"]).size()
    assert (per == 1).all() and len(per) == 2 * 2 * 2  # each aggregate exactly once
    assert res.meta["timing"]["wall_s"] > 0
    _assert_no_namespaces_left(_prefixes(res.meta))


SMOKE_CADDY = ROOT / "scenarios" / "smoke-caddy.yaml"


# Wall-clock TTFB on a shared 2-core host: a busy neighbour (seen once in CI: every h3 0-RTT
# connection 2.5-4.2 RTT, 1.25-1.7 on a quiet host) inflates it, so a failure is retried on a
# fresh run after a pause; the bound itself is not loosened.
@pytest.mark.flaky(reruns=2, reruns_delay=10)
def test_caddy_under_lab_run(tmp_path: Path) -> None:
    """`server: caddy` (quic-go) through the same namespaces and emulator: TTFB per mode with
    0-RTT proven by the handshake (Caddy sends no lab-early-data header), and goodput."""
    skip_without_netns()
    res = run_scenario(SMOKE_CADDY, tmp_path / "results").results
    s = res.samples
    assert set(s["implementation"]) == {"caddy"}
    ttfb = s[s["metric"] == "ttfb_rtt"]
    table = ttfb[["protocol", "mode", "value", "early_data"]].to_string()
    zero = ttfb[(ttfb["protocol"] == "h3") & (ttfb["mode"] == "zero_rtt")]
    assert len(zero) == 3 and zero["early_data"].fillna(False).astype(bool).sum() >= 2, table
    assert zero[zero["early_data"].fillna(False).astype(bool)]["value"].median() < 1.8, table
    cold = ttfb[(ttfb["mode"] == "cold")].groupby("protocol")["value"].median()
    assert 1.8 < cold["h3"] < cold["h2"], table
    assert not ttfb[ttfb["protocol"] == "h2"]["early_data"].fillna(False).astype(bool).any()
    goodput = s[s["metric"] == "goodput_mbit"].set_index("protocol")["value"]
    assert set(goodput.index) == {"h2", "h3"} and (goodput > 0.5).all()
    _assert_no_namespaces_left(_prefixes(res.meta))
