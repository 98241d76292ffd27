"""Lifetimes and signals: whatever the lab creates is removed on every way out.

The one place that decides what signals do:

- `install_signal_handlers()` (the CLI calls it first thing): SIGTERM and SIGHUP raise
  `SystemExit`, so `finally` blocks and context managers unwind exactly as for Ctrl-C
  (`KeyboardInterrupt`). Only SIGKILL escapes; `lab clean` handles that case.
- `sigterm_as_interrupt()`: while a run goes on, SIGTERM stops it like Ctrl-C (clean, resumable).
- `deferred_interrupts()`: a teardown block that a second Ctrl-C must not cut short.

`registry` runs its callbacks (last registered first) on normal interpreter exit (`atexit`): the
safety net for namespaces and processes whose owner did not reach its own teardown.
`owned(stack, label, fn)` registers a teardown both in an `ExitStack` and in the registry.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


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


def owned(stack: contextlib.ExitStack, label: str, fn: Callable[[], object]) -> None:
    """Make `fn` run when `stack` unwinds, and at interpreter exit should the stack never unwind
    (the registry's safety net); it runs once either way."""
    handle = registry.push(label, fn)
    stack.callback(registry.run, handle)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the block; raise KeyboardInterrupt after it if one came."""
    got: list[int] = []

    def hold(signum: int, frame: object) -> None:
        got.append(signum)

    try:
        old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the block runs (a clean stop, resumable)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
