"""The client's H3Connection: a response to HEAD is not held to its content-length.

A HEAD response's `content-length` is the length of the body a GET would get; the response
itself has no body (RFC 9110 §9.3.2, §8.6). aioquic checks every response's content-length
against the bytes received when its stream ends (`H3Connection._check_content_length`), knows
no request methods, and so closes the connection with H3_MESSAGE_ERROR on every HEAD response
that carries one. The class made here remembers the streams on which it sent HEAD and skips that
check on them; `lab.http.exchange.Exchange` refuses a body on them instead, for both protocols
and both engines (h2 does the same: a HEAD response's expected length is 0). qh3 does not check
content-length, so its H3Connection is used as it is.
"""

from __future__ import annotations

import functools
import types
from typing import Any

CONTENT_LENGTH_CHECK = "_check_content_length"  # the method overridden below


@functools.cache
def client_h3_connection(h3_module: types.ModuleType) -> type:
    """The H3Connection class of an engine's `h3.connection` module for the client side."""
    base: Any = h3_module.H3Connection
    if not hasattr(base, CONTENT_LENGTH_CHECK):
        return base

    class ClientH3Connection(base):
        """H3Connection that does not hold responses to HEAD to their content-length."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.head_request_streams: set[int] = set()  # HEAD sent, response not ended

        def send_headers(self, stream_id: int, headers: Any, *args: Any, **kwargs: Any) -> None:
            super().send_headers(stream_id, headers, *args, **kwargs)
            if (b":method", b"HEAD") in headers:
                self.head_request_streams.add(stream_id)

        def _check_content_length(self, stream: Any) -> None:
            if stream.stream_id in self.head_request_streams:  # its response ends: forget it
                self.head_request_streams.discard(stream.stream_id)
                stream.expected_content_length = None  # what a GET would get, not this body
            super()._check_content_length(stream)

    return ClientH3Connection
