"""TUN device ioctls: create a persistent TUN device, attach to it, read its drop counter.

Layer-3 TUN (IFF_TUN) without packet information (IFF_NO_PI): each read/write is one IP packet.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from pathlib import Path

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TUN_FLAGS = IFF_TUN | IFF_NO_PI


def _setiff(fd: int, name: str) -> None:
    ifr = struct.pack("16sH", name.encode(), TUN_FLAGS)
    fcntl.ioctl(fd, TUNSETIFF, ifr)


def create_persistent(name: str) -> None:
    """Create persistent TUN device `name` in the calling thread's network namespace.

    The device outlives this call (TUNSETPERSIST) and stays until its link or namespace is
    deleted; with no process attached it drops whatever is routed to it.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        _setiff(fd, name)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def attach(name: str, *, nonblocking: bool = True) -> int:
    """Open an fd on existing TUN device `name` (calling thread's namespace)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    fd = os.open("/dev/net/tun", flags)
    try:
        _setiff(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tx_dropped(name: str) -> int | None:
    """The device's TX-dropped counter (packets the kernel could not queue to the reader).

    Read from /sys, which shows the namespace /sys was mounted in (`ip netns exec` remounts it
    for the target namespace). None when the device is not visible there.
    """
    try:
        return int(Path(f"/sys/class/net/{name}/statistics/tx_dropped").read_text())
    except (FileNotFoundError, ValueError):
        return None


def operstate(name: str) -> str | None:
    """`/sys/class/net/NAME/operstate` ("up" once the kernel activated the device's qdisc after
    the carrier came on), None when not visible."""
    try:
        return Path(f"/sys/class/net/{name}/operstate").read_text().strip()
    except FileNotFoundError:
        return None


def wait_operstate_up(names: list[str], timeout_s: float = 5.0) -> bool:
    """Wait until every device reports operstate "up". Attaching turns the carrier on, but the
    kernel activates the qdisc later (linkwatch, needs the RTNL lock); until then packets routed
    to the device are dropped. Returns False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if all(operstate(n) in ("up", None) for n in names):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
