"""Teardown registry and run locks: whatever a run creates is removed on every way out.

`registry` runs its callbacks (last registered first) on normal exit (`atexit`), and — once
`install_signal_handlers()` was called in the main thread — turns SIGTERM and SIGHUP into
`SystemExit` so `finally` blocks and context managers unwind exactly as for Ctrl-C
(`KeyboardInterrupt`). Only SIGKILL escapes; `lab clean` handles that case.

A *run lock* is an flock(2) held on `/run/lab/<prefix>.lock` for the lifetime of the run. The
kernel drops it when the owner dies, however it dies, so `lab clean` can tell a live run (lock
held: leave it alone) from a leftover (lock free or missing).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_DIR = Path("/run/lab")


@dataclass
class TeardownRegistry:
    """LIFO list of cleanup callbacks; each runs at most once."""

    _items: dict[int, tuple[str, Callable[[], object]]] = field(default_factory=dict)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _owner_pid: int = field(default_factory=os.getpid)

    def push(self, label: str, fn: Callable[[], object]) -> int:
        """Register `fn`; returns a handle for `discard`/`run`."""
        with self._lock:
            self._next += 1
            self._items[self._next] = (label, fn)
            return self._next

    def discard(self, handle: int) -> None:
        """Forget a callback without running it (its owner cleaned up itself)."""
        with self._lock:
            self._items.pop(handle, None)

    def run(self, handle: int) -> None:
        """Run one callback now (and forget it)."""
        with self._lock:
            item = self._items.pop(handle, None)
        if item is not None:
            _call(*item)

    def run_all(self) -> None:
        """Run every pending callback, newest first; errors are logged, not raised.
        Does nothing in a forked child (the parent owns the objects)."""
        if os.getpid() != self._owner_pid:
            return
        while True:
            with self._lock:
                if not self._items:
                    return
                handle = max(self._items)
                item = self._items.pop(handle)
            _call(*item)

    def __len__(self) -> int:
        return len(self._items)


def _call(label: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        log.exception("teardown of %s failed", label)


registry = TeardownRegistry()
atexit.register(registry.run_all)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> bool:
    """Make SIGTERM/SIGHUP raise SystemExit (so teardown runs). Only in the main thread and only
    where the handler is still the default; returns True when installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    installed = False
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)
            installed = True
    return installed


# --- run locks ----------------------------------------------------------------------------
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
            raise RuntimeError(f"run prefix {self.prefix} is in use by a live run") from None
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
