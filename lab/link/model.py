"""Sans-I/O, seeded link model: one packet and its arrival time in, a decision out.

One `DirectionModel` per direction. For each offered packet, in this order:

1. loss: the drop list (by 0-based index of offered packets), Bernoulli, Gilbert-Elliott
   (netem's p, r, h, k; the loss of a packet uses the state it arrives in, then the state moves),
   or isolated (one data packet — longer than PURE_ACK_MAX_BYTES — at seeded times about
   `every_ms` apart);
2. drop-tail queue: the packet is dropped when the rate limiter's backlog (packets whose
   serialisation has not finished at `now`) would exceed the packet or byte limit;
3. serialisation at `rate_mbit`: it starts when the link is free and takes size·8/rate;
4. propagation: `delay_ms` plus a jitter sample (uniform/normal/pareto, `jitter_ms` as the spread),
   never negative; with `reorder: preserve` a release is never earlier than the previous one;
   with an explicit `reorder` mapping the chosen packet skips the delay (netem's meaning);
5. duplicate: with probability `duplicate` a second copy follows the first through steps 3-4.

Times are integer nanoseconds on the caller's clock (CLOCK_MONOTONIC). No clock reads, no I/O,
no global random state: every random draw comes from generators seeded from `seed`, one stream per
purpose, so turning on jitter does not change which packets are lost.

`restart()` starts the random decisions over from the seed (packet index 0, the generators, the
Gilbert-Elliott state, the isolated-loss positions) while packets already queued keep their
times: the runner restarts both directions before each protocol's phase of a cell, so HTTP/2 and
HTTP/3 meet the same drop decisions by packet index (common random numbers).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lab.link.spec import (
    DIRECTIONS,
    PURE_ACK_MAX_BYTES,
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    IsolatedLoss,
    LinkSpec,
    ReorderSpec,
)

DropReason = Literal["random", "burst", "queue", "drop_list", "isolated"]
"""Why a packet was dropped: "burst" = lost in the Gilbert-Elliott bad state; "random" = Bernoulli
or Gilbert-Elliott good-state loss; "queue" = drop-tail overflow; "drop_list" = listed index;
"isolated" = the isolated-loss model's data packet."""

_BLOCK = 4096  # random draws fetched from numpy at a time
_PARETO_ALPHA = 3.0  # shape of netem's pareto table
_PARETO_CAP = 32767 / 8192  # netem's table saturates at int16 max / NETEM_DIST_SCALE


@dataclass(frozen=True, slots=True)
class Deliver:
    """The packet leaves the link; one absolute release time (ns) per copy (2 when duplicated)."""

    release_ns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """The packet is dropped, and why."""

    reason: DropReason


class _Uniforms:
    """Buffered U[0, 1) draws from one seeded generator (numpy per-call overhead is ~µs)."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._rng.random(_BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


class _Delays:
    """Buffered one-way delay samples (ns, never negative): delay + jitter · standardised draw."""

    __slots__ = ("_buf", "_delay_ns", "_dist", "_i", "_jitter_ns", "_rng")

    def __init__(self, rng: np.random.Generator, spec: DirectionSpec) -> None:
        self._rng = rng
        self._delay_ns = spec.delay_ms * 1e6
        self._jitter_ns = spec.jitter_ms * 1e6
        self._dist = spec.jitter_distribution
        self._buf: list[int] = []
        self._i = 0

    def _draw(self) -> np.ndarray:
        n = _BLOCK
        if self._dist == "uniform":
            z = self._rng.uniform(-1.0, 1.0, n)  # netem's default: delay ± jitter, flat
        elif self._dist == "normal":
            z = self._rng.standard_normal(n)  # σ = jitter
        else:
            # netem's pareto table: Pareto(α=3, x_m=1) minus its mean 1.5, times 4/3, capped
            # at +4 (the table's int16 range); σ ≈ 1.15 × jitter, long right tail.
            x = (1.0 - self._rng.random(n)) ** (-1.0 / _PARETO_ALPHA)
            z = np.minimum((x - 1.5) * (4.0 / 3.0), _PARETO_CAP)
        d = np.rint(np.maximum(self._delay_ns + self._jitter_ns * z, 0.0))
        return d.astype(np.int64)

    def next(self) -> int:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._draw().tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


class DirectionModel:
    """The impairment of one direction; feed it packets in arrival order with `offer`."""

    def __init__(
        self,
        spec: DirectionSpec,
        *,
        queue_packets: int | None,
        queue_bytes: int | None,
        seed: int,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.queue_packets = queue_packets
        self.queue_bytes = queue_bytes

        loss = spec.loss
        self._drop_set: frozenset[int] = frozenset()
        self._bernoulli = 0.0
        self._ge: GilbertElliottLoss | None = None
        self._isolated: IsolatedLoss | None = None
        if isinstance(loss, DropListLoss):
            self._drop_set = frozenset(loss.packets)
        elif isinstance(loss, BernoulliLoss):
            self._bernoulli = loss.rate
        elif isinstance(loss, GilbertElliottLoss):
            self._ge = loss
        elif isinstance(loss, IsolatedLoss):
            self._isolated = loss
        self.restart()

        # Serialisation: ns per byte, or None for an unlimited link.
        self._ns_per_byte = None if spec.rate_mbit is None else 8000.0 / spec.rate_mbit
        self._link_free_ns = 0
        self._backlog: deque[tuple[int, int]] = deque()  # (serialisation end ns, size)
        self._backlog_bytes = 0

        self._has_delay = spec.delay_ms > 0 or spec.jitter_ms > 0
        self._const_delay_ns = round(spec.delay_ms * 1e6) if spec.jitter_ms == 0 else None
        self._preserve = spec.reorder == "preserve"
        self._reorder: ReorderSpec | None = (
            spec.reorder if isinstance(spec.reorder, ReorderSpec) else None
        )
        self._last_release_ns = 0
        self._duplicate = spec.duplicate

    def restart(self) -> None:
        """Start the random decisions over from the seed: packet index 0, fresh generators,
        Gilbert-Elliott in the good state, the isolated-loss schedule anchored anew on the next
        data packet, the reorder counter at 0. The serialiser, the queue and the last release
        time carry on, so packets already queued are neither lost nor sped up."""
        self.index = 0  # packets offered since the start or the last restart
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(4)]
        self._loss_u = _Uniforms(streams[0])
        self._delays = _Delays(streams[1], self.spec)
        self._dup_u = _Uniforms(streams[2])
        self._reorder_u = _Uniforms(streams[3])
        self._ge_bad = False
        self._iso_next_ns: int | None = None  # when the next isolated drop is due
        self._reorder_counter = 0
        self._reorder_last = 0.0  # netem's correlated-random state

    # -- steps ----------------------------------------------------------------------------
    def _isolated_gap_ns(self, iso: IsolatedLoss) -> int:
        """Time (ns) from a data packet (the anchor, or the last drop) to the next drop."""
        u = self._loss_u.next()
        return round(iso.every_ms * 1e6 * (1.0 + iso.position_jitter * (u - 0.5)))

    def _isolated_lost(self, iso: IsolatedLoss, size: int, now: int) -> bool:
        """Whether the isolated-loss model drops this packet; moves its schedule."""
        if size <= PURE_ACK_MAX_BYTES:
            return False
        due = self._iso_next_ns
        if due is None:  # the first data packet anchors the schedule
            self._iso_next_ns = now + self._isolated_gap_ns(iso)
            return False
        if now < due:
            return False
        self._iso_next_ns = now + self._isolated_gap_ns(iso)
        return True

    def _lost(self, idx: int, size: int, now: int) -> DropReason | None:
        if self._drop_set and idx in self._drop_set:
            return "drop_list"
        iso = self._isolated
        if iso is not None and self._isolated_lost(iso, size, now):
            return "isolated"
        if self._bernoulli and self._loss_u.next() < self._bernoulli:
            return "random"
        ge = self._ge
        if ge is not None:
            bad = self._ge_bad
            # Move the state for the next packet, then decide with the state this one met.
            if bad:
                if self._loss_u.next() < ge.r:
                    self._ge_bad = False
                if self._loss_u.next() >= ge.h:
                    return "burst"
            else:
                if self._loss_u.next() < ge.p:
                    self._ge_bad = True
                if self._loss_u.next() >= ge.k:
                    return "random"
        return None

    def _serialise(self, size: int, now: int) -> int:
        """Serialisation end time (ns) of a packet of `size` bytes that arrives at `now`."""
        npb = self._ns_per_byte
        if npb is None:
            return now
        start = self._link_free_ns if self._link_free_ns > now else now
        end = start + math.ceil(size * npb)
        self._link_free_ns = end
        self._backlog.append((end, size))
        self._backlog_bytes += size
        return end

    def _propagate(self, sent: int) -> int:
        """Release time (ns) of a packet whose serialisation ends at `sent`."""
        ro = self._reorder
        if ro is not None:
            # netem: after gap-1 normally delayed packets, the next one is sent without delay
            # with probability `probability` (correlated like netem's get_crandom).
            if self._reorder_counter >= ro.gap - 1:
                u = self._reorder_u.next()
                if ro.correlation:
                    u = u * (1.0 - ro.correlation) + self._reorder_last * ro.correlation
                    self._reorder_last = u
                if u < ro.probability:
                    self._reorder_counter = 0
                    return sent
            self._reorder_counter += 1
        if not self._has_delay:
            release = sent
        elif self._const_delay_ns is not None:
            release = sent + self._const_delay_ns
        else:
            release = sent + self._delays.next()
        if self._preserve:
            if release < self._last_release_ns:
                release = self._last_release_ns
            self._last_release_ns = release
        return release

    # -- the decision ---------------------------------------------------------------------
    def offer(self, size_bytes: int, now_ns: int) -> Deliver | Drop:
        """Decide the fate of a packet of `size_bytes` arriving at `now_ns` (non-decreasing)."""
        idx = self.index
        self.index = idx + 1
        reason = self._lost(idx, size_bytes, now_ns)
        if reason is not None:
            return Drop(reason)
        if self._ns_per_byte is not None:
            backlog = self._backlog
            while backlog and backlog[0][0] <= now_ns:
                self._backlog_bytes -= backlog.popleft()[1]
            qp = self.queue_packets
            if qp is not None and len(backlog) >= qp:
                return Drop("queue")
            qb = self.queue_bytes
            if qb is not None and self._backlog_bytes + size_bytes > qb:
                return Drop("queue")
        first = self._propagate(self._serialise(size_bytes, now_ns))
        if self._duplicate and self._dup_u.next() < self._duplicate:
            return Deliver((first, self._propagate(self._serialise(size_bytes, now_ns))))
        return Deliver((first,))


def direction_seeds(seed: int) -> dict[str, int]:
    """Independent 64-bit sub-seeds for the two directions, derived from the run's `seed`."""
    children = np.random.SeedSequence(seed).spawn(len(DIRECTIONS))
    return {
        d: int(c.generate_state(1, np.uint64)[0]) for d, c in zip(DIRECTIONS, children, strict=True)
    }


def build_models(link: LinkSpec, seed: int) -> dict[str, DirectionModel]:
    """One model per direction ("uplink", "downlink") with independent sub-seeds of `seed`."""
    seeds = direction_seeds(seed)
    models: dict[str, DirectionModel] = {}
    for d in DIRECTIONS:
        qp, qb = link.queue_limit(d)
        models[d] = DirectionModel(
            getattr(link, d), queue_packets=qp, queue_bytes=qb, seed=seeds[d]
        )
    return models
