"""The runner's pure parts (protocol order, seeds, plan, samples from agent results, estimates),
`lab run`'s refusal of bad input (exit 2, file:line, nothing created), and, for real, how it
watches its children (a dead emulator or server fails the repetition at once) and what `lab clean`
removes after a SIGKILL (the run's work directory too)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.net import nsenter
from lab.net.clean import clean
from lab.net.inet_diag import Sampled, Seen, SocketInfo
from lab.net.names import new_prefix
from lab.net.runlock import LOCK_DIR, is_live
from lab.net.topology import Topology
from lab.net.workdir import workdir_path
from lab.peers import go
from lab.results.schema import samples_frame
from lab.run.collect import axis_value, cell_frame
from lab.run.plan import bytes_sizes, cell_seed, effective_rate, mean_loss, plan, protocol_order
from lab.run.records import CellOutcome
from lab.run.runner import (
    Hooks,
    RunOptions,
    agent_argv,
    describe,
    execute,
    prepare,
    server_address,
)
from lab.run.senders import transport_record
from lab.run.skipped import restore_indices, served, skipped_record
from lab.scenario.load import load_scenario, parse_scenario
from lab.scenario.matrix import expand_cells
from lab.scenario.models import StackSpec

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"

TWO_CELLS = """
name: two
seed: 5
repeat: 2
link: {delay_ms: 10, rate_mbit: 10, loss: {model: bernoulli, rate: 0.0}}
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 1}
  - {kind: handshake, modes: [cold, zero_rtt], connections: 1}
matrix:
  link.loss.rate: [0.0, 0.01]
"""


def _cells():
    return expand_cells(parse_scenario(TWO_CELLS))


def test_protocol_order_alternates_between_repetitions() -> None:
    assert protocol_order(["h2", "h3"], 0) == ["h2", "h3"]
    assert protocol_order(["h2", "h3"], 1) == ["h3", "h2"]
    assert protocol_order(["h2", "h3"], 2) == ["h2", "h3"]
    assert protocol_order(["h3"], 1) == ["h3"]


def test_seeds_derive_from_the_scenario_seed() -> None:
    cells = _cells()
    seeds = {(c.id, r): cell_seed(c, r) for c in cells for r in range(2)}
    assert len(set(seeds.values())) == 4  # distinct per cell and repetition
    ss = np.random.SeedSequence([5, 1, 1])
    assert seeds[("c001", 1)] == int(ss.generate_state(1, np.uint64)[0])
    again = {(c.id, r): cell_seed(c, r) for c in _cells() for r in range(2)}
    assert again == seeds  # reproducible
    other = expand_cells(parse_scenario(TWO_CELLS.replace("seed: 5", "seed: 6")))
    assert cell_seed(other[0], 0) != seeds[("c000", 0)]


def test_plan_covers_every_cell_once_per_repetition_repetition_major() -> None:
    pairs = [(c.id, r) for c, r in plan(_cells(), 2)]
    assert pairs == [("c000", 0), ("c001", 0), ("c000", 1), ("c001", 1)]


def _agent_result() -> dict:
    """An agent's output for watch (2 streams, one stall on each) and handshake."""
    ms = 1_000_000
    events = []
    for s in range(2):
        for k in range(5):
            lat = 60.0 if k == 2 else 10.0
            sent = 20 * k * ms
            events.append(
                {
                    "metric": "event_latency_ms",
                    "value": lat,
                    "unit": "ms",
                    "stream": s,
                    "seq": k,
                    "sent_ns": sent,
                    "received_ns": sent + int(lat * ms),
                }
            )
    hs = [
        {
            "metric": "ttfb_ms",
            "value": 40.0,
            "unit": "ms",
            "stream": 0,
            "mode": "cold",
            "early_data": False,
        },
        {
            "metric": "ttfb_rtt",
            "value": 2.0,
            "unit": "rtt",
            "stream": 0,
            "mode": "cold",
            "early_data": False,
        },
        {
            "metric": "ttfb_ms",
            "value": 20.0,
            "unit": "ms",
            "stream": 0,
            "mode": "zero_rtt",
            "early_data": True,
        },
        {
            "metric": "ttfb_rtt",
            "value": 1.0,
            "unit": "rtt",
            "stream": 0,
            "mode": "zero_rtt",
            "early_data": True,
        },
    ]
    cpu = {"server_s": 0.2, "client_s": 0.3, "emulator_s": 0.1}
    return {
        "protocol": "h3",
        "workloads": [
            {"index": 0, "kind": "watch", "rows": events, "error": None, "wall_s": 1.0, "cpu": cpu},
            {
                "index": 1,
                "kind": "handshake",
                "rows": hs,
                "error": None,
                "wall_s": 0.5,
                "cpu": dict(cpu),
            },
        ],
    }


def test_cell_frame_from_agent_rows() -> None:
    cell = _cells()[1]
    frame, errors = cell_frame(cell, 1, "h3", "reference", _agent_result(), emulator=True)
    assert errors == []
    df = samples_frame(frame)  # the results contract accepts it
    assert set(df["cell"]) == {"c001"} and set(df["repetition"]) == {1}
    assert set(df["protocol"]) == {"h3"} and set(df["implementation"]) == {"reference"}
    assert (df["link.loss.rate"] == 0.01).all()  # the axis column
    assert not {"seq", "sent_ns", "received_ns"} & set(df.columns)
    watch = df[df["workload"] == "watch"].set_index("metric")
    agg = watch[watch["stream"].isna()]["value"]
    assert "hol_spread" not in agg  # no drop log passed: no loss-anchored HOL metrics
    assert agg["stalled_fraction"] == pytest.approx(0.2)
    assert agg["excess_p50_ms"] == pytest.approx(0.0)
    assert agg["cpu_emulator_s"] == pytest.approx(0.1)
    assert agg["cpu_bound"] == 0.0
    latency = watch.loc["event_latency_ms"]["value"].to_numpy()
    excess = watch.loc["event_excess_ms"]["value"].to_numpy()
    assert excess == pytest.approx(latency - latency.min())  # excess = latency − the cell's min
    hs = df[df["workload"] == "handshake"]
    zero = hs[(hs["metric"] == "ttfb_rtt") & (hs["mode"] == "zero_rtt")]
    assert list(zero["early_data"]) == [True]
    hs_agg = hs[hs["stream"].isna()].set_index("metric")["value"]
    assert hs_agg["cpu_bound"] == 0.0  # 0.3 s of 0.5 s = 60 % of a core at most


def test_cell_frame_flags_cpu_bound_and_reports_failures() -> None:
    cell = _cells()[0]
    result = _agent_result()
    result["workloads"][1]["cpu"]["server_s"] = 0.46  # 92 % of one core over 0.5 s
    result["workloads"][0]["error"] = "TimeoutError: boom"
    frame, errors = cell_frame(cell, 0, "h2", "reference", result, emulator=False)
    assert errors == [("watch", "TimeoutError: boom")]
    assert set(frame["workload"]) == {"handshake"}
    agg = frame[frame["stream"].isna()].set_index("metric")["value"]
    assert agg["cpu_bound"] == 1.0
    assert "cpu_emulator_s" not in agg.index  # no userspace emulator with netem


def test_axis_values_are_parquet_friendly() -> None:
    assert axis_value(0.01) == 0.01
    assert axis_value({"model": "bernoulli", "rate": 0.01}) == (
        '{"model": "bernoulli", "rate": 0.01}'
    )
    assert axis_value(["h2"]) == '["h2"]'


def test_bytes_sizes_lists_what_the_workloads_fetch() -> None:
    sc = parse_scenario(
        "name: b\nworkloads:\n  - {kind: bulk, bytes: 2000000}\n"
        "  - {kind: multiplex, object_bytes: 25000}\n"
        "  - {kind: rpc_under_load, rpc_bytes: 1000, bulk_bytes: 1500000}\n"
        "  - {kind: handshake, response_bytes: 100}\n  - {kind: watch}\n"
    )
    assert bytes_sizes(expand_cells(sc)[0]) == (100, 1000, 25000, 1500000, 2000000)


def test_shipped_scenarios_estimates() -> None:
    """lossy.yaml's own estimate stays within its 10-minute budget; smoke within 60 s."""
    for name, budget in (("lossy", 600), ("smoke", 60)):
        sc = load_scenario(SCENARIOS / f"{name}.yaml")
        _, _, est = describe(sc, RunOptions())
        assert 0 < est <= budget * 1.25, (name, est)
    for name in ("baseline", "bursty", "handshake", "k8s"):
        sc = load_scenario(SCENARIOS / f"{name}.yaml")
        assert sc.repeat >= 3
    bursty = load_scenario(SCENARIOS / "bursty.yaml")
    lossy = load_scenario(SCENARIOS / "lossy.yaml")
    assert bursty.link_spec.downlink.loss.mean_loss == pytest.approx(
        lossy.link_spec.downlink.loss.rate, rel=0.01
    )
    rtts = [c.link.base_rtt_ms for c in expand_cells(load_scenario(SCENARIOS / "handshake.yaml"))]
    assert min(rtts) == 10 and max(rtts) == 200


def test_effective_rate_caps_by_loss() -> None:
    lossless = _cells()[0]
    assert effective_rate(lossless) == 10
    lossy = expand_cells(load_scenario(SCENARIOS / "lossy.yaml"))[0]
    # 1 % at 50 ms RTT: 1.5 × Mathis ≈ 4.2 Mbit/s, well below the 20 Mbit/s link
    assert effective_rate(lossy) == pytest.approx(4.24, rel=0.01)
    assert mean_loss(lossy) == 0.01


# --- lab run refuses bad input ---------------------------------------------------------------
def _lab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_invalid_scenario_exit_2_file_line_nothing_created(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nrepeat: 1\nlink: {delay_ms: 10}\nworkloads:\n"
        "  - {kind: bulk, bytes: 1000}\n  - {kind: watch, streems: 4}\n"
    )
    out = tmp_path / "results"
    p = _lab("run", str(bad), "--out", str(out), "--yes", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"{bad}:6:" in p.stderr and "streems" in p.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]
    assert "run " not in p.stdout  # the runner never started: no topology, no namespace


def test_run_needs_a_scenario_or_resume(tmp_path: Path) -> None:
    p = _lab("run", cwd=tmp_path)
    assert p.returncode == 2
    p = _lab("run", "--resume", str(tmp_path / "nope"), cwd=tmp_path)
    assert p.returncode == 2 and "run.json" in p.stderr


def test_unsupported_workload_for_server_is_refused(tmp_path: Path) -> None:
    sc = tmp_path / "caddy.yaml"
    sc.write_text("name: c\nrepeat: 1\nserver: caddy\nworkloads:\n  - {kind: watch, streams: 2}\n")
    p = _lab("run", str(sc), "--out", str(tmp_path / "r"), "--yes", cwd=tmp_path)
    assert p.returncode == 2 and "watch" in p.stderr
    assert not (tmp_path / "r").exists()


def test_summary_frame_round_trip() -> None:
    """Samples built by cell_frame summarise into one row per cell × protocol × workload."""
    from lab.results.summary import summarise

    cell = _cells()[1]
    f1, _ = cell_frame(cell, 0, "h3", "reference", _agent_result(), emulator=True)
    f2, _ = cell_frame(cell, 1, "h3", "reference", _agent_result(), emulator=True)
    summary = summarise(samples_frame(pd.concat([f1, f2], ignore_index=True)))
    assert len(summary) == 2
    assert set(summary["n_repetitions"]) == {2}
    assert summary.set_index("workload").loc["handshake", "ttfb_rtt_zero_rtt"] == 1.0


def test_progress_formatting_and_summary_table() -> None:
    from rich.console import Console

    from lab.run.progress import RunProgress, fmt_duration, summary_table

    assert fmt_duration(42) == "42 s"
    assert fmt_duration(75) == "1 min 15 s"
    assert fmt_duration(3 * 3600 + 120) == "3 h 02 min"
    summary = pd.DataFrame(
        {
            "cell": ["c000", "c000"],
            "protocol": ["h2", "h3"],
            "workload": ["watch", "watch"],
            "hol_spread": [0.98, 0.25],
            "cpu_bound": [False, True],
        }
    )
    console = Console(record=True, width=120, force_terminal=False)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "HOL spread" in text and "0.98" in text and "0.25" in text and "yes" in text
    # plain (non-terminal) progress prints one line per finished cell with an ETA
    console = Console(record=True, width=200, force_terminal=False)
    hooks = RunProgress(console)
    cell = _cells()[0]
    hooks.start(total=2, done=0, estimate_s=10)
    hooks.cell_started(cell, 0)
    hooks.cell_finished(CellOutcome("c000", 0, ok=True, seed=1, wall_s=3.0))
    hooks.close()
    out = console.export_text()
    assert "[1/2] c000 rep 0" in out and "ok in 3.0 s" in out and "ETA" in out


# --- the runner watches its children (real namespaces, emulator, server, agents) -------------
TINY = """
name: tiny
seed: 3
repeat: 3
link: {delay_ms: 5, rate_mbit: 10}
protocols: [h2, h3]
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 3}
"""


def _needs_netns() -> None:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("needs root and /dev/net/tun")


# repetition → (namespace whose process is stopped, signal): SIGTERM makes the emulator write
# its outputs and exit 0, as in issue 9 (the pair used to be marked completed, `problems: []`)
VICTIMS = {0: ("rtr", signal.SIGTERM), 1: ("srv", signal.SIGKILL)}


class _KillOneChild(Hooks):
    """1 s into a repetition's first protocol, stop what one of its namespaces runs: the
    emulator (router namespace, SIGTERM) on repetition 0, the server (SIGKILL) on 1."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta  # the RunWriter's run.json, whose `current` names the topology
        self.killed: dict[int, list[int]] = {}
        self.repetition = -1

    def cell_started(self, cell, repetition: int) -> None:
        self.repetition = repetition

    def phase(self, text: str) -> None:
        rep = self.repetition
        if text in ("h2", "h3") and rep in VICTIMS and rep not in self.killed:
            self.killed[rep] = []
            ns, sig = VICTIMS[rep]
            ns = f"{self.meta['current']['prefix']}-{ns}"
            threading.Thread(target=self._kill, args=(rep, ns, sig), daemon=True).start()

    def _kill(self, rep: int, ns: str, sig: int) -> None:
        time.sleep(1.0)
        for pid in nsenter.ns_pids(ns):
            os.kill(pid, sig)
            self.killed[rep].append(pid)


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_a_dead_emulator_or_server_fails_the_repetition_at_once(tmp_path: Path) -> None:
    _needs_netns()
    prep = prepare(
        parse_scenario(TINY), None, RunOptions(backend="emulator", out_dir=tmp_path / "results")
    )
    hooks = _KillOneChild(prep.writer.meta)
    outcome = execute(prep, hooks)
    assert hooks.killed[0] and hooks.killed[1], "nothing was killed"
    assert outcome.status == "complete"
    by_rep = {o.repetition: o for o in outcome.cells}
    assert [by_rep[r].ok for r in range(3)] == [False, False, True]
    # the watch workload alone may take 4 × 3 s + 20 s, the agent 4 × 3 s + 25 s: failing at
    # once means set-up, the 1 s before the kill, and teardown
    assert by_rep[0].wall_s < 12 and by_rep[1].wall_s < 12, (by_rep[0], by_rep[1])
    meta = json.loads((outcome.path / "run.json").read_text())
    assert meta["completed"] == [["c000", 2]]  # --resume redoes repetitions 0 and 1
    assert not meta["cell_runs"]["c000-0"]["ok"] and meta["cell_runs"]["c000-2"]["ok"]
    errors = json.loads((outcome.path / "errors.json").read_text())
    said = {r: " ".join(e["error"] for e in errors if e["repetition"] == r) for r in range(3)}
    assert "emulator exited (status 0)" in said[0], said
    assert "server exited (signal SIGKILL)" in said[1], said
    assert said[2] == ""
    samples = outcome.results.samples
    assert set(samples["repetition"]) == {2}


def _locked_by(pid: int) -> set[str]:
    """Run prefixes whose lock file names `pid` (the runner's own and its topology's)."""
    found = set()
    for f in LOCK_DIR.glob("lab*.lock"):
        try:
            if f.read_text().strip() == str(pid):
                found.add(f.stem)
        except FileNotFoundError:
            continue
    return found


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_lab_clean_removes_a_sigkilled_runs_work_directory(tmp_path: Path) -> None:
    _needs_netns()
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY.replace("repeat: 3", "repeat: 1"))
    argv = ["run", str(scenario), "--out", str(tmp_path / "r"), "--impair", "emulator", "--yes"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    prefixes: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while True:  # until its agents are started: lock, work directory, namespaces all exist
            assert proc.poll() is None, "lab run ended early"
            prefixes |= _locked_by(proc.pid)
            workdirs = [workdir_path(p) for p in prefixes if workdir_path(p).is_dir()]
            if workdirs and list(workdirs[0].glob("*-config.json")):
                break
            assert time.monotonic() < deadline, "the run's agents did not start"
            time.sleep(0.05)
        (workdir,) = workdirs
        run_prefix = workdir.name.removeprefix("lab-run-")
        (topo_prefix,) = prefixes - {run_prefix}
        assert (workdir / "tls" / "key.pem").exists()  # what must not stay behind
        live = clean(run_prefix)
        assert live.skipped_live == [run_prefix] and workdir.is_dir()  # a live run is kept

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert workdir.is_dir() and not is_live(run_prefix)  # left behind, and dead
        for p in (topo_prefix, run_prefix):  # its processes first: they write into workdir
            out = subprocess.run(
                [sys.executable, "-m", "lab", "clean", "--prefix", p],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "removed" in out, out
        assert not workdir.exists()
        assert not [ns for ns in nsenter.list_namespaces() if ns.startswith(topo_prefix)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in prefixes:
            clean(p, force=True)


# --- per-cell server, client and address family; skipped workloads; what the senders used ---
MIXED = """
name: mixed
repeat: 1
workloads:
  - {kind: watch, streams: 2, interval_ms: 20, duration_s: 1}
  - {kind: handshake, modes: [cold, zero_rtt], connections: 1}
  - {kind: k8s_mix, duration_s: 1}
matrix:
  server: [reference, caddy]
  client: [lab, go]
  address_family: [ipv4, ipv6]
"""


def _mixed() -> list:
    return expand_cells(parse_scenario(MIXED))


def test_a_cells_server_serves_some_workloads_and_the_rest_are_skipped_with_reasons() -> None:
    cells = _mixed()
    ref, caddy = served(cells[0]), served(cells[4])
    assert (cells[0].scenario.server, cells[4].scenario.server) == ("reference", "caddy")
    assert ref.indices == (0, 1, 2) and ref.skipped == ()
    assert caddy.indices == (1,) and [w.kind for w in caddy.workloads] == ["handshake"]
    got = [(s.cell, s.index, s.workload, s.server) for s in caddy.skipped]
    assert got == [("c004", 0, "watch", "caddy"), ("c004", 2, "k8s_mix", "caddy")]
    assert "watch" in caddy.skipped[0].reason and "pods" in caddy.skipped[1].reason
    records = skipped_record(cells)
    assert len(records) == 8 and {r["cell"] for r in records} == {"c004", "c005", "c006", "c007"}
    assert set(records[0]) == {"cell", "index", "workload", "server", "reason"}


def test_agent_results_are_read_with_the_scenarios_workload_indices() -> None:
    """The agent numbers only the workloads it ran; mapped back, a caddy cell's handshake rows
    are aggregated as the scenario's workload 1 (not as the skipped watch, 0)."""
    cell = _mixed()[4]
    handshake = _agent_result()["workloads"][1]
    result = {"protocol": "h3", "workloads": [{**handshake, "index": 0}]}
    restored = restore_indices(result, served(cell).indices)
    assert [w["index"] for w in restored["workloads"]] == [1]
    assert result["workloads"][0]["index"] == 0  # the agent's own result is left as it was
    frame, errors = cell_frame(cell, 0, "h3", "caddy", restored, emulator=False)
    assert errors == [] and set(frame["workload"]) == {"handshake"}
    assert set(frame["implementation"]) == {"caddy"} and set(frame["server"]) == {"caddy"}
    assert set(frame["client"]) == {"lab"} and set(frame["address_family"]) == {"ipv4"}


def test_the_cells_client_and_family_choose_the_agent_and_the_address() -> None:
    cells = _mixed()
    topo = Topology(new_prefix())  # not up: only its addresses are read
    by = {(c.scenario.client, c.scenario.address_family): c for c in cells[:4]}
    lab_v4, go_v6 = by[("lab", "ipv4")], by[("go", "ipv6")]
    assert server_address(topo, lab_v4) == topo.server_v4
    assert server_address(topo, go_v6) == topo.server_v6 == "2001:db8:2::2"
    config = Path("/x/agent.json")
    assert agent_argv(lab_v4, config) == [
        sys.executable, "-m", "lab.run.agent", "--config", str(config), "--wait-go"
    ]  # fmt: skip
    assert agent_argv(go_v6, config) == [str(go.AGENT_BINARY), "--config", str(config), "--wait-go"]


def _seen(*algorithms: str | None, udp: tuple[int, int] | None = None) -> Seen:
    seen = Seen()
    for i, cc in enumerate(algorithms):
        seen.tcp[i] = SocketInfo("tcp", socket.AF_INET, 1, "a", 1, "b", 2, i, cc, None, None)
    if udp is not None:
        seen.udp[99] = SocketInfo("udp", socket.AF_INET6, 7, "::", 1, "::", 0, 99, None, *udp)
    return seen


def test_transport_record_of_each_protocol() -> None:
    stack = StackSpec(tcp_congestion="bbr")
    h2 = transport_record(
        "h2",
        server="caddy",
        client="lab",
        stack=stack,
        sampled=Sampled(_seen("bbr", "bbr"), _seen("bbr", None), 7, 0.1),
        agent_result={},
    )
    assert h2["tcp_congestion"] == {"server": {"bbr": 2}, "client": {"?": 1, "bbr": 1}}
    assert h2["sender"] == "bbr" and h2["inet_diag"]["samples"] == 7
    assert h2["tcp_peers"] == ["b"]
    h3 = transport_record(
        "h3",
        server="caddy",
        client="go",
        stack=stack,
        sampled=Sampled(_seen(udp=(4194304, 212992)), _seen(udp=(8, 9)), 3, 0.1),
        agent_result={"implementation": {"quic": {"udp_rcvbuf_bytes": 8, "udp_sndbuf_bytes": 9}}},
    )
    assert h3["quic_congestion"] == {"server": "reno", "client": "reno"}  # quic-go: NewReno
    assert h3["sender"] == "reno" and "tcp_congestion" not in h3
    assert h3["udp_buffers"]["server"] == {
        "sockets": 1, "rcvbuf_bytes": [4194304], "sndbuf_bytes": [212992]
    }  # fmt: skip
    assert h3["udp_buffers_reported_by_client"] == {"udp_rcvbuf_bytes": 8, "udp_sndbuf_bytes": 9}
    ref = transport_record(
        "h3", server="reference", client="lab", stack=StackSpec(), sampled=None, agent_result={}
    )
    assert ref["quic_congestion"] == {"server": "cubic", "client": "cubic"}  # aioquic's setting
    qh3 = StackSpec(quic_engine="qh3")
    ref = transport_record(
        "h3", server="reference", client="go", stack=qh3, sampled=None, agent_result={}
    )
    assert ref["quic_congestion"] == {"server": None, "client": "reno"} and ref["sender"] is None
    nothing = transport_record(
        "h2", server="go", client="go", stack=stack, sampled=Sampled(Seen(), Seen(), 5, 0.1),
        agent_result={},
    )  # fmt: skip
    assert nothing["sender"] is None  # no connection seen: unknown, not a match
