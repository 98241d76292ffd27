"""Workload parameter models (pure data); the workload modules in lab/workloads/ import these.

Every number is finite and bounded (`lab.scenario.limits` says why for each bound).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from lab.link.spec import StrictModel
from lab.scenario.limits import (
    MAX_BYTES,
    MAX_CONNECTIONS,
    MAX_DURATION_S,
    MAX_INTERVAL_MS,
    MAX_LIST_OBJECTS,
    MAX_REQUESTS,
    MAX_STREAMS,
    MAX_THRESHOLD_RTT,
    MIN_INTERVAL_MS,
)

StreamCount = Annotated[int, Field(gt=0, le=MAX_STREAMS)]  # concurrent streams, ≥ 1
OptionalStreamCount = Annotated[int, Field(ge=0, le=MAX_STREAMS)]  # concurrent streams, ≥ 0
ConnectionCount = Annotated[int, Field(gt=0, le=MAX_CONNECTIONS)]
RequestCount = Annotated[int, Field(ge=0, le=MAX_REQUESTS)]
ByteCount = Annotated[int, Field(ge=0, le=MAX_BYTES)]  # bytes of one response
PositiveByteCount = Annotated[int, Field(gt=0, le=MAX_BYTES)]
DurationS = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]  # seconds
IntervalMs = Annotated[float, Field(ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS)]  # milliseconds

HandshakeMode = Literal["cold", "resumed", "zero_rtt"]


class WatchParams(StrictModel):
    """N watch streams on one connection; the server sends an event on each every interval."""

    kind: Literal["watch"]
    streams: StreamCount = 16
    interval_ms: IntervalMs = 20.0
    duration_s: DurationS = 10.0
    # stalled when excess > this × base RTT
    stall_threshold_rtt: Annotated[float, Field(gt=0, le=MAX_THRESHOLD_RTT)] = 0.5
    # Start stream i at i × interval / N so that events of different streams never share a
    # packet: one lost packet then carries one stream's event, whatever the stack's packing.
    stagger: bool = True


class HandshakeParams(StrictModel):
    """New connections per mode, each fetching one small response; measures TTFB."""

    kind: Literal["handshake"]
    modes: Annotated[list[HandshakeMode], Field(min_length=1)] = ["cold", "resumed", "zero_rtt"]
    connections: ConnectionCount = 20
    response_bytes: ByteCount = 100

    @model_validator(mode="after")
    def _unique_modes(self) -> HandshakeParams:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes must not repeat")
        return self


class BulkParams(StrictModel):
    """One large download."""

    kind: Literal["bulk"]
    bytes: PositiveByteCount = 10_000_000


class MultiplexParams(StrictModel):
    """`objects` responses of `object_bytes` each, requested in parallel on one connection."""

    kind: Literal["multiplex"]
    objects: StreamCount = 50
    object_bytes: ByteCount = 20_000


class RpcUnderLoadParams(StrictModel):
    """A small GET every `interval_ms` beside a bulk download on the same connection."""

    kind: Literal["rpc_under_load"]
    interval_ms: IntervalMs = 20.0
    rpc_bytes: ByteCount = 1_000
    bulk_bytes: PositiveByteCount = 5_000_000


class K8sMixParams(StrictModel):
    """An apiserver-like mix on one connection: small GETs, paginated LISTs and watches."""

    kind: Literal["k8s_mix"]
    gets: RequestCount = 200  # GETs of one object each
    get_bytes: ByteCount = 2_000  # size of one object
    list_pages: RequestCount = 5  # LIST requests, one page each (continue token)
    list_limit: Annotated[int, Field(gt=0, le=MAX_LIST_OBJECTS)] = 100  # objects per LIST page
    watches: OptionalStreamCount = 10  # concurrent watch streams
    watch_interval_ms: IntervalMs = 100.0  # events per watch stream
    duration_s: DurationS = 10.0
    max_concurrent_streams: StreamCount = 100  # the apiserver's default stream cap


Workload = Annotated[
    WatchParams
    | HandshakeParams
    | BulkParams
    | MultiplexParams
    | RpcUnderLoadParams
    | K8sMixParams,
    Field(discriminator="kind"),
]

WORKLOAD_KINDS: dict[str, type[BaseModel]] = {
    "watch": WatchParams,
    "handshake": HandshakeParams,
    "bulk": BulkParams,
    "multiplex": MultiplexParams,
    "rpc_under_load": RpcUnderLoadParams,
    "k8s_mix": K8sMixParams,
}
