"""Workload parameter models (pure data); the workload modules in lab/workloads/ import these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from lab.link.spec import StrictModel

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]

HandshakeMode = Literal["cold", "resumed", "zero_rtt"]


class WatchParams(StrictModel):
    """N watch streams on one connection; the server sends an event on each every interval."""

    kind: Literal["watch"]
    streams: PositiveInt = 16
    interval_ms: PositiveFloat = 20.0
    duration_s: PositiveFloat = 10.0
    stall_threshold_rtt: PositiveFloat = 0.5  # stalled when excess > this × base RTT
    # Start stream i at i × interval / N so that events of different streams never share a
    # packet: one lost packet then carries one stream's event, whatever the stack's packing.
    stagger: bool = True


class HandshakeParams(StrictModel):
    """New connections per mode, each fetching one small response; measures TTFB."""

    kind: Literal["handshake"]
    modes: Annotated[list[HandshakeMode], Field(min_length=1)] = ["cold", "resumed", "zero_rtt"]
    connections: PositiveInt = 20
    response_bytes: NonNegativeInt = 100

    @model_validator(mode="after")
    def _unique_modes(self) -> HandshakeParams:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes must not repeat")
        return self


class BulkParams(StrictModel):
    """One large download."""

    kind: Literal["bulk"]
    bytes: PositiveInt = 10_000_000


class MultiplexParams(StrictModel):
    """`objects` responses of `object_bytes` each, requested in parallel on one connection."""

    kind: Literal["multiplex"]
    objects: PositiveInt = 50
    object_bytes: NonNegativeInt = 20_000


class RpcUnderLoadParams(StrictModel):
    """A small GET every `interval_ms` beside a bulk download on the same connection."""

    kind: Literal["rpc_under_load"]
    interval_ms: PositiveFloat = 20.0
    rpc_bytes: NonNegativeInt = 1_000
    bulk_bytes: PositiveInt = 5_000_000


class K8sMixParams(StrictModel):
    """An apiserver-like mix on one connection: small GETs, paginated LISTs and watches."""

    kind: Literal["k8s_mix"]
    gets: NonNegativeInt = 200  # GETs of one object each
    get_bytes: NonNegativeInt = 2_000  # size of one object
    list_pages: NonNegativeInt = 5  # LIST requests, one page each (continue token)
    list_limit: PositiveInt = 100  # objects per LIST page
    watches: NonNegativeInt = 10  # concurrent watch streams
    watch_interval_ms: PositiveFloat = 100.0  # events per watch stream
    duration_s: PositiveFloat = 10.0
    max_concurrent_streams: PositiveInt = 100  # the apiserver's default stream cap


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
