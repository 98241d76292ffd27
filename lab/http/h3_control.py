"""Watch a peer's HTTP/3 control stream for GOAWAY (sans-I/O, engine-neutral).

aioquic's H3Connection reads GOAWAY frames and drops them without an event, and qh3 reports them
as its own event type; the client therefore follows the raw bytes of the peer's unidirectional
streams itself (RFC 9114 §6.2: a stream-type varint first; type 0x00 is the control stream, a
sequence of frames `type varint, length varint, payload`). Only the GOAWAY payload (one varint,
RFC 9114 §5.2) is buffered; every other frame is skipped as it arrives, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTROL_STREAM_TYPE = 0x00
GOAWAY_FRAME_TYPE = 0x07
MAX_GOAWAY_PAYLOAD = 8  # one varint


def pull_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it) of the QUIC varint at `pos`, or None when incomplete."""
    if pos >= len(data):
        return None
    length = 1 << (data[pos] >> 6)
    if pos + length > len(data):
        return None
    value = data[pos] & 0x3F
    for i in range(1, length):
        value = (value << 8) | data[pos + i]
    return value, pos + length


@dataclass
class _UniStream:
    buf: bytearray = field(default_factory=bytearray)
    stream_type: int | None = None
    frame_type: int | None = None
    remaining: int = 0  # payload bytes of the current frame still to come
    ignored: bool = False  # not the control stream (QPACK, push, unknown): nothing to follow


class GoawayWatcher:
    """Feed it the data of the peer's unidirectional streams; it returns GOAWAY ids."""

    def __init__(self) -> None:
        self._streams: dict[int, _UniStream] = {}

    def feed(self, stream_id: int, data: bytes) -> list[int]:
        """The ids of the GOAWAY frames completed by `data` on `stream_id`, in order."""
        st = self._streams.setdefault(stream_id, _UniStream())
        if st.ignored or not data:
            return []
        st.buf += data
        found: list[int] = []
        pos = 0
        buf = st.buf
        while True:
            if st.stream_type is None:
                got = pull_varint(buf, pos)
                if got is None:
                    break
                st.stream_type, pos = got
                if st.stream_type != CONTROL_STREAM_TYPE:
                    st.ignored = True
                    buf.clear()
                    return found
            elif st.frame_type is None:
                got_type = pull_varint(buf, pos)
                got_len = None if got_type is None else pull_varint(buf, got_type[1])
                if got_type is None or got_len is None:
                    break
                st.frame_type, st.remaining = got_type[0], got_len[0]
                pos = got_len[1]
                if st.frame_type == GOAWAY_FRAME_TYPE and st.remaining > MAX_GOAWAY_PAYLOAD:
                    st.frame_type = -1  # malformed: the H3 layer closes the connection
            elif st.frame_type == GOAWAY_FRAME_TYPE:
                if len(buf) - pos < st.remaining:
                    break
                got = pull_varint(buf[pos : pos + st.remaining], 0)
                if got is not None:
                    found.append(got[0])
                pos += st.remaining
                st.frame_type, st.remaining = None, 0
            else:  # skip another frame's payload as it arrives
                skip = min(st.remaining, len(buf) - pos)
                pos += skip
                st.remaining -= skip
                if st.remaining:
                    break
                st.frame_type = None
        del buf[:pos]
        return found
