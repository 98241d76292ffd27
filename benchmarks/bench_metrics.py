"""Timing of lab.workloads.metrics (watch_metrics, the loss-anchored hol_losses, and the schema-1
overlap_spread kept for comparison) and lab.evidence.stats.median_ci on run-sized inputs.

Run: `python benchmarks/bench_metrics.py` — prints a table (best of 5, wall ms).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from lab.evidence import stats
from lab.workloads import metrics


def watch_events(n_streams: int, per_stream: int, loss: float, seed: int = 0) -> pd.DataFrame:
    """Synthetic watch events every 20 ms per stream, 25 ms latency, random 100 ms stalls."""
    rng = np.random.default_rng(seed)
    k = np.tile(np.arange(per_stream), n_streams)
    stream = np.repeat(np.arange(n_streams), per_stream)
    sent = (k * 20_000_000 + rng.integers(0, 1_000_000, k.size)).astype(np.int64)
    extra = np.where(rng.random(k.size) < loss, 100_000_000, 0)
    received = sent + 25_000_000 + rng.integers(0, 500_000, k.size) + extra
    return pd.DataFrame({"stream": stream, "seq": k, "sent_ns": sent, "received_ns": received})


def drop_times(events: pd.DataFrame, every_ms: float = 500.0) -> np.ndarray:
    """One drop every `every_ms` over the events' span (ns), as from an isolated-loss link."""
    start, end = int(events["sent_ns"].min()), int(events["received_ns"].max())
    return np.arange(start + 10_000_000, end, int(every_ms * 1e6), dtype=np.int64)


def best_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main() -> None:
    print(f"{'case':<44} {'events':>8} {'best ms':>9}")
    for n, per, loss in ((16, 500, 0.01), (64, 500, 0.01), (64, 500, 0.2), (100, 1000, 0.05)):
        ev = watch_events(n, per, loss)
        ms = best_ms(lambda ev=ev, n=n: metrics.watch_metrics(ev, n, base_rtt_ms=50.0))
        print(f"{f'watch_metrics N={n} loss={loss}':<44} {len(ev):>8} {ms:>9.1f}")
        _, per_event = metrics.watch_metrics(ev, n, base_rtt_ms=50.0)
        drops = drop_times(ev, every_ms=100.0)
        ms = best_ms(
            lambda pe=per_event, d=drops: metrics.hol_losses(
                pe, d, base_rtt_ms=50.0, threshold_ms=25.0
            )
        )
        print(f"{f'hol_losses N={n} {len(drops)} drops':<44} {len(ev):>8} {ms:>9.1f}")
        ms = best_ms(lambda pe=per_event, n=n: metrics.overlap_spread(pe, n))
        print(f"{f'overlap_spread (schema 1) N={n} loss={loss}':<44} {len(ev):>8} {ms:>9.1f}")
    x = np.random.default_rng(0).exponential(10.0, 32_000)
    ms = best_ms(lambda: stats.median_ci(x, np.random.default_rng(1), n_boot=2000), repeat=2)
    print(f"{'median_ci n_boot=2000':<44} {x.size:>8} {ms:>9.1f}")
    y = np.random.default_rng(0).exponential(10.0, 200)
    ms = best_ms(lambda: stats.ratio_of_medians_ci(y, y * 1.1, np.random.default_rng(1)))
    print(f"{'ratio_of_medians_ci n_boot=2000':<44} {y.size:>8} {ms:>9.1f}")


if __name__ == "__main__":
    main()
