"""One async client API for HTTP/2 (TCP+TLS, h2) and HTTP/3 (QUIC, aioquic/qh3), on trio.

`open_connection(opts)` picks the engine; the types (`ConnectOptions`, `Connection`, `Response`,
`ConnectionTimings`, `RequestFailed`) are in `lab.http.types`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from lab.http.types import Connection, ConnectOptions


@contextlib.asynccontextmanager
async def open_connection(opts: ConnectOptions) -> AsyncIterator[Connection]:
    """Open an HTTP/2 or HTTP/3 connection as `opts` says; closed (GOAWAY) on exit.

    Usage: `async with open_connection(opts) as conn: resp = await conn.request("GET", "/")`.
    """
    if opts.protocol == "h2":
        from lab.http.h2_client import open_h2  # deferred: import only the engine in use

        async with open_h2(opts) as conn:
            yield conn
    elif opts.protocol == "h3":
        from lab.http.h3_client import open_h3  # deferred: the QUIC engine loads slowly

        async with open_h3(opts) as conn:
            yield conn
    else:
        raise ValueError(f"unknown protocol {opts.protocol!r}")
