"""Which watch events have left a QUIC sender in a datagram (issue 11, item 4) — sans-I/O.

An event is *pending* from the moment its bytes are handed to the engine; its end offset is the
stream's buffered end offset (bytes) right after that. It *departs* at the first transmit after
which the stream's highest offset ever put into a frame reaches that end offset: its last byte
was then first put into a datagram. A retransmission re-sends old offsets and never raises the
highest one, so it does not move a departure; loss recovery counts as network time.

Events of one stream depart in offset order. A stream that closes (or is reset) before its
events depart is forgotten with them; the table holds at most `max_pending` events (the rest
are counted in `overflowed`, not tracked).
"""

from __future__ import annotations

from collections import deque
from collections.abc import KeysView, Mapping

MAX_PENDING_EVENTS = 65_536  # per connection: far above any watch's events in flight


class DepartureTracker:
    """Pending events per stream: (end offset, sent_ns) in offset order."""

    __slots__ = ("_max_pending", "_pending", "_size", "overflowed")

    def __init__(self, max_pending: int = MAX_PENDING_EVENTS) -> None:
        self._max_pending = max_pending
        self._pending: dict[int, deque[tuple[int, int]]] = {}
        self._size = 0
        self.overflowed = 0  # events not tracked because the table was full

    def __bool__(self) -> bool:
        """True while any event waits to depart."""
        return self._size > 0

    def __len__(self) -> int:
        return self._size

    def streams(self) -> KeysView[int]:
        """The streams with pending events (the only ones a transmit needs to look at)."""
        return self._pending.keys()

    def pending(self, stream_id: int, end_offset: int, sent_ns: int) -> bool:
        """An event stamped `sent_ns` (CLOCK_MONOTONIC ns) ends at byte `end_offset` of the
        stream; False when the table is full and the event is not tracked."""
        queue = self._pending.get(stream_id)
        if queue and end_offset < queue[-1][0]:
            raise ValueError(f"stream {stream_id}: end offset {end_offset} went backwards")
        if self._size >= self._max_pending:
            self.overflowed += 1
            return False
        if queue is None:
            queue = self._pending[stream_id] = deque()
        queue.append((end_offset, sent_ns))
        self._size += 1
        return True

    def sent(self, offsets: Mapping[int, int | None]) -> list[int]:
        """The sent_ns of the events that departed, removed from the table. `offsets`: for each
        stream of `streams()`, its highest offset put into a frame so far (bytes), or None when
        the stream is gone or reset (its events are forgotten). Call it right after the
        datagrams were built; they carry the returned events' last bytes."""
        departed: list[int] = []
        for stream_id, highest in offsets.items():
            queue = self._pending.get(stream_id)
            if queue is None:
                continue
            if highest is None:
                self.forget(stream_id)
                continue
            while queue and queue[0][0] <= highest:
                departed.append(queue.popleft()[1])
            if not queue:
                del self._pending[stream_id]
        self._size -= len(departed)
        return departed

    def forget(self, stream_id: int) -> None:
        """Drop a stream's pending events (it closed or was reset before they left)."""
        queue = self._pending.pop(stream_id, None)
        if queue is not None:
            self._size -= len(queue)
