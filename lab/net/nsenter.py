"""Enter a named network namespace from Python, find processes in it, build `ip netns exec` argv.

`enter(ns)` switches only the calling *thread* (setns(2) with CLONE_NEWNET) and switches back on
exit; sockets created inside stay bound to that namespace after leaving it. Keep the body short
and synchronous (no awaits, no thread hand-offs).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ns_path(ns: str) -> Path:
    """The bind-mount file of a named namespace (`/run/netns/NAME`)."""
    return NETNS_RUN_DIR / ns


@contextmanager
def enter(ns: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace `ns`."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def run_in(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns` (`ip netns exec NS ...`)."""
    return ["ip", "netns", "exec", ns, *argv]


def write_sysctl(ns: str, key: str, value: str | int) -> None:
    """Write a `net.*` sysctl inside `ns`, e.g. key `net/ipv4/ip_forward`."""
    with enter(ns), open(f"/proc/sys/{key}", "w") as f:
        f.write(str(value))


def read_sysctl(ns: str, key: str) -> str:
    """Read a `net.*` sysctl inside `ns`."""
    with enter(ns), open(f"/proc/sys/{key}") as f:
        return f.read().strip()


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is `ns` (like `ip netns pids`)."""
    try:
        st = os.stat(ns_path(ns))
    except FileNotFoundError:
        return []
    target = (st.st_dev, st.st_ino)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            s = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == target:
            pids.append(int(entry.name))
    return pids


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (entries of /run/netns)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []
