"""Inbound HTTP/2 byte-stream filter that takes GOAWAY frames out before h2 sees them and
checks the frame rules h2 misses; the h2 connection class both lab ends use (bounded per-stream
memory); a count of the control frames in outbound bytes.

h2's connection state machine moves to CLOSED on a received GOAWAY and then rejects every later
frame, so a graceful GOAWAY (RFC 9113 §6.8: streams up to last_stream_id still complete) would
kill the in-flight responses. Both the lab's client and server therefore remove GOAWAY frames
from the inbound stream here and handle them themselves. Pure code: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.connection
from h2.errors import ErrorCodes

FRAME_HEADER_BYTES = 9
DATA_TYPE, HEADERS_TYPE, SETTINGS_TYPE, GOAWAY_TYPE, CONTINUATION_TYPE = 0x0, 0x1, 0x4, 0x7, 0x9
ACK_FLAG = 0x1
GOAWAY_MIN_PAYLOAD_BYTES = 8  # last stream id + error code
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CLOSED_STREAM_MEMORY = 2048  # closed streams whose ending h2 remembers, per connection


class FrameRuleError(Exception):
    """The peer broke a frame rule of RFC 9113 (a connection error); `error_code` goes in the
    GOAWAY."""

    def __init__(self, error_code: ErrorCodes, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code


class BoundedH2Connection(h2.connection.H2Connection):
    """h2's H2Connection remembering how the last 2,048 closed streams ended, not 65,536.

    h2 keeps one record per closed stream (≈ 140 bytes) to answer late frames on it with a
    stream error rather than a connection error (RFC 9113 §5.1). With h2's default a long-lived
    connection grows by ≈ 9 MB over its first 65,536 requests; 2,048 (20× the default stream
    limit of 100) still covers every frame that can be in flight after a stream closed.
    """

    MAX_CLOSED_STREAMS = CLOSED_STREAM_MEMORY


@dataclass(frozen=True, slots=True)
class GoAway:
    """A GOAWAY the peer sent."""

    last_stream_id: int
    error_code: int
    debug_data: bytes


class GoAwayFilter:
    """Splits the inbound stream at frame boundaries; `feed` returns it without GOAWAY frames.

    A frame header split across reads is held back until it is complete, so nothing of a
    GOAWAY ever reaches h2.

    With `max_frame_bytes` (our SETTINGS_MAX_FRAME_SIZE; the server passes it) the filter also
    enforces, from the frame headers, the rules h2 does not check and raises FrameRuleError:
    the connection preface (§3.4: exactly the client's 24 octets on the server side, then a
    SETTINGS frame first, PROTOCOL_ERROR); GOAWAY on a stream other than 0 (§6.8,
    PROTOCOL_ERROR); GOAWAY shorter than 8 bytes or longer than `max_frame_bytes` (§4.2,
    FRAME_SIZE_ERROR, checked before any of its payload is buffered); SETTINGS with ACK and a
    payload (§6.5, FRAME_SIZE_ERROR). Without it (the client) a short GOAWAY reads as
    PROTOCOL_ERROR and nothing is raised.
    """

    __slots__ = ("_capture", "_first_frame", "_hdr", "_left", "_max_frame", "_preface_left")

    def __init__(self, server_side: bool = False, max_frame_bytes: int | None = None):
        self._hdr = b""  # partial frame header, held back
        self._left = 0  # bytes of the current frame's payload still to come
        self._capture: bytearray | None = None  # payload of a GOAWAY being collected
        self._preface_left = len(CLIENT_PREFACE) if server_side else 0  # the client preface
        self._max_frame = max_frame_bytes  # None: no frame-rule checks
        self._first_frame = True  # the peer's first frame must be SETTINGS

    def feed(self, data: bytes) -> tuple[bytes, list[GoAway]]:
        """The bytes to give h2 and the GOAWAY frames found in `data`."""
        view = memoryview(data)
        n = len(view)
        keep: list[bytes | memoryview] = []
        goaways: list[GoAway] = []
        pos = 0
        if self._preface_left:
            k = min(self._preface_left, n)
            if self._max_frame is not None:
                done = len(CLIENT_PREFACE) - self._preface_left
                if view[:k] != CLIENT_PREFACE[done : done + k]:
                    raise FrameRuleError(ErrorCodes.PROTOCOL_ERROR, "invalid connection preface")
            keep.append(view[:k])  # h2 checks the preface too
            self._preface_left -= k
            pos = k
        while pos < n:
            if self._left:
                k = min(self._left, n - pos)
                if self._capture is None:
                    keep.append(view[pos : pos + k])
                else:
                    self._capture += view[pos : pos + k]
                pos += k
                self._left -= k
                if self._left == 0 and self._capture is not None:
                    goaways.append(_parse_goaway(bytes(self._capture)))
                    self._capture = None
                continue
            need = FRAME_HEADER_BYTES - len(self._hdr)
            self._hdr += view[pos : pos + need].tobytes()
            pos += min(need, n - pos)
            if len(self._hdr) < FRAME_HEADER_BYTES:
                break
            hdr, self._hdr = self._hdr, b""
            self._left = int.from_bytes(hdr[:3], "big")
            if self._max_frame is not None:
                self._check(hdr, self._left)
            if hdr[3] == GOAWAY_TYPE:
                self._capture = bytearray()
                if self._left == 0:
                    goaways.append(_parse_goaway(b""))
                    self._capture = None
            else:
                keep.append(hdr)
        if len(keep) == 1 and isinstance(keep[0], memoryview) and len(keep[0]) == n:
            return data, goaways  # all of `data` passes (not a header completed from before)
        return b"".join(keep), goaways

    def _check(self, hdr: bytes, length: int) -> None:
        """Raise FrameRuleError if the frame with header `hdr` breaks a rule h2 does not check."""
        kind, flags = hdr[3], hdr[4]
        if self._first_frame:
            self._first_frame = False
            if kind != SETTINGS_TYPE or flags & ACK_FLAG:
                raise FrameRuleError(
                    ErrorCodes.PROTOCOL_ERROR,
                    f"first frame is type {kind:#x}, not SETTINGS (RFC 9113 §3.4)",
                )
        if kind == GOAWAY_TYPE:
            stream_id = int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
            if stream_id:
                raise FrameRuleError(
                    ErrorCodes.PROTOCOL_ERROR, f"GOAWAY on stream {stream_id} (RFC 9113 §6.8)"
                )
            assert self._max_frame is not None
            if not GOAWAY_MIN_PAYLOAD_BYTES <= length <= self._max_frame:
                raise FrameRuleError(
                    ErrorCodes.FRAME_SIZE_ERROR,
                    f"GOAWAY of {length} bytes, not {GOAWAY_MIN_PAYLOAD_BYTES}..{self._max_frame}"
                    " (RFC 9113 §4.2)",
                )
        elif kind == SETTINGS_TYPE and flags & ACK_FLAG and length:
            raise FrameRuleError(
                ErrorCodes.FRAME_SIZE_ERROR,
                f"SETTINGS ACK with a {length}-byte payload (RFC 9113 §6.5)",
            )


def count_control_frames(data: bytes) -> int:
    """How many frames in `data` (whole frames, as h2's data_to_send gives them) are control
    frames: anything but DATA, HEADERS and CONTINUATION."""
    count = pos = 0
    n = len(data)
    while pos + FRAME_HEADER_BYTES <= n:
        if data[pos + 3] not in (DATA_TYPE, HEADERS_TYPE, CONTINUATION_TYPE):
            count += 1
        pos += FRAME_HEADER_BYTES + int.from_bytes(data[pos : pos + 3], "big")
    return count


def _parse_goaway(payload: bytes) -> GoAway:
    if len(payload) < 8:
        return GoAway(0, 0x1, payload)  # malformed: treat as PROTOCOL_ERROR
    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
    code = int.from_bytes(payload[4:8], "big")
    return GoAway(last, code, payload[8:])
