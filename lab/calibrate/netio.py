"""Socket and scheduling helpers shared by the probes and the throughput flows. Standard library
only (the echo subprocess imports it)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Protocol

UDP_IP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}  # IP + UDP header bytes
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python 3.11
RCVBUF_BYTES = 8 << 20
RT_PRIORITY = 5  # SCHED_FIFO priority of the probe loops (below the emulator's 10)
mono = time.monotonic_ns


class SocketFactory(Protocol):
    """What the probes need of `lab.net.topology.Topology`."""

    def socket(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket: ...

    def run_in(self, ns: str, argv: list[str]) -> list[str]: ...


def family_of(addr: str) -> socket.AddressFamily:
    """AF_INET6 for an address with a colon, else AF_INET."""
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@contextlib.contextmanager
def realtime(enabled: bool = True) -> Iterator[bool]:
    """Run the calling thread with SCHED_FIFO (priority RT_PRIORITY) inside the block, if
    allowed; yields whether it was granted. The loops inside block in select(), never spin."""
    if not enabled:
        yield False
        return
    try:
        old = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, old[0], old[1])


def big_rcvbuf(sock: socket.socket) -> None:
    """Give `sock` an RCVBUF_BYTES receive buffer (past rmem_max where allowed)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
