"""Inbound HTTP/2 byte-stream filter that takes GOAWAY frames out before h2 sees them, and the
h2 connection class both lab ends use (bounded per-stream memory).

h2's connection state machine moves to CLOSED on a received GOAWAY and then rejects every later
frame, so a graceful GOAWAY (RFC 9113 §6.8: streams up to last_stream_id still complete) would
kill the in-flight responses. Both the lab's client and server therefore remove GOAWAY frames
from the inbound stream here and handle them themselves. Pure code: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.connection

FRAME_HEADER_BYTES = 9
GOAWAY_TYPE = 0x7
CLOSED_STREAM_MEMORY = 2048  # closed streams whose ending h2 remembers, per connection


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
    """

    __slots__ = ("_capture", "_hdr", "_left", "_preface_left")

    def __init__(self, server_side: bool = False):
        self._hdr = b""  # partial frame header, held back
        self._left = 0  # bytes of the current frame's payload still to come
        self._capture: bytearray | None = None  # payload of a GOAWAY being collected
        self._preface_left = 24 if server_side else 0  # the client connection preface

    def feed(self, data: bytes) -> tuple[bytes, list[GoAway]]:
        """The bytes to give h2 and the GOAWAY frames found in `data`."""
        view = memoryview(data)
        n = len(view)
        keep: list[bytes | memoryview] = []
        goaways: list[GoAway] = []
        pos = 0
        if self._preface_left:
            k = min(self._preface_left, n)
            keep.append(view[:k])  # h2 checks the preface itself
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
            if hdr[3] == GOAWAY_TYPE:
                self._capture = bytearray()
                if self._left == 0:
                    goaways.append(_parse_goaway(b""))
                    self._capture = None
            else:
                keep.append(hdr)
        if len(keep) == 1 and len(keep[0]) == n:
            return data, goaways
        return b"".join(keep), goaways


def _parse_goaway(payload: bytes) -> GoAway:
    if len(payload) < 8:
        return GoAway(0, 0x1, payload)  # malformed: treat as PROTOCOL_ERROR
    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
    code = int.from_bytes(payload[4:8], "big")
    return GoAway(last, code, payload[8:])
