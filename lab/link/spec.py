"""The link between client and server: loss, delay, jitter, reordering, rate and queue of each
direction. Pure data (pydantic models, units in field names); the scenario file embeds these,
the link model (`model.py`), the emulator and the netem backend consume them.

uplink = client → server, downlink = server → client.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Bounds of the link's numbers (docs/link.md, "Bounds"): beyond them a value is a typo, and the
# emulator's timers and queues, or netem's 32-bit fields, would not hold it.
MAX_DELAY_MS = 10_000.0  # one way (and jitter): a geostationary satellite hop is ~270 ms
MIN_RATE_MBIT = 0.01  # 10 kbit/s: one 1500-byte packet every 1.2 s
MAX_RATE_MBIT = 10_000.0  # 10 Gbit/s: beyond a veth pair, far beyond the userspace emulator
MAX_QUEUE_PACKETS = 100_000  # netem's default is 1,000; 100,000 full-size packets are 150 MB
MAX_QUEUE_BYTES = 150_000_000  # the same 150 MB of buffered packets
MAX_QUEUE_BDP = 100.0  # in bandwidth-delay products; a few are already bufferbloat
MAX_REORDER_GAP = 10_000  # packets
MAX_PACKET_INDEX = 10**9  # a drop-list index: 10⁹ packets are over 1 TB, more than a cell sends
MAX_DROP_LIST_PACKETS = 100_000  # entries in one drop list
DelayMs = Annotated[float, Field(ge=0, le=MAX_DELAY_MS)]

Direction = Literal["uplink", "downlink"]
"""uplink = client → server, downlink = server → client."""
DIRECTIONS: tuple[Direction, Direction] = ("uplink", "downlink")


class StrictModel(BaseModel):
    """Unknown fields are errors; numbers are finite (no inf, no nan); instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- loss models --------------------------------------------------------------------------
class NoLoss(StrictModel):
    """No random loss."""

    model: Literal["none"] = "none"


class BernoulliLoss(StrictModel):
    """Independent loss: each packet is dropped with probability `rate`."""

    model: Literal["bernoulli"]
    rate: Probability


class GilbertElliottLoss(StrictModel):
    """Two-state burst loss with netem's `loss gemodel p r 1-h 1-k` meaning.

    p: P(good → bad) per packet; r: P(bad → good) per packet;
    h: P(packet delivered | bad state); k: P(packet delivered | good state).
    Mean loss = (1-k)·r/(p+r) + (1-h)·p/(p+r).
    """

    model: Literal["gilbert_elliott"]
    p: Probability
    r: Probability = 1.0
    h: Probability = 0.0
    k: Probability = 1.0

    @model_validator(mode="after")
    def _reachable(self) -> GilbertElliottLoss:
        if self.p + self.r == 0:
            raise ValueError("p and r cannot both be 0")
        return self

    @property
    def mean_loss(self) -> float:
        """Stationary loss probability."""
        bad = self.p / (self.p + self.r)
        return (1 - self.k) * (1 - bad) + (1 - self.h) * bad


class DropListLoss(StrictModel):
    """Drop exactly these packets, by 0-based index of the packets entering this direction."""

    model: Literal["drop_list"]
    packets: Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_PACKET_INDEX)]],
        Field(max_length=MAX_DROP_LIST_PACKETS),
    ]


# A packet of at most this many bytes (IP header included) carries no data: a pure TCP ACK is
# at most 40 (IPv6) + 60 (TCP with every option) = 100 bytes; a QUIC ACK-only packet is 28–48
# (UDP/IP) + ~10 (short header) + a few (ACK frame) + 16 (AEAD tag) ≈ 60–80. A watch event's
# packet is ~300 bytes. Used by the isolated-loss model and the HOL metrics alike.
PURE_ACK_MAX_BYTES = 100
MIN_ISOLATED_EVERY_MS = 10.0  # below, recoveries (≥ 1 RTT each) would overlap on any real path
MAX_ISOLATED_EVERY_MS = 3_600_000.0  # one drop an hour: beyond any cell's length


class IsolatedLoss(StrictModel):
    """One data packet dropped about every `every_ms`, far enough apart that the recoveries of
    two drops never overlap (the HOL probe's loss model: each loss's blast radius is exact).

    Only data packets count: longer than PURE_ACK_MAX_BYTES. The gap from the first data packet
    (after the start, or a restart of the model) to the first drop, and between consecutive
    drops, is every_ms × (1 + position_jitter × (U − ½)) with U ~ U[0, 1) from the seeded
    generator; the drop hits the first data packet arriving at or after that time. So drops
    are never closer than every_ms × (1 − position_jitter / 2). Emulator only (netem has no
    such model)."""

    model: Literal["isolated"]
    every_ms: Annotated[float, Field(ge=MIN_ISOLATED_EVERY_MS, le=MAX_ISOLATED_EVERY_MS)]
    position_jitter: Probability = 0.5  # fraction of every_ms over which a position varies


LossModel = NoLoss | BernoulliLoss | GilbertElliottLoss | DropListLoss | IsolatedLoss
LossSpec = Annotated[LossModel, Field(discriminator="model")]
# the `model:` names, e.g. ("none", "bernoulli", …), in the order of LossModel
LOSS_MODELS: tuple[str, ...] = tuple(
    get_args(cls.model_fields["model"].annotation)[0] for cls in get_args(LossModel)
)


# --- queue --------------------------------------------------------------------------------
class QueueSpec(StrictModel):
    """Drop-tail queue limit in front of the rate limiter: exactly one of the three."""

    packets: Annotated[int, Field(gt=0, le=MAX_QUEUE_PACKETS)] | None = None
    bytes: Annotated[int, Field(gt=0, le=MAX_QUEUE_BYTES)] | None = None
    # multiple of rate × base RTT
    bdp: Annotated[float, Field(gt=0, le=MAX_QUEUE_BDP)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> QueueSpec:
        given = [k for k in ("packets", "bytes", "bdp") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("queue takes exactly one of packets, bytes or bdp")
        return self


# --- reordering ---------------------------------------------------------------------------
class ReorderSpec(StrictModel):
    """netem's `reorder P [CORR] gap G`: with gap G, every G-th packet is sent without delay
    with probability `probability` (so it overtakes the delayed ones); gap 1 = any packet."""

    probability: Probability
    gap: Annotated[int, Field(ge=1, le=MAX_REORDER_GAP)] = 1
    correlation: Probability = 0.0


# --- one direction ------------------------------------------------------------------------
class DirectionSpec(StrictModel):
    """The impairment of one direction of the link."""

    delay_ms: DelayMs = 0.0  # one way
    jitter_ms: DelayMs = 0.0
    jitter_distribution: Literal["uniform", "normal", "pareto"] = "uniform"
    # "preserve": jitter never reorders (a packet never leaves before the one ahead of it);
    # "allow": jitter may reorder; a mapping: explicit netem-style reordering (implies allow).
    reorder: Literal["preserve", "allow"] | ReorderSpec = "preserve"
    loss: LossSpec = NoLoss()
    # None = unlimited
    rate_mbit: Annotated[float, Field(ge=MIN_RATE_MBIT, le=MAX_RATE_MBIT)] | None = None
    queue: QueueSpec | None = None  # None = 1000 packets (netem's default limit)
    duplicate: Probability = 0.0

    @model_validator(mode="after")
    def _bdp_needs_rate(self) -> DirectionSpec:
        if self.queue is not None and self.queue.bdp is not None and self.rate_mbit is None:
            raise ValueError("queue: {bdp: …} needs rate_mbit (the BDP is rate × base RTT)")
        return self

    @property
    def reorder_allowed(self) -> bool:
        """True when packets may leave in a different order than they arrived."""
        return self.reorder != "preserve"

    @property
    def mean_loss(self) -> float:
        """Long-run probability that the loss model drops a packet (a drop list counts as 0:
        it is not random)."""
        loss = self.loss
        if isinstance(loss, BernoulliLoss):
            return loss.rate
        if isinstance(loss, GilbertElliottLoss):
            return loss.mean_loss
        return 0.0


DEFAULT_QUEUE_PACKETS = 1000


class LinkSpec(StrictModel):
    """Both directions of the link between client and server."""

    uplink: DirectionSpec = DirectionSpec()
    downlink: DirectionSpec = DirectionSpec()

    @property
    def base_rtt_ms(self) -> float:
        """Configured two-way propagation delay: uplink delay + downlink delay."""
        return self.uplink.delay_ms + self.downlink.delay_ms

    def queue_limit(self, direction: Direction) -> tuple[int | None, int | None]:
        """(packet limit, byte limit) of that direction's queue; one of them is None."""
        spec: DirectionSpec = getattr(self, direction)
        q = spec.queue
        if q is None:
            return DEFAULT_QUEUE_PACKETS, None
        if q.packets is not None:
            return q.packets, None
        if q.bytes is not None:
            return None, q.bytes
        assert q.bdp is not None and spec.rate_mbit is not None
        bdp_bytes = spec.rate_mbit * 1e6 / 8 * self.base_rtt_ms / 1e3
        return None, max(int(q.bdp * bdp_bytes), 1500)
