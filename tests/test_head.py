"""HEAD over real loopback servers, h2 and h3 alike: the response's content-length describes the
body a GET would get and the response has none (RFC 9110 §9.3.2, §8.6).

Against `lab serve`'s server (both engines), against a server that wrongly sends a body on HEAD,
and against Caddy (quic-go), which sends content-length on HEAD as the lab server does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from lab.http import app
from lab.http.client import open_connection
from lab.http.h2_server import serve_h2
from lab.http.h3_server import serve_h3
from lab.http.server import running_server
from lab.http.settings import QuicSettings, ServerConfig
from lab.http.tcp import bind_tcp
from lab.http.tls import CertPaths, ensure_certs, server_ssl_context
from lab.http.types import ConnectOptions, RequestFailed, Response, TicketStore
from lab.peers import registry
from lab.peers.proc import free_port, running

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
CLIENTS = [("h2", "aioquic"), ("h3", "aioquic"), ("h3", "qh3")]  # (protocol, QUIC engine)
POD_LIST = "/api/v1/namespaces/default/pods?limit=3"  # answered by app's respond(): known body


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return ensure_certs(tmp_path_factory.mktemp("tls"))


def options(protocol: str, engine: str, port: int, ca_file: Path | None) -> ConnectOptions:
    return ConnectOptions(
        protocol=protocol,  # type: ignore[arg-type]
        host=HOST,
        port=port,
        server_name="localhost",
        tickets=TicketStore(),
        ca_file=ca_file,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
        connect_timeout_s=5.0,
    )


def content_length(r: Response) -> int | None:
    values = [v for n, v in r.headers if n == "content-length"]
    assert len(values) <= 1, r.headers
    return int(values[0]) if values else None


def assert_bodiless(head: Response, get: Response) -> None:
    """`head` answers HEAD for what `get` answered GET: same status and content-length, no body."""
    assert head.status == get.status == 200
    assert get.body is not None and len(get.body) == get.body_bytes > 0
    assert content_length(get) == get.body_bytes
    assert content_length(head) == get.body_bytes
    assert head.body == b"" and head.body_bytes == 0
    assert head.first_byte_ns is None
    assert sum(n for _, n in head.chunks) == 0


@pytest.mark.parametrize(("protocol", "engine"), CLIENTS)
def test_head_to_the_lab_server_keeps_content_length_and_the_connection(
    certs: CertPaths, protocol: str, engine: str
) -> None:
    """HEAD on a streamed route and on a whole-body route: content-length of the GET body, no
    body, and the connection serves a GET afterwards."""
    config = ServerConfig(host=HOST, port=0, grace_s=2, quic=QuicSettings(engine=engine))  # type: ignore[arg-type]

    async def main() -> None:
        with trio.fail_after(60):
            async with running_server(config, cert_dir=certs.cert.parent) as info:
                opts = options(protocol, engine, info.config.port, info.ca_file)
                async with open_connection(opts) as conn:
                    for path in ("/bytes/100000", POD_LIST):
                        head = await conn.request("HEAD", path)
                        get = await conn.request("GET", path)
                        assert_bodiless(head, get)
                    many = [None] * 5

                    async def one(i: int) -> None:
                        many[i] = await conn.request("HEAD", f"/bytes/{1000 + i}")

                    async with trio.open_nursery() as nursery:
                        for i in range(5):
                            nursery.start_soon(one, i)
                    assert [content_length(r) for r in many] == [1000 + i for i in range(5)]

    trio.run(main)


async def _body_on_head(request: app.Request, writer: app.ResponseWriter) -> None:
    """A broken handler: sends a 5-byte body whatever the method (bypassing app's HEAD rule)."""
    await writer.send_headers(200, [("content-length", "5")])
    await writer.send_data(b"hello", end_stream=True)


@contextlib.asynccontextmanager
async def broken_server(certs: CertPaths, engine: str) -> AsyncIterator[int]:
    """h2 and h3 with `_body_on_head` on one loopback port, as lab.http.server.serve binds them."""
    socks = bind_tcp(HOST, 0)
    port = socks[0].getsockname()[1]
    config = ServerConfig(
        host=HOST,
        port=port,
        cert_file=certs.cert,
        key_file=certs.key,
        grace_s=1,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
    )
    ctx = server_ssl_context(certs.cert, certs.key)
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            h2 = functools.partial(serve_h2, config, _body_on_head, ctx, socks, shutdown=shutdown)
            await nursery.start(h2)
            await nursery.start(
                functools.partial(serve_h3, config, _body_on_head, shutdown=shutdown)
            )
            try:
                yield port
            finally:
                shutdown.set()
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize(("protocol", "engine"), CLIENTS)
def test_a_body_in_a_head_response_fails_the_request(
    certs: CertPaths, protocol: str, engine: str
) -> None:
    """The same server's GET answer is taken whole; its HEAD answer, with the body, is refused."""

    async def main() -> None:
        with trio.fail_after(60):
            async with broken_server(certs, engine) as port:
                opts = options(protocol, engine, port, certs.ca_cert)
                async with open_connection(opts) as conn:
                    get = await conn.request("GET", "/")
                    assert get.body == b"hello"
                    with pytest.raises(RequestFailed):
                        await conn.request("HEAD", "/")

    trio.run(main)


@pytest.mark.interop
@pytest.mark.parametrize(("protocol", "engine"), CLIENTS)
def test_head_to_caddy(tmp_path: Path, certs: CertPaths, protocol: str, engine: str) -> None:
    """Caddy (quic-go) answers HEAD of a file with its content-length and no body."""
    ctx = registry.ServerContext(
        host=HOST,
        port=free_port(HOST),
        workdir=tmp_path / "caddy",
        cert_dir=certs.cert.parent,
        bytes_sizes=(100_000,),
    )

    async def main() -> None:
        opts = options(protocol, engine, ctx.port, certs.ca_cert)
        with trio.fail_after(60):
            async with open_connection(opts) as conn:
                head = await conn.request("HEAD", "/bytes/100000")
                get = await conn.request("GET", "/bytes/100000")
                assert_bodiless(head, get)

    with running(registry.CADDY.launch(ctx), ctx.workdir / "logs", "caddy") as proc:
        assert registry.CADDY.ready(ctx, timeout_s=20), proc.output()[-3000:]
        trio.run(main)
