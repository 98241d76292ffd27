"""Topology set-up + teardown time (must reach ≤ 1 s). Run as root:

python benchmarks/bench_topology.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lab.net.topology import Topology


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    rows = []
    for steering in (True, False):
        ups, downs = [], []
        for _ in range(args.repeat):
            topo = Topology(tun_steering=steering)
            t0 = time.perf_counter()
            topo.up()
            t1 = time.perf_counter()
            topo.down()
            t2 = time.perf_counter()
            ups.append(t1 - t0)
            downs.append(t2 - t1)
        totals = [u + d for u, d in zip(ups, downs, strict=True)]
        rows.append((steering, ups, downs, totals))
    print(
        f"{'tun steering':>12} {'up p50 ms':>10} {'down p50 ms':>12} {'total p50 ms':>13}"
        f" {'total max ms':>13} {'≤ 1 s':>6}"
    )
    for steering, ups, downs, totals in rows:
        print(
            f"{steering!s:>12} {statistics.median(ups) * 1e3:10.1f} "
            f"{statistics.median(downs) * 1e3:12.1f} {statistics.median(totals) * 1e3:13.1f} "
            f"{max(totals) * 1e3:13.1f} {'yes' if max(totals) <= 1 else 'NO':>6}"
        )


if __name__ == "__main__":
    main()
