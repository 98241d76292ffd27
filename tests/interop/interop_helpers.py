"""Helpers shared by the interop tests (fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

from lab.http import payload
from lab.http.client import open_connection
from lab.http.types import ConnectOptions, Response
from lab.peers import nghttp2, ngtcp2
from lab.peers.proc import Running

HOST = "127.0.0.1"
SIZES = (1000, 100_000, 1_000_000)  # /bytes/{n} bodies the tests fetch
RUN_TIMEOUT_S = 60  # one peer client run, s


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def expected(n: int) -> str:
    """Hex SHA-256 of the reference /bytes/{n} body."""
    return payload.expected_sha256(n)


def need(binary: str) -> str:
    """The path of a peer binary; fails (does not skip) when it is missing: CI installs it."""
    path = shutil.which(binary)
    assert path, f"{binary} not installed: run scripts/install.sh"
    return path


@dataclass
class Server:
    """A running server on loopback."""

    name: str
    host: str
    port: int
    ca_file: Path | None  # the CA that issued its certificate
    proc: Running
    workdir: Path

    def url(self, path: str, name: str = "localhost") -> str:
        """An https URL with `name` as authority."""
        return f"https://{name}:{self.port}{path}"


async def get(opts: ConnectOptions, path: str) -> Response:
    """One GET of `path` on a new connection of the lab's client."""
    async with open_connection(opts) as conn:
        return await conn.request("GET", path)


async def get_and_wait_for_ticket(opts: ConnectOptions, path: str) -> Response:
    """GET `path` on a new connection, then wait (≤ 5 s, on that connection) until the server's
    session ticket is in `opts.tickets`, ready for a resumed or 0-RTT connection."""
    tickets = opts.tickets
    assert tickets is not None
    async with open_connection(opts) as conn:
        response = await conn.request("GET", path)
        with trio.fail_after(5):
            while tickets.get(opts.protocol, opts.host, opts.port) is None:
                await trio.sleep(0.01)
    return response


def gtlsclient(args: ngtcp2.ClientArgs) -> ngtcp2.ClientLog:
    """Run ngtcp2's gtlsclient; asserts exit 0 and returns its parsed log."""
    need(ngtcp2.CLIENT_BINARY)
    done = subprocess.run(
        ngtcp2.client_argv(args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return ngtcp2.parse_client_log(done.stderr)


def nghttp(args: nghttp2.NghttpArgs) -> subprocess.CompletedProcess[bytes]:
    """Run nghttp2's nghttp; asserts exit 0 (the bodies are on its stdout)."""
    need(nghttp2.NGHTTP)
    done = subprocess.run(nghttp2.nghttp_argv(args), capture_output=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def h2load_ten_thousand(server: Server, n: int, timeout_s: float) -> nghttp2.H2loadResult:
    """h2load: 10,000 GETs of /bytes/{n} over 10 clients × 10 streams; asserts exit 0 and h2."""
    need(nghttp2.H2LOAD)
    args = nghttp2.H2loadArgs(
        urls=(server.url(f"/bytes/{n}", name=server.host),),
        requests=10_000,
        clients=10,
        max_concurrent_streams=10,
    )
    done = subprocess.run(
        nghttp2.h2load_argv(args), capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = nghttp2.parse_h2load(done.stdout)
    assert result.protocol == "h2"
    return result
