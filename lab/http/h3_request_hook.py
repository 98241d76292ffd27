"""The server's H3Connection: request heads reach the server, which checks them itself.

aioquic and qh3 check a request head inside `H3Connection._handle_request_or_push_frame` by
calling their module's `validate_request_headers`. Both require `:authority` (refusing a valid
request that carries only `Host`, RFC 9114 §4.3.1), require neither `:scheme` nor `:path`, do not
compare `Host` with `:authority`, and answer every fault with a connection close. The class made
here runs the engine's own frame handler with that one name bound to `pass_request_head`, so the
engine emits every request head as HeadersReceived and the server applies
lab.http.h3_request_check (a stream error H3_MESSAGE_ERROR, RFC 9114 §4.1.2). The engine's files
and every other H3Connection stay as they are; trailers, responses and pushes keep the engine's
checks.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from lab.http.h3_request_check import declared_content_length, request_problem

FRAME_HANDLER = "_handle_request_or_push_frame"
REQUEST_CHECK = "validate_request_headers"


def pass_request_head(headers: list[tuple[bytes, bytes]], stream: Any = None) -> None:
    """Stands in for the engine's request check: refuses nothing, and records the declared
    content-length on aioquic's stream (which then still ends a body of another length with
    H3_MESSAGE_ERROR); qh3 passes no stream."""
    if stream is not None and request_problem(headers) is None:
        stream.expected_content_length = declared_content_length(headers)


def _rebound(func: Callable[..., Any], name: str, replacement: Callable[..., Any]) -> Any:
    """A copy of `func` whose global `name` is `replacement` (the module's stays untouched)."""
    if name not in func.__code__.co_names:
        raise RuntimeError(f"{func.__qualname__} no longer calls {name}: re-check the engine")
    scope = dict(func.__globals__)
    scope[name] = replacement
    copy = types.FunctionType(
        func.__code__, scope, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__qualname__ = func.__qualname__
    return copy


@functools.cache
def server_h3_connection(h3_module: types.ModuleType) -> type:
    """The H3Connection subclass of an engine's `h3.connection` module for the server side."""
    base = h3_module.H3Connection
    handler = _rebound(getattr(base, FRAME_HANDLER), REQUEST_CHECK, pass_request_head)
    doc = "H3Connection that leaves request-head checks to lab.http.h3_request_check."
    return type("ServerH3Connection", (base,), {FRAME_HANDLER: handler, "__doc__": doc})
