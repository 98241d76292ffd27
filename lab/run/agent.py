"""The client side of one cell: a process the runner starts in the client namespace.

    ip netns exec <client-ns> python -m lab.run.agent --config agent.json

It runs the cell's workloads one after another over one protocol and writes one JSON file
(`AgentConfig.out`) with, per workload, its sample rows (see lab.workloads.base), its wall time,
an error text if it failed, and the CPU seconds (user+sys) the server, this process and the
emulator used while it ran (/proc/<pid>/stat for the other two), so the client's CPU is this
process's own rusage, and the busy CPU seconds of the whole host (/proc/stat). A failed
workload does not stop the next one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import trio

from lab.results.atomic import write_json
from lab.run.stack import AgentConfig, client_settings
from lab.workloads import estimate_s, module
from lab.workloads.base import WorkloadContext

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | None) -> float | None:
    """user+sys CPU seconds of process `pid` so far (from /proc/<pid>/stat); None if gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def host_cpu_s(stat_text: str | None = None) -> float:
    """Busy CPU seconds of the whole host so far, all cores: user, nice, system and steal of
    /proc/stat's `cpu` line (idle and iowait are not busy; irq and softirq are left out, as
    they are mostly the kernel forwarding the lab's own packets, which no process is charged
    for). `stat_text`: the file's text (read when None)."""
    if stat_text is None:
        with open("/proc/stat") as f:
            stat_text = f.read()
    fields = stat_text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the `cpu` line")
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + steal) / _CLK_TCK


def self_cpu_s() -> float:
    """user+sys CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_now(cfg: AgentConfig) -> tuple[float | None, float, float | None, float]:
    """CPU seconds so far of (server, this client, emulator, the whole host)."""
    return (
        proc_cpu_s(cfg.server_pid),
        self_cpu_s(),
        proc_cpu_s(cfg.emulator_pid),
        host_cpu_s(),
    )


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else max(0.0, after - before)


def context(cfg: AgentConfig) -> WorkloadContext:
    """The WorkloadContext of this agent's protocol."""
    h2, quic = client_settings(cfg.stack)
    return WorkloadContext(
        protocol=cfg.protocol,  # type: ignore[arg-type]
        host=cfg.host,
        port=cfg.port,
        base_rtt_ms=cfg.base_rtt_ms,
        rate_mbit=cfg.rate_mbit,
        server_name=cfg.server_name,
        ca_file=Path(cfg.ca_file) if cfg.ca_file else None,
        early_data_header=cfg.early_data_header,
        h2=h2,
        quic=quic,
    )


async def run_workloads(cfg: AgentConfig) -> list[dict[str, Any]]:
    """Run every workload of `cfg` in order; one result dict per workload."""
    ctx = context(cfg)
    results = []
    for index, params in enumerate(cfg.workloads):
        rate = cfg.expected_rate_mbit or cfg.rate_mbit
        timeout = cfg.timeout_factor * estimate_s(params, cfg.base_rtt_ms, rate) + 20
        cpu0 = _cpu_now(cfg)
        t0 = time.monotonic()
        rows: list[dict[str, Any]] = []
        error = None
        try:
            with trio.fail_after(timeout):
                rows = await module(params.kind).run(params, ctx)
        except trio.TooSlowError:
            error = f"timed out after {timeout:.0f} s"
        except Exception as e:  # recorded, and the next workload runs
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        wall = time.monotonic() - t0
        cpu1 = _cpu_now(cfg)
        results.append(
            {
                "index": index,
                "kind": params.kind,
                "rows": rows if error is None else [],
                "error": error,
                "wall_s": wall,
                "cpu": {
                    "server_s": _delta(cpu1[0], cpu0[0]),
                    "client_s": _delta(cpu1[1], cpu0[1]),
                    "emulator_s": _delta(cpu1[2], cpu0[2]),
                    "host_s": _delta(cpu1[3], cpu0[3]),
                },
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lab.run.agent --config FILE`."""
    p = argparse.ArgumentParser(prog="python -m lab.run.agent", description=__doc__)
    p.add_argument("--config", required=True, type=Path, help="AgentConfig JSON file")
    p.add_argument(
        "--wait-go",
        action="store_true",
        help="print 'ready' once loaded, then wait for a line on stdin before starting",
    )
    args = p.parse_args(argv)
    cfg = AgentConfig.model_validate_json(args.config.read_text())
    for kind in {w.kind for w in cfg.workloads}:
        module(kind)  # import everything before the measurement starts
    importlib.import_module("lab.http.h2_client" if cfg.protocol == "h2" else "lab.http.h3_client")
    if args.wait_go:
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 1  # the runner went away
    started = time.monotonic_ns()
    results = trio.run(run_workloads, cfg)
    out = {
        "protocol": cfg.protocol,
        "started_ns": started,
        "ended_ns": time.monotonic_ns(),
        "workloads": results,
    }
    write_json(cfg.out, out, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
