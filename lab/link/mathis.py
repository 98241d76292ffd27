"""The Mathis et al. (1997) bound on loss-limited TCP throughput: C · MSS / (RTT · √p)."""

from __future__ import annotations

import math

RENO_C = math.sqrt(1.5)  # √(3/2): Reno with periodic loss and an ACK per segment


def mathis_mbit(mss_bytes: int, rtt_ms: float, loss: float, c: float = RENO_C) -> float | None:
    """C · MSS / (RTT · √loss) in Mbit/s (MSS in bytes, RTT in ms, loss a probability);
    None without loss or without RTT (no bound)."""
    if loss <= 0 or rtt_ms <= 0:
        return None
    return c * mss_bytes * 8 / (rtt_ms / 1e3 * math.pow(loss, 0.5)) / 1e6
