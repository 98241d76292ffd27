"""The target's routes the cases use (docs/http.md, "Routes") and what their bodies must be.

`/bytes/{n}` bodies are the lab's deterministic payload (lab.http.payload); Caddy and gtlsserver
serve the same bytes from files the lab writes (`SIZES`).
"""

from __future__ import annotations

import hashlib
from functools import cache

from lab.http import payload

HEALTHZ = "/healthz"
COUNTER = "/counter"  # POST increments it, GET reads it: "N\n" (per server process)
ECHO = "/echo"
SMALL = 1_000
MEDIUM = 100_000
LARGE = 1_048_576  # ≥ 1 MiB (H2-07)
KEY_UPDATE = 3_000_000
BIG = 5_000_000
SIZES = (SMALL, MEDIUM, LARGE, KEY_UPDATE, BIG)  # every /bytes size a case fetches
WATCH_EVENTS = 10  # a long response: 10 events, 100 ms apart
WATCH_INTERVAL_MS = 100


def bytes_path(n: int) -> str:
    return f"/bytes/{n}"


def watch_path(count: int = WATCH_EVENTS, interval_ms: int = WATCH_INTERVAL_MS) -> str:
    """A watch of `count` events, then the end of the response."""
    return f"/api/v1/watch/namespaces/default/pods?interval_ms={interval_ms}&count={count}"


@cache
def _expected(n: int) -> str:
    return payload.expected_sha256(n)


def body_ok(body: bytes | bytearray, n: int) -> bool:
    """True when `body` is the n-byte `/bytes/{n}` payload."""
    return len(body) == n and hashlib.sha256(body).hexdigest() == _expected(n)


def body_problem(body: bytes | bytearray, n: int) -> str | None:
    """None when `body` is the /bytes/{n} payload, else what is wrong with it."""
    if len(body) != n:
        return f"body of {len(body):,} bytes, expected {n:,}"
    return None if body_ok(body, n) else f"body of {n:,} bytes with the wrong SHA-256"


def counter_value(body: bytes | bytearray) -> int | None:
    """The value in a /counter response, or None when the body is not one."""
    text = bytes(body).strip()
    return int(text) if text.isdigit() else None
