"""nghttp2's HTTP/2 clients (Debian nghttp2-client; HTTP/2 only in this build): h2load and nghttp.

`h2load` is the load generator: N requests over C connections × M concurrent streams; its summary
lines are parsed by `parse_h2load`. `nghttp` fetches URLs: the body goes to stdout and, with
`--har`, the response heads to a HAR (JSON) file, parsed by `parse_har`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lab.peers.argv import option, switch

H2LOAD = "h2load"
NGHTTP = "nghttp"

_TIME_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class H2loadArgs:
    """Arguments of one h2load run."""

    urls: tuple[str, ...]
    requests: int = 10_000  # -n
    clients: int = 10  # -c: connections
    max_concurrent_streams: int = 10  # -m: streams per connection
    threads: int = 1  # -t
    window_bits: int | None = None  # -w: stream window 2**w - 1 (max 30)
    connection_window_bits: int | None = None  # -W
    headers: tuple[str, ...] = ()  # -H "name: value"
    extra: tuple[str, ...] = ()


def h2load_argv(a: H2loadArgs, binary: str = H2LOAD) -> list[str]:
    """The h2load command line (TLS with ALPN h2 for https:// URLs)."""
    return [
        binary,
        f"--requests={a.requests}",
        f"--clients={a.clients}",
        f"--max-concurrent-streams={a.max_concurrent_streams}",
        f"--threads={a.threads}",
        *option("--window-bits", a.window_bits),
        *option("--connection-window-bits", a.connection_window_bits),
        *(f"--header={h}" for h in a.headers),
        *a.extra,
        *a.urls,
    ]


@dataclass(frozen=True)
class H2loadResult:
    """h2load's summary; durations in seconds, traffic in bytes."""

    protocol: str | None  # "Application protocol:" (h2)
    duration_s: float
    req_per_s: float
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    traffic_bytes: int
    data_bytes: int  # response body bytes


_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"^traffic: \S+ \((\d+)\) total, .*, \S+ \((\d+)\) data")
_PROTO = re.compile(r"^Application protocol: (\S+)")


def parse_h2load(text: str) -> H2loadResult:
    """Parse h2load's stdout; raises ValueError when the summary is missing."""
    found: dict[str, re.Match[str]] = {}
    for line in text.splitlines():
        for key, rx in (
            ("finished", _FINISHED),
            ("requests", _REQUESTS),
            ("status", _STATUS),
            ("traffic", _TRAFFIC),
            ("proto", _PROTO),
        ):
            if key not in found and (m := rx.match(line.strip())):
                found[key] = m
    missing = {"finished", "requests", "status", "traffic"} - found.keys()
    if missing:
        raise ValueError(f"h2load output lacks {sorted(missing)}:\n{text[-2000:]}")
    fin, req, st, tr = found["finished"], found["requests"], found["status"], found["traffic"]
    proto = found.get("proto")
    return H2loadResult(
        protocol=proto[1] if proto else None,
        duration_s=float(fin[1]) * _TIME_UNIT[fin[2]],
        req_per_s=float(fin[3]),
        total=int(req[1]),
        started=int(req[2]),
        done=int(req[3]),
        succeeded=int(req[4]),
        failed=int(req[5]),
        errored=int(req[6]),
        timeout=int(req[7]),
        status_2xx=int(st[1]),
        status_3xx=int(st[2]),
        status_4xx=int(st[3]),
        status_5xx=int(st[4]),
        traffic_bytes=int(tr[1]),
        data_bytes=int(tr[2]),
    )


@dataclass(frozen=True)
class NghttpArgs:
    """Arguments of one nghttp fetch."""

    urls: tuple[str, ...]
    har_file: Path | None = None  # write response heads (HAR 1.2 JSON)
    null_out: bool = False  # -n: discard bodies instead of writing them to stdout
    window_bits: int | None = None  # -w
    connection_window_bits: int | None = None  # -W
    timeout: str = "30s"
    extra: tuple[str, ...] = ()


def nghttp_argv(a: NghttpArgs, binary: str = NGHTTP) -> list[str]:
    """The nghttp command line; bodies go to stdout unless null_out."""
    return [
        binary,
        f"--timeout={a.timeout}",
        *option("--har", a.har_file),
        *switch("--null-out", a.null_out),
        *option("--window-bits", a.window_bits),
        *option("--connection-window-bits", a.connection_window_bits),
        *a.extra,
        *a.urls,
    ]


@dataclass(frozen=True)
class HarEntry:
    """One response from a HAR file."""

    url: str
    http_version: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body_bytes: int  # content.size: decoded body bytes

    def header(self, name: str) -> str | None:
        """The first value of a response header, or None."""
        return next((v for k, v in self.headers if k == name), None)


def parse_har(text: str) -> list[HarEntry]:
    """The responses of a HAR 1.2 document as nghttp writes it."""
    out = []
    for e in json.loads(text)["log"]["entries"]:
        resp = e["response"]
        headers = tuple((h["name"], h["value"]) for h in resp["headers"])
        out.append(
            HarEntry(
                url=e["request"]["url"],
                http_version=e["request"]["httpVersion"],
                status=int(resp["status"]),
                headers=headers,
                body_bytes=int(resp.get("content", {}).get("size", -1)),
            )
        )
    return out


def version_argv(binary: str = H2LOAD) -> list[str]:
    """Prints e.g. `h2load nghttp2/1.52.0`."""
    return [binary, "--version"]
