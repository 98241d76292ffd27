"""Fixtures for interop tests: third-party peers and the lab server as real processes on loopback.

Every process is started through lab.peers.proc.running, which stops it in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_helpers import HOST, SIZES, Server, need

from lab.http import tls
from lab.http.tls import CertPaths
from lab.peers import caddy, ngtcp2, probe, registry
from lab.peers.proc import free_port, running


@pytest.fixture(scope="session")
def lab_certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """The lab's CA and leaf, issued once per session into a temporary directory."""
    return tls.ensure_certs(tmp_path_factory.mktemp("tls"))


def _start(
    impl: registry.ServerImplementation, workdir: Path, certs: CertPaths
) -> Iterator[Server]:
    ctx = registry.ServerContext(
        host=HOST,
        port=free_port(HOST),
        workdir=workdir,
        cert_dir=certs.cert.parent,
        bytes_sizes=SIZES,
    )
    with running(impl.launch(ctx), workdir / "logs", impl.name) as proc:
        ready = impl.ready(ctx, timeout_s=20)
        assert ready, f"{impl.name} not ready:\n{proc.output()[-3000:]}"
        yield Server(impl.name, HOST, ctx.port, certs.ca_cert, proc, workdir)


@pytest.fixture
def caddy_server(tmp_path: Path, lab_certs: CertPaths) -> Iterator[Server]:
    """Caddy (quic-go) through the registry: the lab's certificate, h2 + h3 on one port."""
    need("caddy")
    yield from _start(registry.CADDY, tmp_path / "caddy", lab_certs)


@pytest.fixture
def caddy_internal_tls(tmp_path: Path) -> Iterator[Server]:
    """Caddy with `tls internal` (its own offline CA), configured through lab.peers.caddy."""
    need("caddy")
    site = caddy.CaddySite(port=free_port(HOST), workdir=tmp_path / "caddy-internal")
    config = caddy.prepare(site, SIZES)
    spec = registry.LaunchSpec(caddy.argv(config), caddy.env(site.workdir), site.workdir)
    with running(spec, site.workdir / "logs", "caddy") as proc:
        assert probe.wait_ready(HOST, site.port, timeout_s=20), proc.output()[-3000:]
        yield Server("caddy", HOST, site.port, caddy.ca_root(site.workdir), proc, site.workdir)


@pytest.fixture
def gtls_server(tmp_path: Path, lab_certs: CertPaths) -> Iterator[Server]:
    """ngtcp2's gtlsserver serving /bytes/{n} files written with the reference body."""
    need(ngtcp2.SERVER_BINARY)
    workdir = tmp_path / "gtlsserver"
    caddy.write_bytes_files(workdir / "htdocs", SIZES)
    args = ngtcp2.ServerArgs(
        host=HOST,
        port=free_port(HOST),
        key_file=lab_certs.key,
        cert_file=lab_certs.cert,
        htdocs=workdir / "htdocs",
        quiet=False,  # its packet log shows received 0-RTT packets
        extra=("--no-quic-dump", "--no-http-dump"),
    )
    spec = registry.LaunchSpec(ngtcp2.server_argv(args), {}, workdir)
    with running(spec, workdir / "logs", "gtlsserver") as proc:
        ok = probe.wait_ready(HOST, args.port, tcp=False, udp=True, timeout_s=20)
        assert ok, proc.output()[-3000:]
        yield Server("gtlsserver", HOST, args.port, lab_certs.ca_cert, proc, workdir)


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The lab's reference server (`python -m lab serve`), started through the registry."""
    workdir = tmp_path_factory.mktemp("lab-server")
    certs = tls.ensure_certs(workdir / "tls")
    yield from _start(registry.REFERENCE, workdir / "run", certs)
