"""0-RTT and replay safety (RFC 9001 §4.6, §9.2; RFC 8470; RFC 9114 §7.2.4.2, §10.9): Z-01 … Z-05.

Connection 1 gets a session ticket; connection 2 resumes with it and sends its request at once,
so it leaves in 0-RTT packets when the ticket allows early data. The side effect the replay cases
watch is the lab's `/counter` (POST increments, GET reads; per server process).
"""

from __future__ import annotations

import socket
from typing import Any

import trio

from lab.conform import routes
from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.expect import combine
from lab.conform.h2 import counter as h2_counter
from lab.conform.h2wire import open_h2
from lab.conform.h3 import h3_counter
from lab.conform.model import Outcome, failed, passed, skipped, unsupported
from lab.conform.quicwire import H3Stream, QuicWire, client_configuration, open_quic

MAX_EARLY_DATA = 0xFFFFFFFF  # what a ticket that allows 0-RTT carries (RFC 9001 §4.6.1)
REPLAYS_AFTER = 2
TOO_EARLY = 425
NO_EARLY_DATA = "the server offers no 0-RTT (no ticket allowing early data)"


async def _ticket(ctx: CaseContext) -> tuple[Any | None, dict[int, int], dict[str, int]]:
    """Connection 1: (session ticket or None, the server's SETTINGS, its transport limits)."""
    async with open_quic(ctx) as wire:
        await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        await wire.wait_for(lambda: wire.tickets and wire.settings is not None, ctx.wait())
        settings = dict(wire.settings or {})
        return (wire.tickets[-1] if wire.tickets else None), settings, wire.peer_limits


def _allows_early_data(ticket: Any) -> bool:
    """The ticket (None: there is none) lets the client send 0-RTT data."""
    return getattr(ticket, "max_early_data_size", None) == MAX_EARLY_DATA


class _Resumed:
    """Connection 2: resumes with `ticket`; requests sent before the handshake are 0-RTT."""

    def __init__(self, wire: QuicWire) -> None:
        self.wire = wire

    @property
    def accepted(self) -> bool:
        hs = self.wire.handshake
        return bool(hs is not None and hs.early_data_accepted)

    async def handshake(self, ctx: CaseContext) -> bool:
        return await self.wire.wait_for(lambda: self.wire.handshake is not None, ctx.wait(5.0))


async def _early_request(
    ctx: CaseContext, ticket: Any, method: str, path: str, *, capture: bool = False
) -> tuple[_Resumed, H3Stream, QuicWire]:
    """Open connection 2 and send `method path` at once; wait for the response."""
    cfg = client_configuration(ctx)
    cfg.session_ticket = ticket
    async with open_quic(ctx, cfg, handshake=False, capture=capture) as wire:
        sid = wire.send_request(wire.request_headers(method, path))
        st = await wire.response(sid, ctx.wait(5.0))
        resumed = _Resumed(wire)
        await resumed.handshake(ctx)
        await wire.wait_for(lambda: wire.settings is not None, ctx.wait(1.0))
        return resumed, st, wire


# --- Z-01 -----------------------------------------------------------------------------------
@case(
    "Z-01",
    "zero_rtt",
    "a GET in 0-RTT is served, or 0-RTT is rejected and the GET succeeds in 1-RTT",
    "RFC 9001 §4.6; interop Z",
    "MUST",
    needs={"h3"},
)
async def zero_rtt_get(ctx: CaseContext) -> Outcome:
    ticket, _settings, _limits = await _ticket(ctx)
    if ticket is None:
        return unsupported("no session ticket: the server offers no resumption")
    n = routes.SMALL if ctx.endpoint.serves_bytes(routes.SMALL) else None
    path = routes.bytes_path(n) if n else routes.HEALTHZ
    resumed, st, wire = await _early_request(ctx, ticket, "GET", path)
    if st.status != 200:
        return failed(f"GET in 0-RTT: {st.status or st.reset or wire.close_text()}")
    if n and (problem := routes.body_problem(st.body, n)):
        return failed(problem)
    if not _allows_early_data(ticket):
        return passed("tickets do not allow early data; resumed and served")
    if resumed.accepted:
        return passed("0-RTT accepted; GET served")
    return passed("0-RTT rejected cleanly; the GET was replayed in 1-RTT and served")


# --- Z-02 -----------------------------------------------------------------------------------
@case(
    "Z-02",
    "zero_rtt",
    "POST /counter in 0-RTT: rejected, deferred or 425, never processed from early data",
    "RFC 8470 §3; RFC 9114 §10.9",
    "MUST",
    needs={"h3", "counter"},
)
async def zero_rtt_unsafe(ctx: CaseContext) -> Outcome:
    ticket, _settings, _limits = await _ticket(ctx)
    if not _allows_early_data(ticket):
        return unsupported(NO_EARLY_DATA)
    before = await h3_counter(ctx)
    resumed, st, _wire = await _early_request(ctx, ticket, "POST", routes.COUNTER)
    after = await h3_counter(ctx)
    change = f"/counter {before} → {after}"
    if not resumed.accepted:
        return passed(f"early data rejected; POST answered {st.status} in 1-RTT; {change}")
    if st.status == TOO_EARLY:
        if before != after:
            return failed(f"425 Too Early, but {change}")
        return passed(f"425 Too Early; {change}")
    return failed(f"0-RTT accepted and the POST answered {st.status} ({change})")


# --- Z-03 -----------------------------------------------------------------------------------
async def _replay(ctx: CaseContext, datagrams: list[bytes], listen_s: float) -> int:
    """Send the captured datagrams from a new port; the bytes the server answers with."""
    raw = ctx.socket(socket.SOCK_DGRAM)
    raw.connect((ctx.endpoint.host, ctx.endpoint.port))
    sock = trio.socket.from_stdlib_socket(raw)
    got = 0
    with sock:
        for d in datagrams:
            await sock.send(d)
        with trio.move_on_after(listen_s):
            while True:
                got += len(await sock.recv(65_536))
    return got


@case(
    "Z-03",
    "zero_rtt",
    "the first flight of a 0-RTT POST replayed from other ports increments /counter at most once",
    "RFC 8470 §3, §6; RFC 9001 §9.2",
    "MUST",
    needs={"h3", "counter"},
)
async def zero_rtt_replay(ctx: CaseContext) -> Outcome:
    ticket, _settings, _limits = await _ticket(ctx)
    if not _allows_early_data(ticket):
        return unsupported(NO_EARLY_DATA)
    before = await h3_counter(ctx)
    cfg = client_configuration(ctx)
    cfg.session_ticket = ticket
    answered = []
    async with open_quic(ctx, cfg, handshake=False, capture=True) as wire:
        sid = wire.send_request(wire.request_headers("POST", routes.COUNTER))
        await wire.wait_for(lambda: wire.handshake is not None, ctx.wait(5.0))
        flight = wire.sent[: wire.first_flight or len(wire.sent)]
        answered.append(await _replay(ctx, flight, 0.3))  # during the original connection
        st = await wire.response(sid, ctx.wait(5.0))
    for _ in range(REPLAYS_AFTER):
        answered.append(await _replay(ctx, flight, ctx.wait(0.5)))
    after = await h3_counter(ctx)
    if before is None or after is None:
        return failed(f"/counter unreadable ({before} → {after})")
    replies = sum(1 for a in answered if a)
    text = (
        f"original {st.status}; {len(answered)} replays, {replies} answered; "
        f"/counter +{after - before}"
    )
    if after - before > 1:
        return failed(text)
    return passed(text)


# --- Z-04 -----------------------------------------------------------------------------------
EARLY = ("early-data", "1")


async def _h2_early_header(ctx: CaseContext) -> Outcome:
    a = ctx.endpoint.authority
    async with open_h2(ctx) as wire:
        post_head = [EARLY, ("content-length", "0")]
        await wire.send_headers(1, wire.request_headers("POST", routes.COUNTER, a, post_head))
        await wire.send_headers(3, wire.request_headers("GET", routes.HEALTHZ, a, [EARLY]))
        post, get = wire.stream(1), wire.stream(3)
        await wire.wait_for(
            lambda: all(s.ended or s.reset is not None for s in (post, get)), ctx.wait(5.0)
        )
    return _judge_early(post.status, get.status)


async def _h3_early_header(ctx: CaseContext) -> Outcome:
    extra = [(b"early-data", b"1")]
    async with open_quic(ctx) as wire:
        post = await wire.response(
            wire.send_request(wire.request_headers("POST", routes.COUNTER, extra)), ctx.wait(5.0)
        )
        get = await wire.response(
            wire.send_request(wire.request_headers("GET", routes.HEALTHZ, extra)), ctx.wait(5.0)
        )
    return _judge_early(post.status, get.status)


def _judge_early(post: int | None, get: int | None) -> Outcome:
    if post != TOO_EARLY:
        return failed(f"POST with Early-Data: 1 answered {post}, not 425")
    if get != 200:
        return failed(f"425 for the POST, but the GET with Early-Data: 1 got {get}")
    return passed("POST 425; GET served")


@case(
    "Z-04",
    "zero_rtt",
    "a request marked Early-Data: 1 that is not safe gets 425 (h2 and h3); a GET is served",
    "RFC 8470 §5.1, §5.2",
    "MUST",
    needs={"counter"},
)
async def early_data_header(ctx: CaseContext) -> Outcome:
    before = await (h3_counter(ctx) if ctx.endpoint.h3 else h2_counter(ctx))
    parts = []
    if ctx.endpoint.h2:
        parts.append(("h2", await _h2_early_header(ctx)))
    if ctx.endpoint.h3:
        parts.append(("h3", await _h3_early_header(ctx)))
    after = await (h3_counter(ctx) if ctx.endpoint.h3 else h2_counter(ctx))
    outcome = combine(parts)
    if before != after:
        return failed(f"{outcome.reason}; /counter {before} → {after}")
    return outcome


# --- Z-05 -----------------------------------------------------------------------------------
@case(
    "Z-05",
    "zero_rtt",
    "after accepted 0-RTT no remembered SETTINGS or transport limit is reduced",
    "RFC 9114 §7.2.4.2; RFC 9000 §7.4.1",
    "MUST",
    needs={"h3"},
)
async def remembered_limits(ctx: CaseContext) -> Outcome:
    ticket, settings1, limits1 = await _ticket(ctx)
    if not _allows_early_data(ticket):
        return unsupported(NO_EARLY_DATA)
    resumed, _st, wire = await _early_request(ctx, ticket, "GET", routes.HEALTHZ)
    if not resumed.accepted:
        return skipped("0-RTT was not accepted: nothing remembered applies")
    settings2 = dict(wire.settings or {})
    limits2 = wire.peer_limits
    worse = [
        f"setting 0x{k:x} {v} → {settings2.get(k)}"
        for k, v in settings1.items()
        if k not in settings2 or settings2[k] < v
    ]
    worse += [f"{k} {v} → {limits2.get(k)}" for k, v in limits1.items() if limits2.get(k, 0) < v]
    if worse:
        return failed("reduced after 0-RTT: " + "; ".join(worse))
    return passed(f"{len(settings1)} settings and {len(limits1)} transport limits kept")
