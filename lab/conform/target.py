"""What `lab conform` tests: a URL, or a server the lab starts in its namespaces.

- `UrlTarget("https://127.0.0.1:8443")`: loopback or the lab's own server addresses only (never
  another host). The client runs in the caller's namespace; which listeners (TCP h2, UDP h3) and
  routes (/counter, the watch) exist is probed first.
- `ServerTarget("reference" | "caddy" | "gtlsserver" | "go", link)`: a client ⇄ router ⇄ server
  topology (lab.net.topology), the server started in the server namespace as `lab run` starts it
  (lab.peers.registry; gtlsserver from lab.peers.ngtcp2), the cases' sockets made in the client
  namespace. With a link the router runs the emulator: a clean link for the clean path, the given
  link for the impaired one. The lab can drain (SIGTERM), kill and restart the server, and start
  a second instance configured for Retry. The certificate is padded to ≥ 8 KB (Q-05).

Both are context managers; everything they start is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from lab.conform import routes
from lab.conform.context import CaseContext, Endpoint, ServerControl, Timing, plain_socket
from lab.conform.h2wire import open_h2
from lab.conform.model import PathKind
from lab.conform.quicwire import open_quic
from lab.errors import BadInput, HostNotCapable, PeerError
from lab.http import tls
from lab.link.emulator import EmulatorProcess
from lab.link.spec import DirectionSpec, GilbertElliottLoss, LinkSpec
from lab.net import nsenter
from lab.net.topology import Topology
from lab.net.workdir import create_workdir, remove_workdir
from lab.peers import caddy, ngtcp2, probe, registry
from lab.peers.proc import stop as stop_process
from lab.run.children import tail
from lab.run.lifecycle import deferred_interrupts, owned

SERVERS = ("reference", "go", "caddy", "gtlsserver")
SERVER_PORT = 8443
RETRY_PORT = 8444
PAD_BYTES = 9_000  # leaf padding: a chain of ≥ 8 KB (Q-05 needs one beyond 3 × 1200 bytes)
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 15.0  # a drain may take the reference server's 10 s grace
BURST_OUTAGE_S = 1.0  # allowance for a burst-loss (Gilbert-Elliott) link's outages
VERSION_TIMEOUT_S = 5.0


def path_timing(link: LinkSpec | None, factor: float = 1.0) -> Timing:
    """How long cases wait on a path with this link (None: clean; `factor` scales the clean
    path's waits)."""
    if link is None:
        return Timing(factor=factor)
    up, down = link.uplink, link.downlink
    bursty = any(isinstance(d.loss, GilbertElliottLoss) for d in (up, down))
    return Timing(
        rtt_s=link.base_rtt_ms / 1e3,
        jitter_s=(up.jitter_ms + down.jitter_ms) / 1e3,
        outage_s=BURST_OUTAGE_S if bursty else 0.0,
        lossy=max(up.mean_loss, down.mean_loss) > 0 or bursty,
    )


async def _detect(ctx: CaseContext) -> tuple[bool, bool]:
    """(serves /counter, serves the watch route), asked over h2 or h3."""

    async def get(path: str) -> tuple[int | None, bytes]:
        if ctx.endpoint.h2:
            async with open_h2(ctx) as wire:
                await wire.send_headers(
                    1, wire.request_headers("GET", path, ctx.endpoint.authority)
                )
                st = wire.stream(1)
                await wire.wait_for(lambda: st.ended or st.reset is not None, ctx.wait(5.0))
                return st.status, bytes(st.body)
        async with open_quic(ctx) as q:
            rs = await q.response(q.get(path), ctx.wait(5.0))
            return rs.status, bytes(rs.body)

    status, body = await get(routes.COUNTER)
    counter = status == 200 and routes.counter_value(body) is not None
    status, _ = await get(routes.watch_path(1, 1))
    return counter, status == 200


class UrlTarget:
    """A server at https://HOST:PORT on loopback or a lab address; the client runs here."""

    paths: tuple[PathKind, ...] = ("clean",)

    def __init__(self, url: str, *, ca_file: Path | None = None, insecure: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise BadInput(f"{url!r}: give https://HOST:PORT")
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise BadInput(f"{url}: use an IP address or localhost (no name lookups)") from None
        if not (address.is_loopback or str(address) in tls.LAB_SERVER_ADDRESSES):
            raise BadInput(f"{url}: only loopback or the lab's server addresses may be tested")
        if ca_file is None and not insecure:
            default = tls.DEFAULT_CERT_DIR / "ca.pem"
            ca_file = default if default.exists() else None
        self.url = url
        self.name = url
        self.endpoint = Endpoint(
            host=str(address),
            port=parts.port or 443,
            server_name=parts.hostname if parts.hostname == "localhost" else "localhost",
            ca_file=None if insecure else ca_file,
        )

    def __enter__(self) -> UrlTarget:
        ep = self.endpoint
        h2, h3 = probe.tcp_ready(ep.host, ep.port), probe.quic_ready(ep.host, ep.port, 1.0)
        if not (h2 or h3):
            raise PeerError(f"nothing answers at {self.url} (neither TCP nor QUIC)")
        self.endpoint = dataclasses.replace(ep, h2=h2, h3=h3)
        counter, watch = trio.run(_detect, self.context("clean"))
        self.endpoint = dataclasses.replace(self.endpoint, counter=counter, watch=watch)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def context(self, path: PathKind, artifacts: Path | None = None) -> CaseContext:
        return CaseContext(self.endpoint, plain_socket, path, Timing(), artifacts=artifacts)

    @contextlib.contextmanager
    def on_path(self, path: PathKind) -> Iterator[None]:
        yield

    def recover(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        ep = self.endpoint
        return {"url": self.url, "h2": ep.h2, "h3": ep.h3, "counter": ep.counter, "watch": ep.watch}


@dataclasses.dataclass
class _Launch:
    """How to start one server process in the server namespace and tell that it is ready."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ready: Callable[[], bool]  # called inside the server namespace, ~0.2 s at most


class ServerProcess(ServerControl):
    """One server process in the server namespace (lab.conform.context.ServerControl)."""

    def __init__(self, topo: Topology, launch: _Launch, log: Path) -> None:
        self.topo = topo
        self.launch = launch
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.drained = False

    def start(self) -> None:
        """Start it and wait until it is ready; PeerError otherwise."""
        lc = self.launch
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                self.topo.run_in(self.topo.server_ns, lc.argv),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=lc.cwd,
                env={**os.environ, **lc.env},
                start_new_session=True,  # Ctrl-C reaches lab conform only; it stops the rest
            )
        self.drained = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise PeerError(f"server exited with {self.proc.returncode}: {tail(self.log)}")
            with nsenter.enter(self.topo.server_ns):
                if lc.ready():
                    return
            if time.monotonic() > deadline:
                raise PeerError(f"server not ready after {READY_TIMEOUT_S:g} s: {tail(self.log)}")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s)

    def drain(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.drained = True
            self.proc.send_signal(signal.SIGTERM)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.drained = True

    def restart(self) -> None:
        self.stop()
        self.start()

    def recover(self) -> None:
        """After a drain or kill: wait for the exit (bounded), then start again."""
        if self.drained or self.exited() is not None:
            self.restart()


class ServerTarget:
    """A server the lab starts in its namespaces (see the module docstring)."""

    def __init__(
        self,
        server: str,
        *,
        link: LinkSpec | None = None,
        seed: int = 1,
        keep: Path | None = None,
        wait_factor: float = 1.0,
    ) -> None:
        if server not in SERVERS:
            raise BadInput(f"unknown server {server!r}; known: {', '.join(SERVERS)}")
        if server == "go" and "go" not in registry.IMPLEMENTATIONS:
            raise HostNotCapable("the Go server is not in lab.peers.registry on this tree")
        if server == "go" and not Path(registry.get("go").argv_template[0]).exists():
            raise HostNotCapable("the Go server is not built (scripts/build-go.sh)")
        if server in ("caddy", "gtlsserver"):
            binary = "caddy" if server == "caddy" else ngtcp2.SERVER_BINARY
            if shutil.which(binary) is None:
                raise HostNotCapable(f"{binary} is not installed (scripts/install.sh)")
        self.name = server
        self.link = link
        self.seed = seed
        self.keep = keep  # copy server logs here at the end
        self.wait_factor = wait_factor  # scales the clean path's waits (Timing.factor)
        self.paths: tuple[PathKind, ...] = ("clean", "impaired") if link else ("clean",)
        self._stack = contextlib.ExitStack()
        self._emulator: EmulatorProcess | None = None
        self.topo: Topology | None = None
        self.process: ServerProcess | None = None

    # --- lifetime -----------------------------------------------------------------------
    def __enter__(self) -> ServerTarget:
        try:
            self._up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _up(self) -> None:
        stack = self._stack
        topo = self.topo = Topology(tun_steering=self.link is not None)
        owned(stack, f"topology {topo.prefix}", topo.down)
        topo.up()
        self.workdir = create_workdir(topo.prefix)
        owned(stack, f"work directory of {topo.prefix}", functools.partial(self._remove_workdir))
        self.certs = tls.ensure_certs(self.workdir / "tls", pad_bytes=PAD_BYTES)
        if self.link is not None:
            self._start_emulator(
                LinkSpec(uplink=DirectionSpec(), downlink=DirectionSpec()), "clean"
            )
        self.process = ServerProcess(topo, self._launch(SERVER_PORT), self.workdir / "server.log")
        owned(stack, f"{self.name} server", self.process.stop)
        self.process.start()
        self.endpoint = Endpoint(
            host=topo.server_v4,
            port=SERVER_PORT,
            ca_file=self.certs.ca_cert,
            h2=self.name != "gtlsserver",
            sizes=None if self.name in ("reference", "go") else frozenset(routes.SIZES),
        )
        counter, watch = trio.run(_detect, self.context("clean"))
        self.endpoint = dataclasses.replace(self.endpoint, counter=counter, watch=watch)

    def __exit__(self, *exc: object) -> None:
        with deferred_interrupts():  # a second Ctrl-C must not cut the teardown short
            if self.keep is not None and self.process is not None:
                self.keep.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    shutil.copy(self.process.log, self.keep / f"{self.name}-server.log")
            self._stack.close()

    def _remove_workdir(self) -> None:
        if self.topo is not None:
            remove_workdir(self.topo.prefix)

    # --- the server ---------------------------------------------------------------------
    def _launch(self, port: int, *, retry: bool = False) -> _Launch:
        """The process of this server kind on `port` (`retry`: Retry for every Initial)."""
        assert self.topo is not None
        workdir = self.workdir / ("server-retry" if retry else "server")
        if self.name == "gtlsserver":
            return self._gtls_launch(port, workdir, retry)
        impl = registry.get(self.name)
        ctx = registry.ServerContext(
            host="::",
            port=port,
            workdir=workdir,
            cert_dir=self.workdir / "tls",
            bytes_sizes=routes.SIZES,
        )
        spec = impl.launch(ctx)
        argv = list(spec.argv)
        if retry:
            argv += ["--h3-retry-above", "0"]
        return _Launch(
            argv, spec.env, spec.cwd or workdir, functools.partial(impl.ready, ctx, timeout_s=0.2)
        )

    def _gtls_launch(self, port: int, workdir: Path, retry: bool) -> _Launch:
        assert self.topo is not None
        htdocs = workdir / "htdocs"
        caddy.write_bytes_files(htdocs, routes.SIZES)
        (htdocs / "healthz").write_bytes(b"ok")
        args = ngtcp2.ServerArgs(
            host=self.topo.server_v4,
            port=port,
            key_file=self.certs.key,
            cert_file=self.certs.cert,
            htdocs=htdocs,
            extra=("--validate-addr",) if retry else (),
        )
        host = self.topo.server_v4
        ready = functools.partial(probe.wait_ready, host, port, tcp=False, udp=True, timeout_s=0.2)
        return _Launch(ngtcp2.server_argv(args), {}, workdir, ready)

    @contextlib.contextmanager
    def retry_server(self) -> Iterator[Endpoint]:
        """A second instance answering every Initial with Retry, for the body of the block."""
        assert self.topo is not None
        log = self.workdir / "server-retry.log"
        proc = ServerProcess(self.topo, self._launch(RETRY_PORT, retry=True), log)
        try:
            proc.start()
            yield dataclasses.replace(self.endpoint, port=RETRY_PORT)
        finally:
            proc.stop()

    def _retry_factory(self) -> Callable[[], contextlib.AbstractContextManager[Endpoint]] | None:
        return self.retry_server if self.name in ("reference", "gtlsserver") else None

    # --- paths --------------------------------------------------------------------------
    def _start_emulator(self, link: LinkSpec, label: str) -> None:
        assert self.topo is not None
        emu = EmulatorProcess(self.topo, link, self.seed, self.workdir / "emulator" / label)
        owned(self._stack, f"emulator ({label})", emu.kill)
        emu.start()
        self._emulator = emu

    def _stop_emulator(self) -> None:
        if self._emulator is not None:
            with contextlib.suppress(Exception):
                self._emulator.stop()
            self._emulator = None

    @contextlib.contextmanager
    def on_path(self, path: PathKind) -> Iterator[None]:
        """Run the block on `path`: with the impaired link in the emulator for "impaired"."""
        if path == "clean" or self.link is None:
            yield
            return
        self._stop_emulator()
        self._start_emulator(self.link, "impaired")
        try:
            yield
        finally:
            self._stop_emulator()

    def context(self, path: PathKind, artifacts: Path | None = None) -> CaseContext:
        topo = self.topo
        assert topo is not None
        return CaseContext(
            self.endpoint,
            functools.partial(topo.socket, topo.client_ns),
            path,
            path_timing(self.link if path == "impaired" else None, self.wait_factor),
            server=self.process,
            retry_server=self._retry_factory(),
            artifacts=artifacts,
            client_argv=functools.partial(_in_client, topo),
        )

    def recover(self) -> None:
        """Restart the server after a case drained or killed it."""
        if self.process is not None:
            self.process.recover()

    def describe(self) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "server": self.name,
            "version": _version(self.name),
            "url": f"https://{ep.host}:{ep.port}",
            "h2": ep.h2,
            "h3": ep.h3,
            "counter": ep.counter,
            "watch": ep.watch,
            "certificate_padding_bytes": PAD_BYTES,
        }


def _in_client(topo: Topology, argv: Sequence[str]) -> list[str]:
    return topo.run_in(topo.client_ns, argv)


def _version(server: str) -> str | None:
    argv = (
        ngtcp2.version_argv(ngtcp2.SERVER_BINARY)
        if server == "gtlsserver"
        else list(registry.get(server).version_argv)
    )
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
        lines = (p.stdout or p.stderr).strip().splitlines()
        return lines[0] if lines else None
    return None
