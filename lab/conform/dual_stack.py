"""Dual-stack discovery and behaviour (RFC 7838, RFC 9114 §3, RFC 9113 §6.8): D-01 … D-08.

What a kube-apiserver serving HTTP/3 next to HTTP/2 must get right: advertise h3 on the same
port, serve the same resource the same way on both, keep TCP unaffected when UDP is blocked, and
drain both protocols together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import time

import trio
from hyperframe.frame import AltSvcFrame

from lab.conform import altsvc, routes
from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.expect import combine
from lab.conform.h2 import fetch, probe_latencies
from lab.conform.h2wire import H2Stream, H2Wire, http11_get, open_h2
from lab.conform.initial import first_flight
from lab.conform.model import Outcome, failed, passed, unsupported
from lab.conform.quicwire import H3_NO_ERROR, QuicWire, open_quic

MISDIRECTED = 421
BLACKHOLED_INITIALS = 20
LATENCY_PROBES = 10
ALTSVC_WAIT_S = 0.5
KEY_HEADERS = ("content-type", "content-length")


def _h3_alternatives(header: str | None) -> tuple[list[altsvc.Alternative], str | None]:
    """(the h3 alternatives, or a parse problem) of an Alt-Svc value."""
    if header is None:
        return [], "no Alt-Svc header"
    try:
        alts = altsvc.parse(header)
    except altsvc.AltSvcError as e:
        return [], f"malformed Alt-Svc {header!r}: {e}"
    h3 = [a for a in alts if a.protocol == "h3"]
    return h3, None if h3 else f"Alt-Svc {header!r} has no h3 alternative"


async def _h2_alt_svc(ctx: CaseContext) -> str | None:
    async with open_h2(ctx) as wire:
        return (await fetch(wire, ctx, 1, routes.HEALTHZ)).header("alt-svc")


# --- D-01 -----------------------------------------------------------------------------------
@case(
    "D-01",
    "dual_stack",
    'h2 and HTTP/1.1 responses advertise h3=":PORT" in a well-formed Alt-Svc',
    "RFC 7838 §3; RFC 9114 §3.1.1",
    "SHOULD",
    needs={"h2"},
)
async def alt_svc(ctx: CaseContext) -> Outcome:
    parts = []
    alts, problem = _h3_alternatives(await _h2_alt_svc(ctx))
    parts.append(("h2", failed(problem) if problem else passed(_describe(alts))))
    status, headers = await http11_get(ctx, routes.HEALTHZ)
    notes = []
    if status is None:
        notes.append("no HTTP/1.1 (ALPN http/1.1 refused)")
    else:
        alts, problem = _h3_alternatives(dict(headers).get("alt-svc"))
        parts.append(("HTTP/1.1", failed(problem) if problem else passed(_describe(alts))))
    return combine(parts).with_notes(notes)


def _describe(alts: list[altsvc.Alternative]) -> str:
    return ", ".join(f'h3="{a.host}:{a.port}" ma={a.max_age_s}' for a in alts)


# --- D-02 -----------------------------------------------------------------------------------
@case(
    "D-02",
    "dual_stack",
    "the Alt-Svc port is the UDP (QUIC) listener; the same port as TCP (WARN otherwise)",
    "operational (same-port dual stack)",
    "SHOULD",
    needs={"h2", "h3"},
)
async def alt_svc_port(ctx: CaseContext) -> Outcome:
    alts, problem = _h3_alternatives(await _h2_alt_svc(ctx))
    if problem:
        return failed(problem)
    alt = alts[0]
    if alt.host not in ("", ctx.endpoint.server_name):
        return unsupported(f"Alt-Svc names another host ({alt.host}); the lab tests the origin")
    there = dataclasses.replace(ctx.endpoint, port=alt.port)
    other = dataclasses.replace(ctx, endpoint=there)
    try:
        async with open_quic(other) as wire:
            st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
    except ConnectionError as e:
        return failed(f"no QUIC at the advertised port {alt.port}: {e}")
    if st.status != 200:
        return failed(f"QUIC at port {alt.port}: {st.status or wire.close_text()}")
    notes = (
        []
        if alt.port == ctx.endpoint.port
        else [f"WARN: h3 on {alt.port}, TCP on {ctx.endpoint.port}"]
    )
    return passed(f"h3 answers on the advertised port {alt.port}", notes=notes)


# --- D-03 -----------------------------------------------------------------------------------
@case(
    "D-03",
    "dual_stack",
    "QUIC with SNI = the origin: its certificate, and the same resource as over h2",
    "RFC 7838 §2.1; RFC 9114 §3.1, §3.3",
    "MUST",
    needs={"h2", "h3"},
)
async def same_resource(ctx: CaseContext) -> Outcome:
    n = routes.MEDIUM if ctx.endpoint.serves_bytes(routes.MEDIUM) else None
    path = routes.bytes_path(n) if n else routes.HEALTHZ
    async with open_h2(ctx) as wire:
        h2 = await fetch(wire, ctx, 1, path)
    try:
        async with open_quic(ctx) as q:  # verifies the origin's certificate when the CA is known
            h3 = await q.response(q.get(path), ctx.wait(5.0))
    except ConnectionError as e:
        return failed(f"QUIC to the origin: {e}")
    a = (h2.status, hashlib.sha256(h2.body).hexdigest()[:12], *map(h2.header, KEY_HEADERS))
    b = (h3.status, hashlib.sha256(h3.body).hexdigest()[:12], *map(h3.header, KEY_HEADERS))
    if a != b:
        return failed(f"h2 {a} ≠ h3 {b}")
    verified = (
        "certificate verified" if ctx.endpoint.ca_file else "certificate not verified (no CA)"
    )
    return passed(f"{path}: status, body hash and {', '.join(KEY_HEADERS)} equal; {verified}")


# --- D-04 -----------------------------------------------------------------------------------
@case(
    "D-04",
    "dual_stack",
    "an HTTP/3 request with Alt-Used is served normally",
    "RFC 7838 §5",
    "MUST",
    needs={"h3"},
)
async def alt_used(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        extra = [(b"alt-used", ctx.endpoint.authority.encode())]
        st = await wire.response(wire.get(routes.HEALTHZ, extra), ctx.wait(5.0))
    if st.status != 200:
        return failed(f"Alt-Used request: {st.status or wire.close_text()}")
    return passed("served")


# --- D-05 -----------------------------------------------------------------------------------
@case(
    "D-05",
    "dual_stack",
    "an ALTSVC frame, if the server sends one, is well-formed",
    "RFC 7838 §4; RFC 9113 §5.5",
    "MAY",
    needs={"h2"},
)
async def altsvc_frame(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx) as wire:
        await fetch(wire, ctx, 1, routes.HEALTHZ)
        await trio.sleep(ALTSVC_WAIT_S)
        frames = [f for f in wire.frames if isinstance(f, AltSvcFrame)]
    if not frames:
        return passed("no ALTSVC frame (none is required)")
    for f in frames:
        if f.stream_id == 0 and not f.origin:
            return failed("ALTSVC on stream 0 without an origin")
        if f.stream_id != 0 and f.origin:
            return failed(f"ALTSVC on stream {f.stream_id} with an origin")
        _alts, problem = _h3_alternatives(f.field.decode("latin-1"))
        if problem and "no h3" not in problem:
            return failed(f"ALTSVC frame: {problem}")
    return passed(f"{len(frames)} well-formed ALTSVC frame(s)")


# --- D-06 -----------------------------------------------------------------------------------
@case(
    "D-06",
    "dual_stack",
    "with UDP blackholed (half-open QUIC handshakes) h2 is unaffected and h3 falls back",
    "RFC 9114 §3.1",
    "MUST",
    impaired=True,
    needs={"h2", "h3"},
)
async def udp_blackhole(ctx: CaseContext) -> Outcome:
    ep = ctx.endpoint
    async with open_h2(ctx) as wire:
        baseline = await probe_latencies(ctx, wire, 1, 3)
        bound = max(1.0, 10 * sorted(baseline)[1])
        socks = []
        for _ in range(BLACKHOLED_INITIALS):  # the client never reads: the answers are lost
            raw = ctx.socket(socket.SOCK_DGRAM)
            raw.connect((ep.host, ep.port))
            for d in first_flight(ep.server_name, (ep.host, ep.port)):
                raw.send(d)
            socks.append(raw)
        try:
            during = await probe_latencies(ctx, wire, 7, LATENCY_PROBES)
            t0 = time.monotonic()
            fallback = await _fallback(ctx)
            fell_back_s = time.monotonic() - t0
        finally:
            for s in socks:
                s.close()
    worst = max(during)
    if worst == float("inf"):
        return failed("h2 requests failed while QUIC handshakes hung")
    if worst > bound:
        return failed(
            f"h2 latency {worst * 1e3:.0f} ms while UDP was blackholed (bound {bound * 1e3:.0f})"
        )
    if fallback != 200:
        return failed(f"fallback to h2 after the h3 timeout got {fallback}")
    return passed(
        f"{BLACKHOLED_INITIALS} half-open handshakes; h2 max {worst * 1e3:.0f} ms; "
        f"fell back to h2 in {fell_back_s:.1f} s"
    )


async def _fallback(ctx: CaseContext) -> int | None:
    """The lab's client tries h3 through the blackhole (its datagrams are dropped), gives up
    after its handshake timeout and fetches over h2; the h2 status."""
    try:
        async with open_quic(ctx, blackhole=True, handshake_timeout_s=ctx.wait(1.0)):
            return None  # cannot happen: nothing leaves
    except ConnectionError:
        pass
    async with open_h2(ctx) as wire:
        return (await fetch(wire, ctx, 1, routes.HEALTHZ)).status


# --- D-07 -----------------------------------------------------------------------------------
@case(
    "D-07",
    "dual_stack",
    "a drain sends GOAWAY on h2 and h3; in-flight watches on both end cleanly",
    "RFC 9113 §6.8; RFC 9114 §5.2",
    "MUST",
    needs={"h2", "h3", "drain"},
)
async def drain_both(ctx: CaseContext) -> Outcome:
    assert ctx.server is not None
    if not ctx.endpoint.watch:
        return unsupported("needs the watch route for long-lived streams on both protocols")
    grace = ctx.wait(15.0)
    async with open_h2(ctx) as h2, open_quic(ctx, close=False) as h3:
        await h2.send_headers(
            1, h2.request_headers("GET", routes.watch_path(), ctx.endpoint.authority)
        )
        sid = h3.get(routes.watch_path())
        s2, s3 = h2.stream(1), h3.stream(sid)
        if not (
            await h2.wait_for(lambda: s2.status is not None, ctx.wait(5.0))
            and await h3.wait_for(lambda: s3.status is not None, ctx.wait(5.0))
        ):
            return failed("the watches did not start")
        ctx.server.drain()
        got2 = await h2.wait_for(lambda: h2.goaways, ctx.wait(5.0))
        got3 = await h3.wait_for(lambda: h3.goaways, ctx.wait(5.0))
        if not (got2 or got3):
            return failed("no GOAWAY on h2 or h3 after SIGTERM")
        during = await _new_connection_during(ctx)
        await h2.wait_for(lambda: s2.ended or s2.reset is not None, grace)
        await h3.wait_for(lambda: s3.ended or s3.reset is not None, grace)
        await h2.wait_for(lambda: h2.closed is not None, grace)
        await h3.wait_for(lambda: h3.terminated is not None, grace)
        return _judge(h2, s2, got2, h3, sid, got3).with_notes([during])


async def _new_connection_during(ctx: CaseContext) -> str:
    try:
        async with open_h2(ctx) as wire:
            st = await fetch(wire, ctx, 1, routes.HEALTHZ)
            return f"a new h2 connection during the drain: {st.status or wire.conn_error}"
    except (ConnectionError, OSError, trio.TooSlowError) as e:
        return f"a new h2 connection during the drain: refused ({type(e).__name__})"


def _judge(h2: H2Wire, s2: H2Stream, got2: bool, h3: QuicWire, sid: int, got3: bool) -> Outcome:
    s3 = h3.stream(sid)
    parts = [
        ("h2", _side(got2, s2.ended and s2.reset is None, h2.closed is not None, "FIN")),
        (
            "h3",
            _side(
                got3,
                s3.ended and s3.reset is None,
                h3.terminated is not None and h3.terminated.error_code == H3_NO_ERROR,
                "H3_NO_ERROR",
            ),
        ),
    ]
    return combine(parts)


def _side(goaway: bool, completed: bool, closed: bool, close_name: str) -> Outcome:
    if not goaway:
        return failed("no GOAWAY")
    if not completed:
        return failed("GOAWAY, but the watch was cut")
    if not closed:
        return failed(f"GOAWAY, watch completed, no {close_name} close after the drain")
    return passed(f"GOAWAY; watch completed; closed ({close_name})")


# --- D-08 -----------------------------------------------------------------------------------
OTHER_ORIGIN = "not-served.invalid"


async def _misdirected_h2(ctx: CaseContext) -> Outcome:
    other = f"{OTHER_ORIGIN}:{ctx.endpoint.port}"
    async with open_h2(ctx) as wire:
        await wire.send_headers(1, wire.request_headers("GET", routes.HEALTHZ, other))
        st = wire.stream(1)
        await wire.wait_for(lambda: st.ended or st.reset is not None, ctx.wait(5.0))
        after = await fetch(wire, ctx, 3, routes.HEALTHZ)
    return _judge_misdirected(st.status, after.status)


async def _misdirected_h3(ctx: CaseContext) -> Outcome:
    other = f"{OTHER_ORIGIN}:{ctx.endpoint.port}".encode()
    async with open_quic(ctx) as wire:
        head = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", other),
            (b":path", b"/healthz"),
        ]
        st = await wire.response(wire.send_request(head), ctx.wait(5.0))
        after = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
    return _judge_misdirected(st.status, after.status)


def _judge_misdirected(status: int | None, after: int | None) -> Outcome:
    if status != MISDIRECTED:
        return failed(f"a request for {OTHER_ORIGIN} got {status}, not 421")
    if after != 200:
        return failed(f"421, then the connection was unusable ({after})")
    return passed("421; connection still usable")


@case(
    "D-08",
    "dual_stack",
    "a request for an origin the server is not authoritative for gets 421",
    "RFC 9114 §3.3; RFC 7838 §6; RFC 9110 §15.5.20",
    "SHOULD",
)
async def misdirected(ctx: CaseContext) -> Outcome:
    parts = []
    if ctx.endpoint.h2:
        parts.append(("h2", await _misdirected_h2(ctx)))
    if ctx.endpoint.h3:
        parts.append(("h3", await _misdirected_h3(ctx)))
    return combine(parts)
