"""ngtcp2's example HTTP/3 peers (Debian ngtcp2-client / ngtcp2-server, GnuTLS builds, nghttp3).

`gtlsserver` serves files from a document root and, for a path of digits `/N`, N zero bytes
generated on the fly (up to --max-dyn-length). `gtlsclient` does not verify certificates; with
`--session-file` and `--tp-file` it stores a ticket and the server's transport parameters on the
first run and sends the request as 0-RTT on the next. Without --quiet it logs, on stderr, every
response header (`http: stream 0x0 [:status: 200]`), the body sizes, the packets it sends
(`type=0RTT` for early data) and `Early data was rejected by server` when it was rejected;
`parse_client_log` turns that into a `ClientLog`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lab.http.response_head import ResponseHead
from lab.peers.argv import option, switch

SERVER_BINARY = "gtlsserver"
CLIENT_BINARY = "gtlsclient"


@dataclass(frozen=True)
class ServerArgs:
    """Arguments of `gtlsserver ADDR PORT KEY CERT`."""

    host: str
    port: int
    key_file: Path
    cert_file: Path
    htdocs: Path | None = None  # document root (default: the working directory)
    qlog_dir: Path | None = None
    quiet: bool = True
    cc: str = "cubic"
    max_dyn_length: str | None = None  # e.g. "200M": cap of the /N generated bodies
    extra: tuple[str, ...] = ()


def server_argv(a: ServerArgs, binary: str = SERVER_BINARY) -> list[str]:
    """The gtlsserver command line."""
    return [
        binary,
        *switch("--quiet", a.quiet),
        *option("--htdocs", a.htdocs),
        *option("--qlog-dir", a.qlog_dir),
        *option("--max-dyn-length", a.max_dyn_length),
        f"--cc={a.cc}",
        *a.extra,
        a.host,
        str(a.port),
        str(a.key_file),
        str(a.cert_file),
    ]


@dataclass(frozen=True)
class ClientArgs:
    """Arguments of `gtlsclient HOST PORT URI...` (URIs carry the :authority and :path)."""

    host: str
    port: int
    urls: tuple[str, ...]
    requests: int | None = None  # -n: total requests, URLs wrapped; None = one per URL
    session_file: Path | None = None  # with tp_file: resumption and 0-RTT on the second run
    tp_file: Path | None = None
    qlog_dir: Path | None = None
    download_dir: Path | None = None  # save bodies (file name = last path component)
    quiet: bool = False  # False: log headers and packets on stderr (bodies/frames not dumped)
    disable_early_data: bool = False
    sni: str | None = None
    method: str = "GET"
    timeout: str = "30s"  # idle timeout
    cc: str = "cubic"
    extra: tuple[str, ...] = ()


def client_argv(a: ClientArgs, binary: str = CLIENT_BINARY) -> list[str]:
    """The gtlsclient command line; it exits when every stream is closed."""
    return [
        binary,
        "--exit-on-all-streams-close",
        "--no-quic-dump",
        "--no-http-dump",
        *switch("--quiet", a.quiet),
        *option("--session-file", a.session_file),
        *option("--tp-file", a.tp_file),
        *option("--qlog-dir", a.qlog_dir),
        *option("--download", a.download_dir),
        *option("--sni", a.sni),
        *option("--nstreams", a.requests),
        *switch("--disable-early-data", a.disable_early_data),
        *option("--http-method", None if a.method == "GET" else a.method),
        f"--timeout={a.timeout}",
        f"--cc={a.cc}",
        *a.extra,
        a.host,
        str(a.port),
        *a.urls,
    ]


@dataclass
class StreamLog(ResponseHead):
    """What gtlsclient logged about one request stream."""

    body_bytes: int = 0


@dataclass
class ClientLog:
    """gtlsclient's stderr, parsed: per-stream responses and handshake facts."""

    streams: dict[int, StreamLog] = field(default_factory=dict)
    handshake_completed: bool = False
    alpn: str | None = None
    early_data_sent: bool = False  # a 0-RTT packet was sent
    early_data_rejected: bool = False


_HEADER = re.compile(r"^http: stream (0x[0-9a-f]+) \[(.+?): (.*)\]$")
_BODY = re.compile(r"^http: stream (0x[0-9a-f]+) body (\d+) bytes$")
_ALPN = re.compile(r"^Negotiated ALPN is (\S+)$")


def parse_client_log(text: str) -> ClientLog:
    """Parse gtlsclient's (non-quiet) stderr."""
    log = ClientLog()
    for line in text.splitlines():
        if m := _HEADER.match(line):
            stream = log.streams.setdefault(int(m[1], 16), StreamLog())
            stream.headers.append((m[2], m[3]))
        elif m := _BODY.match(line):
            log.streams.setdefault(int(m[1], 16), StreamLog()).body_bytes += int(m[2])
        elif line == "QUIC handshake has completed":
            log.handshake_completed = True
        elif m := _ALPN.match(line):
            log.alpn = m[1]
        elif "Early data was rejected by server" in line:
            log.early_data_rejected = True
        elif " pkt tx " in line and "type=0RTT" in line:
            log.early_data_sent = True
    return log


def version_argv(binary: str = CLIENT_BINARY) -> list[str]:
    """There is no --version; the Debian package version is the version (dpkg-query)."""
    package = "ngtcp2-client" if binary == CLIENT_BINARY else "ngtcp2-server"
    return ["dpkg-query", "-W", "-f=${Version}", package]
