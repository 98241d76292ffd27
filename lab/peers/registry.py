"""Server implementations a scenario can name (`server: reference | caddy | go`).

Each `ServerImplementation` is a command template plus a readiness check: the runner builds the
`LaunchSpec` for a cell with `launch(ctx)`, starts that argv in the server namespace, waits with
`ready(ctx)` (TCP accepts and QUIC answers on the same port), runs the workloads and stops the
process (SIGTERM, then SIGKILL). Adding a server = one `ServerImplementation` and a line in
`IMPLEMENTATIONS` (docs/peers.md, "How to add another server").
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.http import tls
from lab.peers import caddy, go, probe

# Route kinds a server may offer; workloads say which they need (see ROUTES_BY_WORKLOAD).
ROUTES_ALL = frozenset({"bytes", "healthz", "pods", "watch", "echo"})
ROUTES_BY_WORKLOAD: Mapping[str, frozenset[str]] = {
    "bulk": frozenset({"bytes"}),
    "multiplex": frozenset({"bytes"}),
    "rpc_under_load": frozenset({"bytes"}),
    "handshake": frozenset({"bytes"}),
    "watch": frozenset({"watch"}),
    "k8s_mix": frozenset({"pods", "watch"}),
}
WILDCARDS = frozenset({"::", "0.0.0.0", "*", ""})


@dataclass(frozen=True)
class ServerContext:
    """What the runner knows when it starts a server for one cell."""

    host: str  # listen address, also the address clients connect to
    port: int  # the same port on TCP (h2) and UDP (h3)
    workdir: Path  # scratch directory of this server instance (config, storage, logs)
    cert_dir: Path  # lab.http.tls.ensure_certs directory: ca.pem, cert.pem, key.pem
    bytes_sizes: tuple[int, ...] = ()  # the /bytes/{n} sizes the workloads will fetch
    server_name: str = "localhost"  # SNI and :authority the clients send
    extra_hosts: tuple[str, ...] = ()  # further listen addresses (e.g. the IPv6 one)
    # TCP_CONGESTION for servers that take it as a flag ("" = theirs; the runner also sets the
    # routes' congctl, which every implementation's TCP follows)
    tcp_congestion: str = ""
    max_streams: int = 100  # concurrent streams per connection, for servers with a flag for it


@dataclass(frozen=True)
class LaunchSpec:
    """A ready-to-start process: argv (no shell), environment overrides, working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


Prepare = Callable[[ServerContext], dict[str, str]]  # writes files; returns template values


def _no_prepare(ctx: ServerContext) -> dict[str, str]:
    return {}


def _no_env(ctx: ServerContext) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ServerImplementation:
    """One server under test: a command template, a preparation step and a readiness check.

    Placeholders in `argv_template`: {python} {host} {port} {workdir} {cert_dir} {server_name}
    {tcp_congestion} {max_streams} and whatever `prepare` returns (e.g. {config}).

    `quic_congestion` is the QUIC congestion controller the implementation always uses (a
    name as Linux calls the TCP one), or None when it follows `stack.quic_congestion_control`.
    """

    name: str
    description: str
    argv_template: tuple[str, ...]
    version_argv: tuple[str, ...]
    routes: frozenset[str]
    early_data_header: bool  # responses carry `lab-early-data: 1|0`
    prepare: Prepare = _no_prepare
    env: Callable[[ServerContext], dict[str, str]] = _no_env
    ready_check: Callable[..., bool] = probe.wait_ready
    quic_congestion: str | None = None

    def launch(self, ctx: ServerContext) -> LaunchSpec:
        """Prepare files and return the process to start for this context."""
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        values = {
            "python": sys.executable,
            "host": ctx.host,
            "port": str(ctx.port),
            "workdir": str(ctx.workdir),
            "cert_dir": str(ctx.cert_dir),
            "server_name": ctx.server_name,
            "tcp_congestion": ctx.tcp_congestion,
            "max_streams": str(ctx.max_streams),
            **self.prepare(ctx),
        }
        argv = [part.format(**values) for part in self.argv_template]
        return LaunchSpec(argv=argv, env=self.env(ctx), cwd=ctx.workdir)

    def ready(self, ctx: ServerContext, timeout_s: float = 15.0) -> bool:
        """Wait until TCP and QUIC answer on (connect host, port); False after timeout_s."""
        host = "::1" if ctx.host == "::" else "127.0.0.1" if ctx.host in WILDCARDS else ctx.host
        return self.ready_check(host, ctx.port, tcp=True, udp=True, timeout_s=timeout_s)

    def supports(self, workload_kind: str) -> bool:
        """True when every route that workload needs is served."""
        return not self.missing_routes(workload_kind)

    def missing_routes(self, workload_kind: str) -> list[str]:
        """The route kinds that workload needs and this server does not serve, sorted."""
        return sorted(ROUTES_BY_WORKLOAD.get(workload_kind, ROUTES_ALL) - self.routes)


# --- reference ----------------------------------------------------------------------------
REFERENCE = ServerImplementation(
    name="reference",
    description="the lab's own server: trio + h2 (TCP+TLS) and aioquic (QUIC) on one port",
    argv_template=(
        "{python}",
        "-m",
        "lab",
        "serve",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--cert-dir",
        "{cert_dir}",
    ),
    version_argv=(sys.executable, "-c", "import lab; print(getattr(lab, '__version__', '?'))"),
    routes=ROUTES_ALL,
    early_data_header=True,
)


# --- caddy --------------------------------------------------------------------------------
def caddy_site(ctx: ServerContext) -> caddy.CaddySite:
    """The Caddy site for a context: the lab's leaf certificate, so both stacks send one chain."""
    hosts = tuple(h for h in (ctx.host, *ctx.extra_hosts) if h not in WILDCARDS)
    names = tuple(dict.fromkeys((ctx.server_name, *hosts, *caddy.LOOPBACK)))
    certs = tls.ensure_certs(ctx.cert_dir, extra_sans=hosts)
    return caddy.CaddySite(
        port=ctx.port,
        workdir=ctx.workdir,
        names=names,
        bind=hosts,
        cert_file=certs.cert,
        key_file=certs.key,
    )


def _caddy_prepare(ctx: ServerContext) -> dict[str, str]:
    config = caddy.prepare(caddy_site(ctx), ctx.bytes_sizes)
    return {"config": str(config)}


CADDY = ServerImplementation(
    name="caddy",
    description="Caddy 2.6 (Go net/http for h2, quic-go for h3), /bytes from pre-written files",
    argv_template=("caddy", "run", "--config", "{config}", "--adapter", "caddyfile"),
    version_argv=tuple(caddy.version_argv()),
    routes=frozenset({"bytes", "healthz"}),
    early_data_header=False,
    prepare=_caddy_prepare,
    env=lambda ctx: caddy.env(ctx.workdir),
    quic_congestion=go.QUIC_GO_CONGESTION,  # Caddy 2.6 links quic-go 0.29
)


# --- go -----------------------------------------------------------------------------------
def _go_prepare(ctx: ServerContext) -> dict[str, str]:
    """The lab's leaf certificate (as for Caddy: both stacks send the same chain), and the
    largest /bytes size to compute before serving (Caddy's files are written beforehand too)."""
    hosts = tuple(h for h in (ctx.host, *ctx.extra_hosts) if h not in WILDCARDS)
    certs = tls.ensure_certs(ctx.cert_dir, extra_sans=hosts)
    warm = max(ctx.bytes_sizes, default=0)
    return {"cert": str(certs.cert), "key": str(certs.key), "warm_bytes": str(warm)}


GO = ServerImplementation(
    name="go",
    description=(
        "Go net/http (x/net/http2, kube-apiserver's settings) + quic-go http3.Server on one port,"
        " the route contract of docs/routes.md"
    ),
    argv_template=(
        str(go.SERVER_BINARY),
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--cert",
        "{cert}",
        "--key",
        "{key}",
        "--warm-bytes",
        "{warm_bytes}",
        "--tcp-cc",
        "{tcp_congestion}",
        "--max-streams",
        "{max_streams}",
    ),
    version_argv=tuple(go.version_argv()),
    routes=ROUTES_ALL,
    early_data_header=True,
    prepare=_go_prepare,
    quic_congestion=go.QUIC_GO_CONGESTION,
)


IMPLEMENTATIONS: dict[str, ServerImplementation] = {i.name: i for i in (REFERENCE, CADDY, GO)}


def get(name: str) -> ServerImplementation:
    """The implementation called `name`; KeyError lists the known ones."""
    try:
        return IMPLEMENTATIONS[name]
    except KeyError:
        raise KeyError(f"unknown server {name!r}; known: {sorted(IMPLEMENTATIONS)}") from None
