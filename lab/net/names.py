"""Run-specific names for namespaces and interfaces, and the pattern `lab clean` looks for.

Every object a run creates carries its prefix: `lab` + 6 hex digits (e.g. `lab3f2a9c`).
Namespaces are `<prefix>-cli`, `<prefix>-rtr`, `<prefix>-srv`; interface names stay ≤ 15 chars.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX_RE = re.compile(r"^(lab[0-9a-f]{6})-[a-z0-9]+$")
IFNAMSIZ = 15  # usable characters of a Linux interface name


def new_prefix() -> str:
    """A fresh random run prefix such as `lab3f2a9c`."""
    return "lab" + secrets.token_hex(3)


def prefix_of(name: str) -> str | None:
    """The run prefix of a namespace/interface name made by `lab`, or None."""
    m = PREFIX_RE.match(name)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class Names:
    """All names of one run's topology, derived from its prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"lab[0-9a-f]{6}", self.prefix):
            raise ValueError(f"bad run prefix {self.prefix!r}: want 'lab' + 6 hex digits")

    # namespaces
    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-rtr"

    @property
    def server_ns(self) -> str:
        return f"{self.prefix}-srv"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.client_ns, self.router_ns, self.server_ns)

    # interfaces: client ns `-c0` ⇄ router `-rc`; router `-rs` ⇄ server ns `-s0`
    @property
    def client_if(self) -> str:
        return f"{self.prefix}-c0"

    @property
    def router_client_if(self) -> str:
        return f"{self.prefix}-rc"

    @property
    def router_server_if(self) -> str:
        return f"{self.prefix}-rs"

    @property
    def server_if(self) -> str:
        return f"{self.prefix}-s0"

    # TUN devices in the router namespace: one per direction
    @property
    def tun_uplink(self) -> str:
        return f"{self.prefix}-tu"

    @property
    def tun_downlink(self) -> str:
        return f"{self.prefix}-td"

    @property
    def interfaces(self) -> tuple[str, ...]:
        names = (
            self.client_if,
            self.router_client_if,
            self.router_server_if,
            self.server_if,
            self.tun_uplink,
            self.tun_downlink,
        )
        assert all(len(n) <= IFNAMSIZ for n in names)
        return names
