"""Wall time and overhead of `lab run`: runs a scenario (or reads finished runs) and prints a table.

    python benchmarks/bench_run.py scenarios/smoke.yaml          # run it, then report
    python benchmarks/bench_run.py --runs results/<run-id> ...   # report finished runs

Per run: wall time, time inside the workloads, overhead (set-up, agent start, collection,
teardown, writing results) and its fraction, the slowest cell repetition, the host load, and the
peak RSS of the largest process of the run's tree (runner, server, agents: an upper bound for the
runner's own memory) when this script ran it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def _row(run_dir: Path, peak_mb: float | None) -> list[str]:
    meta = json.loads((run_dir / "run.json").read_text())
    t = meta.get("timing", {})
    cells = meta.get("cell_runs", {})
    slowest = max(cells.items(), key=lambda kv: kv[1]["wall_s"], default=(None, None))
    loads = [c.get("load_avg_1min") for c in cells.values() if c.get("load_avg_1min") is not None]
    return [
        meta["run_id"],
        str(len(cells)),
        f"{t.get('wall_s', float('nan')):.1f}",
        f"{t.get('workload_s', float('nan')):.1f}",
        f"{t.get('overhead_s', float('nan')):.1f}",
        f"{100 * (t.get('overhead_fraction') or float('nan')):.1f} %",
        f"{slowest[0]} {slowest[1]['wall_s']:.1f} s" if slowest[0] else "-",
        f"{max(loads):.1f}" if loads else "-",
        f"{peak_mb:.0f}" if peak_mb is not None else "-",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", help="scenario to run")
    p.add_argument("--runs", nargs="*", type=Path, default=[], help="finished run directories")
    p.add_argument("--impair", default="emulator")
    args = p.parse_args()
    rows = [_row(r, None) for r in args.runs]
    if args.scenario:
        out = Path(tempfile.mkdtemp(prefix="bench-run-"))
        argv = [sys.executable, "-m", "lab", "run", args.scenario, "--out", str(out), "--yes"]
        subprocess.run([*argv, "--impair", args.impair], check=True, stdin=subprocess.DEVNULL)
        # ru_maxrss of waited-for descendants: the largest of runner, servers, agents
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows += [_row(d, peak) for d in sorted(out.iterdir())]
    head = [
        "run",
        "cell reps",
        "wall s",
        "workload s",
        "overhead s",
        "overhead",
        "slowest",
        "max load",
        "peak MB",
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
