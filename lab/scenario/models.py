"""The scenario and its cells (pure data): what one scenario file says, resolved per matrix cell."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lab.link.spec import DirectionSpec, LinkSpec, StrictModel
from lab.scenario.limits import (
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    MAX_REPEAT,
    MAX_SEED,
    MAX_STREAMS,
    MAX_WORKLOADS,
)
from lab.scenario.workloads import Workload

Protocol = Literal["h2", "h3"]

# The server implementations `lab.peers.registry` knows, as data: the scenario layer may not
# import peers (it is above), and a test keeps the two equal.
ServerName = Literal["reference", "caddy", "go"]
KNOWN_SERVERS: tuple[str, ...] = typing.get_args(ServerName)
# The clients: the lab's own (`python -m lab.run.agent`: h2 + aioquic/qh3) or the Go agent
# (`lab-go-agent`: x/net/http2 + quic-go, as client-go would use them).
ClientName = Literal["lab", "go"]
KNOWN_CLIENTS: tuple[str, ...] = typing.get_args(ClientName)
# Which of the topology's addresses the clients connect to (every server listens on both).
AddressFamily = Literal["ipv4", "ipv6"]

_TCP_CA_NAME_MAX = 15  # Linux's TCP_CA_NAME_MAX (16) less the terminating NUL
_C_INT_MAX = 2**31 - 1  # setsockopt() takes a C int


# --- stack settings -----------------------------------------------------------------------
class StackSpec(StrictModel):
    """Settings of the reference server and of the lab's clients (both ends alike).

    The defaults are today's behaviour. `lab run --quic-engine` overrides `quic_engine`.
    `tcp_congestion` holds for every implementation: the runner also sets it on the routes of
    the server and client namespaces (`congctl`), so Caddy's and Go's TCP use it too. External
    servers keep their own defaults otherwise (quic-go's QUIC controller is fixed).
    """

    tcp_congestion: Annotated[  # TCP_CONGESTION
        str, Field(pattern=r"^[a-z0-9_]+$", max_length=_TCP_CA_NAME_MAX)
    ] = "cubic"
    quic_congestion_control: Literal["reno", "cubic"] = "cubic"
    # TCP_NOTSENT_LOWAT of h2 sockets; None = the kernel's default (unbounded, as Go's net/http2)
    tcp_notsent_lowat_bytes: Annotated[int, Field(ge=0, le=_C_INT_MAX)] | None = None
    # h2 SETTINGS and QUIC max streams
    max_concurrent_streams: Annotated[int, Field(gt=0, le=MAX_STREAMS)] = 100
    quic_engine: Literal["aioquic", "qh3"] = "aioquic"


# --- the scenario -------------------------------------------------------------------------
class Scenario(StrictModel):
    """A scenario file: the link, the server, the workloads and the matrix of cells."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_CHARS)]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    # every random draw of the run derives from it
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    repeat: Annotated[int, Field(gt=0, le=MAX_REPEAT)] = 3  # repetitions of every cell
    link: DirectionSpec | None = None  # both directions alike; or uplink/downlink
    uplink: DirectionSpec | None = None  # client → server
    downlink: DirectionSpec | None = None  # server → client
    protocols: Annotated[list[Protocol], Field(min_length=1)] = ["h2", "h3"]
    server: ServerName = "reference"
    client: ClientName = "lab"
    address_family: AddressFamily = "ipv4"
    workloads: Annotated[list[Workload], Field(min_length=1, max_length=MAX_WORKLOADS)]
    stack: StackSpec = StackSpec()  # stack settings (congestion control, TCP_NOTSENT_LOWAT, …)
    # axis (dotted field path) → values; cells are the cartesian product, first axis slowest
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}

    @model_validator(mode="after")
    def _one_link_form(self) -> Scenario:
        if self.link is not None and (self.uplink is not None or self.downlink is not None):
            raise ValueError("give either link (both directions) or uplink/downlink, not both")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError("protocols must not repeat")
        return self

    @property
    def link_spec(self) -> LinkSpec:
        """The resolved link: `link` for both directions, or uplink/downlink (missing = none)."""
        if self.link is not None:
            return LinkSpec(uplink=self.link, downlink=self.link)
        return LinkSpec(
            uplink=self.uplink or DirectionSpec(), downlink=self.downlink or DirectionSpec()
        )


class Cell(BaseModel):
    """One point of the matrix: its axis values and the scenario they resolve to."""

    model_config = ConfigDict(frozen=True)

    id: str  # "c000", "c001", … in expansion order; stable for a given scenario file
    index: int
    axes: dict[str, Any]  # axis → value, e.g. {"link.loss.rate": 0.01}
    scenario: Scenario  # the scenario with this cell's values applied (and no matrix)

    @property
    def link(self) -> LinkSpec:
        """The cell's resolved link, both directions."""
        return self.scenario.link_spec

    @property
    def workloads(self) -> list[Workload]:
        """The cell's workloads with the axis values applied."""
        return self.scenario.workloads

    def seed(self, repetition: int) -> int:
        """A 64-bit seed for this cell and repetition, derived from the scenario's seed."""
        import numpy as np  # deferred: numpy adds ~150 ms to the start-up of `lab validate`

        ss = np.random.SeedSequence([self.scenario.seed, self.index, repetition])
        return int(ss.generate_state(1, np.uint64)[0])
