"""Run locks: an flock(2) held on `/run/lab/<prefix>.lock` for the lifetime of a run.

The kernel drops it when the owner dies, however it dies, so `lab clean` can tell a live run
(lock held: leave it alone) from a leftover (lock free or missing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from lab.errors import RunError

LOCK_DIR = Path("/run/lab")


def lock_path(prefix: str) -> Path:
    return LOCK_DIR / f"{prefix}.lock"


class RunLock:
    """An flock on /run/lab/<prefix>.lock held while the run lives (fd is close-on-exec)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._fd: int | None = None

    def acquire(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.prefix), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunError(f"run prefix {self.prefix} is in use by a live run") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            lock_path(self.prefix).unlink()
        os.close(self._fd)
        self._fd = None


def is_live(prefix: str) -> bool:
    """True when a live process holds the run lock of `prefix`."""
    try:
        fd = os.open(lock_path(prefix), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if we took it
    return False
