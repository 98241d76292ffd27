"""A reader's wake-up point, shared by the raw h2 and QUIC wires: the read loop wakes the waiters
after every read; a waiter re-checks its condition then."""

from __future__ import annotations

from collections.abc import Callable

import trio


class Waking:
    """Mixin: `_wake()` after each read, `wait_for(condition)` in between; the subclass sets
    `self._progress = trio.Event()` in its `__init__` and says when the connection `_ended`."""

    _progress: trio.Event

    def _ended(self) -> bool:
        """The connection ended (no more reads will come)."""
        raise NotImplementedError

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def wait_for(self, condition: Callable[[], object], timeout_s: float) -> bool:
        """Wait until `condition()` is true (checked after every read); False on timeout or
        when the connection ended first with the condition still false."""
        with trio.move_on_after(timeout_s):
            while True:
                if condition():
                    return True
                if self._ended():
                    return bool(condition())
                await self._progress.wait()
        return bool(condition())
