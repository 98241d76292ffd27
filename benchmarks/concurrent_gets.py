"""Many small GETs with the lab's client: `count` requests shared by `connections` connections
× `streams` concurrent workers each (the load of bench_flood's normal clients and bench_memory)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from lab.http.client import open_connection
from lab.http.types import ConnectOptions, Response


async def get_concurrently(
    opts: ConnectOptions,
    path: str,
    count: int,
    connections: int,
    streams: int,
    accept: Callable[[Response], bool],
) -> int:
    """`count` GETs of `path` over `connections` × `streams` workers; how many `accept` took."""
    left, accepted = count, 0

    async def connection() -> None:
        nonlocal left, accepted
        async with open_connection(opts) as conn:

            async def worker() -> None:
                nonlocal left, accepted
                while left > 0:
                    left -= 1
                    if accept(await conn.request("GET", path)):
                        accepted += 1

            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(worker)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    return accepted
