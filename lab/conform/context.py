"""What a case gets: where the target is, how to make sockets on the client side, how long to
wait on this path, and (when the lab started the server) how to drain or restart it.

Cases never create sockets themselves: `CaseContext.socket()` makes them where the client is (in
the lab's client namespace for `--server`, in the caller's namespace for a URL target).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lab.conform.model import PathKind

SocketFactory = Callable[[int, int], socket.socket]  # (family, type) → a new socket

CLEAN_WAIT_S = 2.0  # h2spec's and h3spec's default per-step timeout (policy 6)
MIN_PTO_S = 0.025  # max_ack_delay: the floor of a probe timeout


@dataclass(frozen=True)
class Endpoint:
    """Where and what the target serves."""

    host: str  # an IP literal the client connects to
    port: int  # the same port on TCP (h2) and UDP (h3)
    server_name: str = "localhost"  # SNI and the host of :authority
    ca_file: Path | None = None  # None: the certificate is not verified
    h2: bool = True  # TCP + TLS with ALPN h2
    h3: bool = True  # QUIC with ALPN h3
    counter: bool = True  # serves the lab's /counter route (POST increments, GET reads)
    watch: bool = True  # serves the lab's watch route (timed events: a long response)
    sizes: frozenset[int] | None = None  # the /bytes/{n} sizes served; None: any n

    @property
    def authority(self) -> str:
        """`:authority` / Host of requests: server name and port."""
        return f"{self.server_name}:{self.port}"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def serves_bytes(self, n: int) -> bool:
        """True when GET /bytes/{n} exists on the target."""
        return self.sizes is None or n in self.sizes


@dataclass(frozen=True)
class Timing:
    """How long to wait on this path (policy 6): 2 s on a clean path; under impairment
    max(2 s, 4 × PTO + the longest outage), where PTO is estimated from the link."""

    rtt_s: float = 0.0  # configured base RTT
    jitter_s: float = 0.0  # both directions' jitter together
    outage_s: float = 0.0  # longest expected blackhole / burst of losses
    lossy: bool = False
    factor: float = 1.0  # scales the clean path's waits (tests on loopback use less)

    @property
    def impaired(self) -> bool:
        return self.lossy or self.rtt_s > 0 or self.outage_s > 0

    @property
    def pto_s(self) -> float:
        """RFC 9002 §6.2.1's PTO for this path: srtt + 4·rttvar + max_ack_delay."""
        return self.rtt_s + 4 * (self.jitter_s + self.rtt_s / 2) + MIN_PTO_S

    def wait(self, base_s: float = CLEAN_WAIT_S) -> float:
        """The time to wait for an expected reaction, in s."""
        if not self.impaired:
            return base_s * self.factor
        return max(base_s, 4 * self.pto_s + self.outage_s, 2 * base_s if self.lossy else 0.0)

    def transfer(self, nbytes: int) -> float:
        """The time a transfer of `nbytes` may take (pure-Python QUIC: ≥ 1 MB/s here), s."""
        return self.wait(10.0) + nbytes / 1e6 * (4 if self.impaired else 1)

    def stall(self) -> float:
        """How long a transfer may make no progress before it counts as stalled, s."""
        return self.wait(3.0)


class ServerControl(Protocol):
    """What the lab can do to a server it started (absent for a URL target)."""

    def drain(self) -> None:
        """Ask for a graceful shutdown (SIGTERM); returns at once."""

    def exited(self) -> int | None:
        """The exit status once the server has exited, else None."""

    def kill(self) -> None:
        """Stop it at once (SIGKILL), no graceful shutdown."""

    def restart(self) -> None:
        """Start it again (after drain or kill) and wait until it is ready (blocking)."""


@dataclass
class CaseContext:
    """Everything a case may use."""

    endpoint: Endpoint
    make_socket: SocketFactory
    path: PathKind = "clean"
    timing: Timing = field(default_factory=Timing)
    server: ServerControl | None = None
    # starts a second instance of the target that answers every Initial with Retry
    retry_server: Callable[[], AbstractContextManager[Endpoint]] | None = None
    artifacts: Path | None = None  # per-case qlog and keylog directory (None: none written)
    client_argv: Callable[[Sequence[str]], list[str]] = list  # a command, run on the client side

    def socket(self, kind: int, family: int | None = None) -> socket.socket:
        """A new socket on the client side (non-blocking)."""
        sock = self.make_socket(family if family is not None else self.endpoint.family, kind)
        sock.setblocking(False)
        return sock

    def wait(self, base_s: float = CLEAN_WAIT_S) -> float:
        """See Timing.wait."""
        return self.timing.wait(base_s)


def plain_socket(family: int, kind: int) -> socket.socket:
    """A socket in the caller's own network namespace."""
    return socket.socket(family, kind)
