"""Caddy (2.6, quic-go) as a server under test: its Caddyfile, its files and its command line.

One Caddy process serves HTTP/1.1 + HTTP/2 on TCP and HTTP/3 on UDP on the same port, offline:
`admin off`, `skip_install_trust`, `auto_https disable_redirects`, certificate storage and
Caddy's XDG directories inside a per-run work directory. TLS is either `tls internal` (Caddy's own
CA, root at `ca_root(workdir)`) or the lab's leaf certificate, so that both stacks send the same
chain. Routes, with the same body semantics as the reference server:

- `GET /bytes/{n}`: the file `<site>/bytes/<n>`, pre-generated with the reference server's body
  generator (n bytes, byte-identical to the lab's `/bytes/{n}`). Only the sizes written at
  preparation exist; any other n is a 404 (the reference server computes any n on the fly).
  Caddy adds `etag`, `last-modified` and `accept-ranges` and sends no `lab-early-data` header.
- `GET /healthz`: `ok`.

Caddy cannot generate timed events, so the watch and List routes are not served (see
docs/peers.md). quic-go accepts 0-RTT whenever the ticket allows it; the proof of 0-RTT against
Caddy is the client's QUIC state (early data accepted by the server's EncryptedExtensions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lab.http import payload

LOOPBACK = ("127.0.0.1", "::1")
BodyWriter = Callable[[BinaryIO, int], None]  # writes exactly n body bytes to the file


@dataclass(frozen=True)
class CaddySite:
    """Where and how one Caddy instance serves; every path lives under `workdir`."""

    port: int
    workdir: Path
    names: tuple[str, ...] = ("localhost", *LOOPBACK)  # site addresses: SNI and :authority
    bind: tuple[str, ...] = LOOPBACK  # listen addresses (TCP and UDP)
    cert_file: Path | None = None  # None → `tls internal`
    key_file: Path | None = None
    protocols: tuple[str, ...] = ("h1", "h2", "h3")
    log_level: str = "ERROR"
    extra_routes: tuple[str, ...] = field(default_factory=tuple)  # raw Caddyfile lines

    @property
    def site_root(self) -> Path:
        """Document root; `/bytes/{n}` is `site_root / "bytes" / str(n)`."""
        return self.workdir / "site"

    @property
    def config_file(self) -> Path:
        """The Caddyfile written by `prepare`."""
        return self.workdir / "Caddyfile"


def _site_address(name: str, port: int) -> str:
    host = f"[{name}]" if ":" in name else name
    return f"https://{host}:{port}"


def render_caddyfile(site: CaddySite) -> str:
    """The Caddyfile text for `site` (pure)."""
    storage = site.workdir / "storage"
    tls = (
        f"tls {site.cert_file} {site.key_file}"
        if site.cert_file is not None and site.key_file is not None
        else "tls internal"
    )
    lines = [
        "{",
        "\tadmin off",
        "\tskip_install_trust",
        "\tauto_https disable_redirects",
        f"\tstorage file_system {storage}",
        f"\tdefault_sni {site.names[0]}",
        "\tservers {",
        f"\t\tprotocols {' '.join(site.protocols)}",
        "\t}",
        "\tlog {",
        "\t\toutput stderr",
        f"\t\tlevel {site.log_level}",
        "\t}",
        "}",
        "",
        ", ".join(_site_address(n, site.port) for n in site.names) + " {",
        *([f"\tbind {' '.join(site.bind)}"] if site.bind else []),
        f"\t{tls}",
        '\trespond /healthz "ok" 200',
        *(f"\t{line}" for line in site.extra_routes),
        f"\troot * {site.site_root}",
        "\tfile_server",
        "}",
        "",
    ]
    return "\n".join(lines)


def reference_body_writer(out: BinaryIO, n: int) -> None:
    """Write the reference server's n-byte `/bytes/{n}` body (lab.http.payload)."""
    for chunk in payload.iter_body(n, 1 << 20):
        out.write(chunk)


def write_bytes_files(
    site_root: Path, sizes: Iterable[int], writer: BodyWriter | None = None
) -> list[Path]:
    """Write `bytes/<n>` for each size (kept when it already has n bytes); returns the paths."""
    writer = writer or reference_body_writer
    folder = site_root / "bytes"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in sorted(set(sizes)):
        path = folder / str(n)
        if not (path.exists() and path.stat().st_size == n):
            tmp = path.with_suffix(".part")
            with tmp.open("wb") as out:
                writer(out, n)
            tmp.replace(path)
        paths.append(path)
    return paths


def prepare(site: CaddySite, sizes: Iterable[int] = (), writer: BodyWriter | None = None) -> Path:
    """Create the work directory, the `/bytes` files and the Caddyfile; returns the Caddyfile."""
    for sub in ("storage", "config", "data"):
        (site.workdir / sub).mkdir(parents=True, exist_ok=True)
    write_bytes_files(site.site_root, sizes, writer)
    site.config_file.write_text(render_caddyfile(site))
    return site.config_file


def argv(config_file: Path, binary: str = "caddy") -> list[str]:
    """The command that runs Caddy in the foreground with that Caddyfile."""
    return [binary, "run", "--config", str(config_file), "--adapter", "caddyfile"]


def env(workdir: Path) -> dict[str, str]:
    """Environment overrides that keep Caddy's autosave and data out of $HOME."""
    return {
        "XDG_CONFIG_HOME": str(workdir / "config"),
        "XDG_DATA_HOME": str(workdir / "data"),
    }


def version_argv(binary: str = "caddy") -> list[str]:
    """Prints e.g. `2.6.2`."""
    return [binary, "version"]


def ca_root(workdir: Path) -> Path:
    """Root certificate of Caddy's internal CA (exists once Caddy has started with tls internal)."""
    return workdir / "storage" / "pki" / "authorities" / "local" / "root.crt"
