"""`host_busy`: processes other than the server, the client and the emulator took more than half
a core during a workload (its wall-clock times may be inflated). Known answers for the /proc/stat
reading and the flag; its consumers (summary.csv, `lab check`, the terminal table); and a real
`lab run` with two busy loops beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from labrun import run_scenario, skip_without_netns, write_scenario
from rich.console import Console

from lab.evidence.check import LoadedThreshold, Threshold, evaluate
from lab.results.schema import samples_frame
from lab.results.summary import summarise
from lab.run.agent import host_cpu_s, proc_cpu_s
from lab.run.progress import summary_table
from lab.workloads.aggregate import CpuUsage
from lab.workloads.metrics import host_busy

TICK = os.sysconf("SC_CLK_TCK")


def test_host_cpu_counts_processes_and_steal_not_idle_or_interrupts() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    stat = "cpu  100 20 30 5000 70 5 5 10 40 0\ncpu0 50 10 15 2500 35 2 3 5 20 0\n"
    assert host_cpu_s(stat) == pytest.approx((100 + 20 + 30 + 10) / TICK)
    with pytest.raises(ValueError, match="cpu"):
        host_cpu_s("intr 1 2 3\n")
    assert host_cpu_s() > 0  # this host's own file parses


def test_host_busy_is_more_than_half_a_core_of_others() -> None:
    assert host_busy(0.5, 1.0) is False
    assert host_busy(0.51, 1.0) is True
    assert host_busy(1.4, 2.0) is True
    with pytest.raises(ValueError):
        host_busy(1.0, 0.0)


def _flags(usage: CpuUsage) -> dict[str, float]:
    return {str(r["metric"]): float(r["value"]) for r in usage.rows()}


def test_cpu_rows_carry_host_and_other_seconds() -> None:
    busy = _flags(CpuUsage(0.5, 0.6, 0.1, wall_s=2.0, host_s=2.6))
    assert busy["cpu_host_s"] == 2.6
    assert busy["cpu_other_s"] == pytest.approx(1.4)
    assert busy["host_busy"] == 1.0 and busy["cpu_bound"] == 0.0
    assert busy["workload_wall_s"] == 2.0
    quiet = _flags(CpuUsage(0.5, 0.6, None, wall_s=2.0, host_s=1.3))
    assert quiet["cpu_other_s"] == pytest.approx(0.2) and quiet["host_busy"] == 0.0
    # tick rounding can put the host below the sum of its parts: never a negative other
    assert _flags(CpuUsage(0.5, 0.6, 0.1, wall_s=2.0, host_s=1.1))["cpu_other_s"] == 0.0
    assert "host_busy" not in _flags(CpuUsage(0.5, 0.6, 0.1, wall_s=2.0))  # not measured


def _samples(busy_h3: list[float]) -> pd.DataFrame:
    rows = []
    for cell in ("c000", "c001"):
        for rep in range(3):
            for proto in ("h2", "h3"):
                key = {"cell": cell, "repetition": rep, "protocol": proto, "workload": "bulk"}
                flag = busy_h3[rep] if (proto == "h3" and cell == "c001") else 0.0
                rows.append(key | {"metric": "goodput_mbit", "value": 5.0, "unit": "Mbit/s"})
                rows.append(key | {"metric": "host_busy", "value": flag, "unit": "bool"})
    return samples_frame(rows)


def test_host_busy_is_a_flag_in_summary_check_and_terminal_table() -> None:
    samples = _samples([0.0, 1.0, 0.0])
    summary = summarise(samples).set_index(["cell", "protocol"])
    assert summary.loc[("c001", "h3"), "host_busy"] == True  # noqa: E712 — any repetition
    assert summary.loc[("c000", "h3"), "host_busy"] == False  # noqa: E712
    threshold = Threshold(
        name="goodput", workload="bulk", metric="goodput_mbit", protocol="h3", min=1.0
    )
    result = evaluate(samples, LoadedThreshold(threshold, "t.yaml", 1))
    assert result.status == "pass"
    assert "host_busy in c001" in result.message and "c000" not in result.message.split("in ")[1]
    console = Console(width=200, record=True)
    console.print(summary_table(summarise(samples)))
    assert "host-busy" in console.export_text()
    clean = _samples([0.0, 0.0, 0.0])
    assert "host_busy" not in evaluate(clean, LoadedThreshold(threshold, "t.yaml", 1)).message


SCENARIO = """
name: host-busy
seed: 5
repeat: 1
link: {delay_ms: 5, rate_mbit: 20}
protocols: [h2, h3]
workloads:
  - {kind: bulk, bytes: 2000000}
"""


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_two_busy_loops_beside_a_run_are_the_others_and_set_host_busy(tmp_path: Path) -> None:
    """The loops' own CPU rate over the run (whatever else the host is doing) shows up in
    cpu_other_s of each workload, and the workloads are flagged."""
    skip_without_netns()
    scenario = write_scenario(tmp_path, "host-busy", SCENARIO)
    loop = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(2)]
    try:
        t0, cpu0 = time.monotonic(), sum(proc_cpu_s(h.pid) for h in hogs)
        s = run_scenario(scenario, tmp_path / "results").results.samples
        hog_cores = (sum(proc_cpu_s(h.pid) for h in hogs) - cpu0) / (time.monotonic() - t0)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    by = s.pivot_table(index="protocol", columns="metric", values="value")
    assert list(by.index) == ["h2", "h3"]  # one bulk workload per protocol
    cores = os.cpu_count() or 1
    assert (by["cpu_host_s"] <= cores * by["workload_wall_s"] * 1.05).all()  # s, not ticks
    other_cores = by["cpu_other_s"] / by["workload_wall_s"]
    # the loops get less CPU while the lab works than in its set-up: half their mean rate at least
    assert (other_cores >= 0.5 * hog_cores).all(), (hog_cores, other_cores)
    assert (by["host_busy"] == 1.0).all() and hog_cores > 0.5
