"""`lab serve` as a real process: readiness output, graceful SIGTERM, `lab get` against it."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import trio

from lab.http.client import open_connection
from lab.http.settings import H2ServerLimits, QuicServerLimits
from lab.http.tls import ensure_certs
from lab.http.types import ConnectOptions, RequestFailed

READY_TIMEOUT_S = 30


class ServeProcess:
    """A `lab serve` subprocess on a free loopback port; `stop()` always leaves nothing behind."""

    def __init__(self, cert_dir: Path, *extra: str):
        self.cert_dir = cert_dir
        argv = [sys.executable, "-m", "lab", "serve", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--cert-dir", str(cert_dir), *extra]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT_S):
            self.stop()
            raise AssertionError("lab serve did not get ready:\n" + "".join(self.lines))
        m = re.search(r"listening on port (\d+)", "".join(self.lines))
        assert m, self.lines
        self.port = int(m.group(1))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("  grace_s="):
                self._ready.set()
        self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def serve_processes(cert_dir: Path, *flags: str) -> Iterator[Callable[..., ServeProcess]]:
    """A starter of `lab serve FLAGS… EXTRA…` processes; each one started is stopped at exit."""
    started: list[ServeProcess] = []

    def start(*extra: str) -> ServeProcess:
        p = ServeProcess(cert_dir, *flags, *extra)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()


@pytest.fixture
def serve(cert_dir):
    with serve_processes(cert_dir) as start:
        yield start


def _opts(server: ServeProcess) -> ConnectOptions:
    return ConnectOptions("h2", "127.0.0.1", server.port, ca_file=server.cert_dir / "ca.pem")


def test_serve_prints_addresses_and_settings(serve):
    server = serve("--max-streams", "42", "--cc", "reno")
    out = server.output
    assert f"127.0.0.1:{server.port}" in out
    assert "max_concurrent_streams=42" in out
    assert "tcp_congestion=reno" in out
    assert "stream_window=16777216" in out


def _line(out: str, prefix: str) -> str:
    (line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(prefix)]
    return line


def test_serve_prints_the_bounds_given_on_the_command_line(serve):
    """One line per protocol names every bound with its value; non-default flags show."""
    given = {
        "--h2-stall-timeout": ("stream_stall_timeout_s", "7.5"),
        "--h2-max-queued-control": ("max_queued_control_frames", "1234"),
        "--h3-max-half-open": ("max_half_open", "33"),
        "--h3-handshake-timeout": ("handshake_timeout_s", "2.5"),
    }
    defaults = {**asdict(H2ServerLimits()), **asdict(QuicServerLimits())}
    assert all(str(defaults[name]) != value for name, value in given.values())
    server = serve(*[a for flag, (_, value) in given.items() for a in (flag, value)])
    h2_line = _line(server.output, "h2 bounds:")
    h3_line = _line(server.output, "h3 bounds:")
    for name, value in list(given.values())[:2]:
        assert f" {name}={value}" in h2_line
    for name, value in list(given.values())[2:]:
        assert f" {name}={value}" in h3_line
    assert f" idle_timeout_s={H2ServerLimits().idle_timeout_s}" in h2_line  # a default one
    for line, limits in ((h2_line, H2ServerLimits), (h3_line, QuicServerLimits)):
        names = [item.split("=")[0] for item in line.split()[2:]]
        assert names == [f.name for f in fields(limits)]


def test_sigterm_lets_the_in_flight_request_finish_then_exits(serve):
    server = serve("--grace", "10")
    count, interval_ms = 12, 100
    path = f"/api/v1/watch/namespaces/default/pods?interval_ms={interval_ms}&count={count}"

    async def main() -> None:
        first = trio.Event()
        async with open_connection(_opts(server)) as conn:
            result = {}

            async def watch() -> None:
                result["r"] = await conn.request("GET", path, on_chunk=lambda d, t: first.set())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await first.wait()
                server.proc.send_signal(signal.SIGTERM)
                await trio.sleep(0.3)  # GOAWAY is on its way; the listener is closed
                with pytest.raises(RequestFailed):
                    await conn.request("GET", "/healthz")  # no new streams after GOAWAY
                with pytest.raises((OSError, RequestFailed)):
                    async with open_connection(_opts(server)):
                        pass
        r = result["r"]
        assert r.status == 200
        events = [json.loads(x) for x in r.body.decode().splitlines()]
        assert [e["lab"]["seq"] for e in events] == list(range(count))  # nothing cut off

    trio.run(main)
    assert server.proc.wait(timeout=10) == 0


def test_sigterm_grace_period_bounds_an_endless_request(serve):
    server = serve("--grace", "1")
    path = "/api/v1/watch/namespaces/default/pods?interval_ms=50"  # count=0: never ends

    async def main() -> None:
        first = trio.Event()
        async with open_connection(_opts(server)) as conn:
            with pytest.raises(RequestFailed):
                async with trio.open_nursery() as nursery:
                    on_chunk = lambda d, t: first.set()  # noqa: E731
                    request = functools.partial(conn.request, "GET", path, on_chunk=on_chunk)
                    nursery.start_soon(request)
                    await first.wait()
                    server.proc.send_signal(signal.SIGTERM)

    t0 = time.monotonic()
    trio.run(main)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 8  # stopped by the 1 s grace, not by the test's kill


def test_lab_get_prints_timings(serve, cert_dir):
    server = serve()
    url = f"https://127.0.0.1:{server.port}/bytes/100000"
    out = subprocess.run(
        [sys.executable, "-m", "lab", "get", url, "--ca", str(cert_dir / "ca.pem"), "-n", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for step in ("connect start", "tcp connected", "handshake done", "request sent"):
        assert step in out.stdout
    assert out.stdout.count("status 200, 100000 bytes") == 2


@pytest.mark.parametrize("protocol", ["--http2", "--http3"])
def test_lab_get_head_shows_the_length_without_a_body(serve, cert_dir, protocol):
    server = serve()
    url = f"https://127.0.0.1:{server.port}/bytes/100000"
    argv = [sys.executable, "-m", "lab", "get", url, "--ca", str(cert_dir / "ca.pem"), protocol]
    head = subprocess.run([*argv, "--head"], capture_output=True, text=True, timeout=60)
    assert head.returncode == 0, head.stderr
    assert "status 200, 0 bytes (content-length 100000)" in head.stdout
    get = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "status 200, 100000 bytes (content-length 100000)" in get.stdout


def test_lab_get_0rtt_over_h2_says_it_resumed_without_early_data(serve, cert_dir):
    server = serve()
    url = f"https://127.0.0.1:{server.port}/healthz"
    out = subprocess.run(
        [sys.executable, "-m", "lab", "get", url, "--ca", str(cert_dir / "ca.pem"), "--0rtt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "resumed=True early_data_sent=False" in out.stdout
    assert "no TLS early data" in out.stdout
    assert "server says early data: no" in out.stdout


def test_lab_get_rejects_an_untrusted_server(serve, tmp_path):
    server = serve()
    other_ca = ensure_certs(tmp_path / "other").ca_cert
    url = f"https://127.0.0.1:{server.port}/healthz"
    out = subprocess.run(
        [sys.executable, "-m", "lab", "get", url, "--ca", str(other_ca)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "certificate" in out.stderr.lower() or "ssl" in out.stderr.lower()
