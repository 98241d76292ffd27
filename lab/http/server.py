"""The reference server process: HTTP/2 on TCP and HTTP/3 on UDP, same port, one trio loop.

`serve()` binds TCP first (so port 0 picks one free port for both), then starts the h2 listener
and, when available, the QUIC listener of lab.http.h3_server on that same port. Both drain on
the `shutdown` event. `run_server()` is the blocking entry point of `lab serve`: SIGTERM and
SIGINT set `shutdown`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from lab.http.app import handle
from lab.http.h2_server import serve_h2
from lab.http.h3_server import serve_h3
from lab.http.settings import H2ServerLimits, QuicServerLimits, ServerConfig
from lab.http.tcp import bind_tcp
from lab.http.tls import ensure_certs, server_ssl_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """What a started server reports: its effective config and where it listens."""

    config: ServerConfig  # port resolved, certificate paths filled in
    tcp_addresses: list[str]  # "[host]:port" of every TCP listener
    h3: bool  # the UDP/QUIC listener runs
    ca_file: Path | None  # the CA that signed the leaf (None when the caller gave a cert)
    notes: list[str] = field(default_factory=list)


def prepare_config(
    config: ServerConfig, cert_dir: Path | None = None
) -> tuple[ServerConfig, Path | None]:
    """Fill in certificate paths (issuing the lab's CA and leaf when none are given)."""
    if config.cert_file is not None and config.key_file is not None:
        return config, None
    paths = ensure_certs(cert_dir)
    return dataclasses.replace(config, cert_file=paths.cert, key_file=paths.key), paths.ca_cert


async def serve(
    config: ServerConfig,
    *,
    shutdown: trio.Event | None = None,
    cert_dir: Path | None = None,
    h3: bool = True,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run h2 (TCP) and h3 (UDP) on one port until `shutdown` is set, then drain and return.

    `task_status.started()` receives a ServerInfo once both listeners are bound.
    """
    shutdown = shutdown if shutdown is not None else trio.Event()
    config, ca_file = prepare_config(config, cert_dir)
    socks = bind_tcp(config.host, config.port)
    port = socks[0].getsockname()[1]
    config = dataclasses.replace(config, port=port)
    addresses = [_fmt(s.getsockname()) for s in socks]
    assert config.cert_file is not None and config.key_file is not None
    ssl_context = server_ssl_context(config.cert_file, config.key_file)
    handler = functools.partial(handle, config=config)
    notes: list[str] = []
    run_h3 = h3
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(serve_h2, config, handler, ssl_context, socks, shutdown=shutdown)
            )
            if run_h3:
                await nursery.start(functools.partial(serve_h3, config, handler, shutdown=shutdown))
            task_status.started(ServerInfo(config, addresses, run_h3, ca_file, notes))
    finally:
        for s in socks:
            s.close()


@contextlib.asynccontextmanager
async def running_server(
    config: ServerConfig, *, cert_dir: Path | None = None, h3: bool = True
) -> AsyncIterator[ServerInfo]:
    """Run `serve` in the background for the body of the `async with`; always stopped after.

    On exit the server drains gracefully (GOAWAY), bounded by `config.grace_s`.
    """
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            functools.partial(serve, config, shutdown=shutdown, cert_dir=cert_dir, h3=h3)
        )
        try:
            yield info
        finally:
            shutdown.set()


def _fmt(addr: tuple) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def run_server(
    config: ServerConfig,
    *,
    cert_dir: Path | None = None,
    on_ready: Callable[[ServerInfo], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (blocking; for `lab serve`).

    The first signal starts the graceful shutdown (GOAWAY, in-flight requests get
    `config.grace_s`); a second one stops at once.
    """

    async def main() -> None:
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, signals, shutdown, nursery.cancel_scope)
                info = await nursery.start(_serve_then_cancel, config, shutdown, cert_dir, nursery)
                if on_ready is not None:
                    on_ready(info)

    trio.run(main)


async def _serve_then_cancel(
    config: ServerConfig,
    shutdown: trio.Event,
    cert_dir: Path | None,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await serve(config, shutdown=shutdown, cert_dir=cert_dir, task_status=task_status)
    finally:
        nursery.cancel_scope.cancel()  # stops the signal watcher once the server has drained


async def _watch_signals(
    signals: AsyncIterator[int], shutdown: trio.Event, scope: trio.CancelScope
) -> None:
    async for signum in signals:
        if shutdown.is_set():
            log.warning("second signal: stopping now")
            scope.cancel()
            return
        log.info("%s: graceful shutdown", signal.Signals(signum).name)
        shutdown.set()


def _lowat(value: int | None) -> str:
    return "kernel-default" if value is None else f"{value}B"


def _bounds(limits: H2ServerLimits | QuicServerLimits) -> str:
    """Every field of a bounds dataclass as name=value (units are in the names: _s, _bytes)."""
    return " ".join(f"{f.name}={getattr(limits, f.name)}" for f in dataclasses.fields(limits))


def describe(info: ServerInfo) -> str:
    """What `lab serve` prints when ready: addresses, certificate, protocol settings, the
    servers' bounds; the `grace_s=` line comes last."""
    cfg = info.config
    lines = [f"lab serve: listening on port {cfg.port}"]
    lines += [f"  h2   tcp  {a}  (TLS 1.3, ALPN h2, http/1.1)" for a in info.tcp_addresses]
    if info.h3:
        engine = cfg.quic.engine
        lines.append(f"  h3   udp  [{cfg.host}]:{cfg.port}  (QUIC, ALPN h3, engine {engine})")
    lines += [f"  note: {n}" for n in info.notes]
    ca = f" (CA {info.ca_file})" if info.ca_file else ""
    lines.append(f"  certificate {cfg.cert_file}{ca}")
    h2s, qs = cfg.h2, cfg.quic
    lines.append(
        f"  h2 settings: max_concurrent_streams={h2s.max_concurrent_streams} "
        f"stream_window={h2s.initial_stream_window_bytes} "
        f"connection_window={h2s.connection_window_bytes} "
        f"max_frame={h2s.max_frame_size_bytes} tcp_congestion={h2s.tcp_congestion} "
        f"tcp_notsent_lowat={_lowat(h2s.tcp_notsent_lowat_bytes)}"
    )
    lines.append(
        f"  quic settings: engine={qs.engine} cc={qs.congestion_control} "
        f"max_data={qs.max_data_bytes} max_stream_data={qs.max_stream_data_bytes} "
        f"idle_timeout_s={qs.idle_timeout_s} max_streams={qs.max_concurrent_streams} "
        f"qlog_dir={qs.qlog_dir}"
    )
    lines.append(f"  h2 bounds: {_bounds(cfg.h2_limits)}")
    lines.append(f"  h3 bounds: {_bounds(cfg.quic_limits)}")
    lines.append(f"  grace_s={cfg.grace_s} pods={cfg.pod_count}×{cfg.pod_size_bytes} B")
    return "\n".join(lines)
