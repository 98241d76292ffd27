"""HTTP/2 over TCP + TLS (RFC 9113, RFC 7541): cases H2-01 … H2-15 (raw frames, lab.conform.h2wire).

Every case opens its own connection(s); `open_h2` has already checked ALPN h2 and (unless told
otherwise) waited for the server's SETTINGS and its ACK of ours (policy 5).
"""

from __future__ import annotations

import itertools
import os
import time

import trio
from hyperframe.frame import GoAwayFrame, PingFrame

from lab.conform import routes
from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.expect import combine, h2_conn_error, h2_stream_error
from lab.conform.h2wire import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DEFAULT_WINDOW,
    END_HEADERS,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    NO_ERROR,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    STREAM_CLOSED,
    H2Stream,
    H2Wire,
    error_name,
    open_h2,
    raw_frame,
)
from lab.conform.model import Outcome, failed, passed, unsupported
from lab.conform.prefix_int import prefix_int

MAX_WINDOW = 2**31 - 1
MIN_MAX_FRAME = 16_384
UNKNOWN_FRAME_TYPE = 0x20  # unassigned (RFC 9113 §5.5)
RECOMMENDED_MIN_STREAMS = 100  # RFC 9113 §6.5.2
RAPID_RESETS = 1_000
CONTINUATION_BUDGET_BYTES = 8 * 1024 * 1024  # sent without reaction: the server buffers on
CONTROL_PROBES = 10
NO_ROUTE = (404, 405)  # the request never reached a handler that reads its body


def _get(wire: H2Wire, ctx: CaseContext, path: str) -> list[tuple[str | bytes, str | bytes]]:
    return wire.request_headers("GET", path, ctx.endpoint.authority)


async def fetch(wire: H2Wire, ctx: CaseContext, stream_id: int, path: str) -> H2Stream:
    """GET `path` on `stream_id` and wait for the response (or its end)."""
    await wire.send_headers(stream_id, _get(wire, ctx, path))
    st = wire.stream(stream_id)
    await wire.wait_for(lambda: st.ended or st.reset is not None, ctx.wait(5.0))
    return st


# --- H2-01 ----------------------------------------------------------------------------------
@case(
    "H2-01",
    "h2",
    "ALPN h2 selected; the server's first frame is SETTINGS; it ACKs ours",
    "RFC 9113 §3.2, §3.4",
    "MUST",
    needs={"h2"},
)
async def preface(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx, sync=False) as wire:
        await wire.wait_for(lambda: wire.frames, ctx.wait())
        if not wire.frames:
            return failed(f"no frame from the server ({wire.conn_error or 'silent'})")
        first = wire.frames[0]
        if type(first).__name__ != "SettingsFrame" or "ACK" in first.flags:
            return failed(f"first frame is {type(first).__name__}, not SETTINGS")
        if not await wire.wait_for(lambda: wire.settings_acks >= 1, ctx.wait()):
            return failed("our SETTINGS were not ACKed")
    return passed("ALPN h2; first frame SETTINGS; our SETTINGS ACKed")


# --- H2-02 ----------------------------------------------------------------------------------
@case(
    "H2-02",
    "h2",
    "an invalid connection preface is a connection error",
    "RFC 9113 §3.4",
    "MUST",
    needs={"h2"},
)
async def bad_preface(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx, preface=None) as wire:
        await wire.send(PREFACE.replace(b"SM", b"XX") + raw_frame(0x4, 0, 0, b""))
        return await h2_conn_error(wire, {PROTOCOL_ERROR}, ctx.wait())


# --- H2-03 ----------------------------------------------------------------------------------
@case(
    "H2-03",
    "h2",
    "unknown frame types are ignored, but not inside a header block",
    "RFC 9113 §4.1, §5.5",
    "MUST",
    needs={"h2"},
)
async def unknown_frames(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx) as wire:
        await wire.send(raw_frame(UNKNOWN_FRAME_TYPE, 0xFF, 0, b"ignore me"))
        await wire.send(raw_frame(UNKNOWN_FRAME_TYPE, 0, 1, b"and me"))
        st = await fetch(wire, ctx, 1, routes.HEALTHZ)
        ignored = (
            passed("ignored; request served")
            if st.status == 200
            else failed(f"request not served ({wire.conn_error or st.status or st.reset})")
        )
    async with open_h2(ctx) as wire:
        block = wire.encode(_get(wire, ctx, routes.HEALTHZ))
        half = len(block) // 2
        await wire.send(
            raw_frame(HEADERS, 0x1, 1, block[:half])  # END_STREAM, no END_HEADERS
            + raw_frame(UNKNOWN_FRAME_TYPE, 0, 1, b"x")
            + raw_frame(CONTINUATION, END_HEADERS, 1, block[half:])
        )
        inside = await h2_conn_error(wire, {PROTOCOL_ERROR}, ctx.wait())
    return combine([("unknown frame", ignored), ("inside a header block", inside)])


# --- H2-04 ----------------------------------------------------------------------------------
@case(
    "H2-04",
    "h2",
    "frames above SETTINGS_MAX_FRAME_SIZE; SETTINGS_MAX_FRAME_SIZE below 2^14",
    "RFC 9113 §4.2, §6.5.2",
    "MUST",
    needs={"h2"},
)
async def frame_size(ctx: CaseContext) -> Outcome:
    parts: list[tuple[str, Outcome]] = []
    async with open_h2(ctx) as wire:
        limit = wire.server_settings.get(MAX_FRAME_SIZE, MIN_MAX_FRAME)
        head = wire.encode(wire.request_headers("POST", routes.ECHO, ctx.endpoint.authority))
        # one write: the oversized frame is read before a response could close the stream
        await wire.send(
            raw_frame(HEADERS, END_HEADERS, 1, head) + raw_frame(0x0, 0x1, 1, b"x" * (limit + 1))
        )
        parts.append(("DATA too large", await _frame_size_error(wire, ctx)))
    async with open_h2(ctx) as wire:
        limit = wire.server_settings.get(MAX_FRAME_SIZE, MIN_MAX_FRAME)
        pad = ("x-pad", "p" * (limit + 64))
        block = wire.encode([*_get(wire, ctx, routes.HEALTHZ), pad], huffman=False)
        await wire.send(raw_frame(HEADERS, 0x5, 1, block))
        parts.append(
            ("HEADERS too large", await h2_conn_error(wire, {FRAME_SIZE_ERROR}, ctx.wait()))
        )
    async with open_h2(ctx, settings={MAX_FRAME_SIZE: MIN_MAX_FRAME - 1}, sync=False) as wire:
        parts.append(
            ("MAX_FRAME_SIZE 16383", await h2_conn_error(wire, {PROTOCOL_ERROR}, ctx.wait()))
        )
    return combine(parts)


async def _frame_size_error(wire: H2Wire, ctx: CaseContext) -> Outcome:
    """FRAME_SIZE_ERROR on stream 1 or the connection (a response that ends the stream first
    with RST_STREAM NO_ERROR is not the answer: wait on for the error)."""
    st = wire.stream(1)
    limit = ctx.wait()
    await wire.wait_for(lambda: st.reset not in (None, NO_ERROR) or wire.conn_error, limit)
    if st.reset not in (None, NO_ERROR):
        name = error_name(st.reset or 0)
        ok = st.reset in (FRAME_SIZE_ERROR, PROTOCOL_ERROR, 0x2)
        return passed(f"RST_STREAM {name}") if ok else failed(f"RST_STREAM {name}")
    if wire.conn_error is None:
        return failed(f"no FRAME_SIZE_ERROR within {limit:g} s")
    return await h2_conn_error(wire, {FRAME_SIZE_ERROR}, 0.0)


# --- H2-05 ----------------------------------------------------------------------------------
@case(
    "H2-05",
    "h2",
    "stream states: DATA on an idle stream, an even stream ID, DATA after END_STREAM",
    "RFC 9113 §5.1, §5.1.1",
    "MUST",
    needs={"h2"},
)
async def stream_states(ctx: CaseContext) -> Outcome:
    parts: list[tuple[str, Outcome]] = []
    async with open_h2(ctx) as wire:
        await wire.send_data(1, b"idle")
        parts.append(("DATA on idle", await h2_conn_error(wire, {PROTOCOL_ERROR}, ctx.wait())))
    async with open_h2(ctx) as wire:
        await wire.send_headers(2, _get(wire, ctx, routes.HEALTHZ))
        parts.append(("even stream ID", await h2_conn_error(wire, {PROTOCOL_ERROR}, ctx.wait())))
    async with open_h2(ctx) as wire:
        block = wire.encode(_get(wire, ctx, routes.HEALTHZ))
        await wire.send(raw_frame(HEADERS, 0x5, 1, block) + raw_frame(0x0, 0x1, 1, b"late"))
        parts.append(
            ("DATA after END_STREAM", await h2_stream_error(wire, 1, {STREAM_CLOSED}, ctx.wait()))
        )
    return combine(parts)


# --- H2-06 ----------------------------------------------------------------------------------
@case(
    "H2-06",
    "h2",
    "a stream above SETTINGS_MAX_CONCURRENT_STREAMS is refused; a freed slot works again",
    "RFC 9113 §5.1.2, §6.5.2",
    "MUST",
    impaired=True,
    needs={"h2"},
)
async def concurrency_limit(ctx: CaseContext) -> Outcome:
    # INITIAL_WINDOW_SIZE 0: no response can send DATA, so every stream stays open (counted)
    async with open_h2(ctx, settings={INITIAL_WINDOW_SIZE: 0}, auto_window=False) as wire:
        limit = wire.server_settings.get(MAX_CONCURRENT_STREAMS)
        if limit is None:
            return passed("no SETTINGS_MAX_CONCURRENT_STREAMS: unlimited (nothing to refuse)")
        notes = [] if limit >= RECOMMENDED_MIN_STREAMS else [f"SHOULD ≥ 100, advertises {limit}"]
        head = _get(wire, ctx, routes.HEALTHZ)
        frames = b"".join(
            raw_frame(HEADERS, 0x5, 1 + 2 * i, wire.encode(head)) for i in range(limit)
        )
        await wire.send(frames)  # `limit` streams, held open by the empty window
        over = 1 + 2 * limit
        await wire.send_headers(over, head)
        refused = await h2_stream_error(wire, over, {REFUSED_STREAM}, ctx.wait())
        if refused.status != "passed" or refused.coarse:
            return refused.with_notes(notes)
        await wire.send(raw_frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))
        freed = over + 2
        await wire.send_headers(freed, head)
        await wire.window_update(freed, DEFAULT_WINDOW)
        await wire.window_update(0, DEFAULT_WINDOW)
        st = wire.stream(freed)
        await wire.wait_for(lambda: st.ended or st.reset is not None, ctx.wait(5.0))
        if st.status != 200:
            got = wire.conn_error or (f"RST_STREAM {error_name(st.reset)}" if st.reset else "no")
            return failed(f"{refused.reason}; after a slot freed: {got} response", notes=notes)
        return passed(f"stream {over} refused ({refused.reason}); freed slot served", notes=notes)


# --- H2-07 ----------------------------------------------------------------------------------
@case(
    "H2-07",
    "h2",
    "the server never sends DATA beyond the client's flow-control windows",
    "RFC 9113 §5.2, §6.9, §6.9.1",
    "MUST",
    impaired=True,
    needs={"h2"},
)
async def flow_control(ctx: CaseContext) -> Outcome:
    n, initial, grant = routes.LARGE, 1024, 16_384
    if not ctx.endpoint.serves_bytes(n):
        return unsupported(f"the target does not serve /bytes/{n}")
    async with open_h2(ctx, settings={INITIAL_WINDOW_SIZE: initial}, auto_window=False) as wire:
        await wire.send_headers(1, _get(wire, ctx, routes.bytes_path(n)))
        st = wire.stream(1)
        stream_credit, conn_credit, updates = initial, DEFAULT_WINDOW, 0
        deadline = trio.current_time() + ctx.timing.transfer(n) * 2
        while not st.ended:
            used = st.flow_bytes
            if used > stream_credit or used > conn_credit:
                return failed(
                    f"{used:,} bytes of DATA with {min(stream_credit, conn_credit):,} of credit"
                )
            if used == stream_credit or conn_credit - used < grant:
                stream_credit += grant
                conn_credit += grant
                updates += 1
                await wire.window_update(1, grant)
                await wire.window_update(0, grant)
            left = deadline - trio.current_time()
            if left <= 0 or st.reset is not None or wire.conn_error:
                why = wire.conn_error or (st.reset is not None and "reset") or "timeout"
                return failed(f"response did not complete ({why}) at {used:,} bytes")

            def moved(before: int = used) -> bool:
                return st.flow_bytes > before or st.ended

            await wire.wait_for(moved, min(left, 5.0))
        problem = routes.body_problem(st.body, n)
        if problem:
            return failed(problem)
    return passed(f"{n:,} bytes within the windows; resumed after each of {updates} WINDOW_UPDATEs")


# --- H2-08 ----------------------------------------------------------------------------------
@case(
    "H2-08",
    "h2",
    "a flow-control window above 2^31-1 is a FLOW_CONTROL_ERROR",
    "RFC 9113 §6.9.1, §6.9.2",
    "MUST",
    needs={"h2"},
)
async def window_overflow(ctx: CaseContext) -> Outcome:
    parts: list[tuple[str, Outcome]] = []
    big = MAX_WINDOW.to_bytes(4, "big")
    async with open_h2(ctx) as wire:
        await wire.send(raw_frame(0x8, 0, 0, big) * 2)
        parts.append(("connection", await h2_conn_error(wire, {FLOW_CONTROL_ERROR}, ctx.wait())))
    if ctx.endpoint.serves_bytes(routes.LARGE):
        async with open_h2(ctx, settings={INITIAL_WINDOW_SIZE: 1024}, auto_window=False) as wire:
            await wire.send_headers(1, _get(wire, ctx, routes.bytes_path(routes.LARGE)))
            await wire.wait_for(lambda: wire.stream(1).data_frames, ctx.wait())
            await wire.send(raw_frame(0x8, 0, 1, big) * 2)
            parts.append(
                ("stream", await h2_stream_error(wire, 1, {FLOW_CONTROL_ERROR}, ctx.wait()))
            )
    async with open_h2(ctx, settings={INITIAL_WINDOW_SIZE: 2**31}, sync=False) as wire:
        parts.append(
            (
                "INITIAL_WINDOW_SIZE 2^31",
                await h2_conn_error(wire, {FLOW_CONTROL_ERROR}, ctx.wait()),
            )
        )
    return combine(parts)


# --- H2-09 ----------------------------------------------------------------------------------
def _malformed(ctx: CaseContext) -> dict[str, list[tuple[str, str]]]:
    a = ctx.endpoint.authority
    base = [(":method", "GET"), (":scheme", "https"), (":authority", a), (":path", "/healthz")]
    return {
        "missing :scheme": [h for h in base if h[0] != ":scheme"],
        "missing :path": [h for h in base if h[0] != ":path"],
        "duplicate :method": [*base[:1], *base],
        "uppercase name": [*base, ("X-Upper", "1")],
        "connection:": [*base, ("connection", "keep-alive")],
        "te: gzip": [*base, ("te", "gzip")],
        "leading whitespace": [*base, ("x-value", " padded")],
        "pseudo after regular": [*base[:3], ("x-regular", "1"), base[3]],
        "Host ≠ :authority": [*base, ("host", "other.invalid")],
    }


SHOULD_MALFORMED = ("Host ≠ :authority",)  # RFC 9113 §8.3.1: a SHOULD


@case(
    "H2-09",
    "h2",
    "malformed requests are stream errors PROTOCOL_ERROR (one per connection)",
    "RFC 9113 §8.1.1, §8.2.1, §8.2.2, §8.3.1",
    "MUST",
    needs={"h2"},
)
async def malformed_requests(ctx: CaseContext) -> Outcome:
    variants = _malformed(ctx)
    results: dict[str, Outcome] = {}

    async def one(label: str, headers: list[tuple[str, str]]) -> None:
        async with open_h2(ctx) as wire:
            await wire.send_headers(1, headers)
            results[label] = await h2_stream_error(wire, 1, {PROTOCOL_ERROR}, ctx.wait())

    async with trio.open_nursery() as nursery:
        for label, headers in variants.items():
            nursery.start_soon(one, label, headers)
    return combine([(k, results[k]) for k in variants], should=SHOULD_MALFORMED)


# --- H2-10 ----------------------------------------------------------------------------------
async def counter(ctx: CaseContext) -> int | None:
    """GET /counter on a fresh connection: the value, or None."""
    async with open_h2(ctx) as wire:
        st = await fetch(wire, ctx, 1, routes.COUNTER)
        return routes.counter_value(st.body) if st.status == 200 else None


@case(
    "H2-10",
    "h2",
    "content-length larger than the DATA is malformed and never reaches the application",
    "RFC 9113 §8.1.1",
    "MUST",
    needs={"h2"},
)
async def content_length(ctx: CaseContext) -> Outcome:
    path = routes.COUNTER if ctx.endpoint.counter else routes.ECHO
    before = await counter(ctx) if ctx.endpoint.counter else None
    async with open_h2(ctx) as wire:
        head = wire.request_headers(
            "POST", path, ctx.endpoint.authority, [("content-length", "10")]
        )
        await wire.send_headers(1, head, end_stream=False)
        await wire.send_data(1, b"12345")
        outcome = await h2_stream_error(wire, 1, {PROTOCOL_ERROR}, ctx.wait())
        if outcome.status == "failed" and wire.stream(1).status in NO_ROUTE:
            return unsupported(f"no route reads a request body ({path}: {wire.stream(1).status})")
    if before is not None:
        after = await counter(ctx)
        if after != before:
            return failed(f"{outcome.reason}, but /counter went from {before} to {after}")
        return outcome.with_notes([f"/counter unchanged ({before})"])
    return outcome


# --- H2-11 ----------------------------------------------------------------------------------
@case(
    "H2-11",
    "h2",
    "undecodable HPACK (index 0, out of range, Huffman EOS, oversized table update)",
    "RFC 7541 §2.3.3, §5.2, §6.1, §6.3; RFC 9113 §4.3",
    "MUST",
    needs={"h2"},
)
async def hpack_errors(ctx: CaseContext) -> Outcome:
    method = b"\x82"  # :method GET (static index 2)
    results: dict[str, Outcome] = {}

    async def one(label: str, block_of: object) -> None:
        async with open_h2(ctx) as wire:
            assert callable(block_of)
            await wire.send(raw_frame(HEADERS, 0x5, 1, block_of(wire)))
            results[label] = await h2_conn_error(wire, {COMPRESSION_ERROR}, ctx.wait())

    def table_update(wire: H2Wire) -> bytes:
        size = 2 * max(wire.server_settings.get(HEADER_TABLE_SIZE, 4096), 4096)
        return prefix_int(size, 5, 0x20) + method

    variants = {
        "index 0": lambda w: b"\x80" + method,
        "index out of range": lambda w: prefix_int(200, 7, 0x80),
        "Huffman EOS": lambda w: method + b"\x00\x84\xff\xff\xff\xff\x01a",
        "table size update above the limit": table_update,
    }
    async with trio.open_nursery() as nursery:
        for label, block_of in variants.items():
            nursery.start_soon(one, label, block_of)
    return combine([(k, results[k]) for k in variants])


# --- H2-12 ----------------------------------------------------------------------------------
@case(
    "H2-12",
    "h2",
    "PING is echoed with ACK and the same payload; a PING ACK is not answered",
    "RFC 9113 §6.7",
    "MUST",
    impaired=True,
    needs={"h2"},
)
async def ping(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx) as wire:
        payload = os.urandom(8)
        t0 = time.monotonic()
        if not await wire.ping(payload, ctx.wait()):
            return failed(f"no PING ACK with our payload ({wire.conn_error or 'timeout'})")
        rtt_ms = (time.monotonic() - t0) * 1e3
        acked = os.urandom(8)
        await wire.send(raw_frame(PING, ACK, 0, acked))
        answered = await wire.wait_for(
            lambda: any(isinstance(f, PingFrame) and f.opaque_data == acked for f in wire.frames),
            min(ctx.wait(), 1.0),
        )
        if answered:
            return failed("the server answered a PING ACK")
        if wire.conn_error:
            return failed(f"a PING ACK closed the connection ({wire.conn_error})")
    return passed(f"echoed with ACK in {rtt_ms:.1f} ms; a PING ACK got no answer")


# --- H2-13 ----------------------------------------------------------------------------------
async def _long_response(wire: H2Wire, ctx: CaseContext) -> tuple[int | None, bool]:
    """Start a long response on stream 1: a watch, or /bytes/LARGE read slowly; returns the
    expected body size (None for a watch) and whether the client credits windows by hand."""
    if ctx.endpoint.watch:
        await wire.send_headers(1, _get(wire, ctx, routes.watch_path()))
        return None, False
    await wire.send_headers(1, _get(wire, ctx, routes.bytes_path(routes.LARGE)))
    return routes.LARGE, True


@case(
    "H2-13",
    "h2",
    "graceful shutdown: GOAWAY NO_ERROR, in-flight stream completes, later streams refused",
    "RFC 9113 §6.8, §5.4.1, §8.7",
    "MUST",
    impaired=True,
    needs={"h2", "drain"},
)
async def graceful_shutdown(ctx: CaseContext) -> Outcome:
    assert ctx.server is not None
    slow = not ctx.endpoint.watch
    if slow and not ctx.endpoint.serves_bytes(routes.LARGE):
        return unsupported("needs the watch route or /bytes/1048576 for a long response")
    settings = {INITIAL_WINDOW_SIZE: 16_384} if slow else {}
    async with open_h2(ctx, settings=settings, auto_window=not slow) as wire:
        size, manual = await _long_response(wire, ctx)
        st = wire.stream(1)
        if not await wire.wait_for(lambda: st.status is not None, ctx.wait(5.0)):
            return failed(f"no response head on stream 1 ({wire.conn_error or 'timeout'})")
        ctx.server.drain()
        grace = ctx.wait(15.0)
        credit = 16_384

        async def keep_crediting() -> None:
            nonlocal credit
            while manual and not st.ended:
                if st.flow_bytes >= credit:
                    credit += 16_384
                    await wire.window_update(1, 16_384)
                    await wire.window_update(0, 16_384)
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_crediting)
            got_goaway = await wire.wait_for(lambda: wire.goaways, ctx.wait(5.0))
            if got_goaway and wire.closed is None:
                await wire.send_headers(3, _get(wire, ctx, routes.HEALTHZ))
            await wire.wait_for(lambda: st.ended or st.reset is not None, grace)
            closed = await wire.wait_for(lambda: wire.closed is not None, grace)
            nursery.cancel_scope.cancel()
        return _judge_drain(wire, st, size, got_goaway, closed)


def _judge_drain(
    wire: H2Wire, st: H2Stream, size: int | None, got_goaway: bool, closed: bool
) -> Outcome:
    if not got_goaway:
        return failed(f"no GOAWAY after SIGTERM ({wire.conn_error or 'connection open'})")
    goaways: list[GoAwayFrame] = wire.goaways
    codes = sorted({g.error_code for g in goaways})
    if codes != [NO_ERROR]:
        return failed("GOAWAY codes " + ", ".join(error_name(c) for c in codes))
    ids = [g.last_stream_id for g in goaways]
    if any(b > a for a, b in itertools.pairwise(ids)):
        return failed(f"GOAWAY last-stream-ids increased: {ids}")
    if st.reset is not None or not st.ended:
        return failed(f"stream 1 did not complete ({(st.reset and error_name(st.reset)) or 'cut'})")
    if size is not None and (problem := routes.body_problem(st.body, size)):
        return failed(f"stream 1: {problem}")
    notes = [] if ids[0] == MAX_WINDOW else [f"SHOULD send 2^31-1 first (sent {ids[0]})"]
    late = wire.stream(3)
    if min(ids) < 3 and late.status is not None:
        return failed(f"stream 3 above last-stream-id {min(ids)} was served ({late.status})")
    late_text = (
        f"stream 3 refused ({error_name(late.reset)})"
        if late.reset is not None
        else "stream 3 not processed"
        if late.status is None
        else f"stream 3 served ({late.status}, within last-stream-id)"
    )
    if not closed:
        return failed(f"GOAWAY {ids}; the connection stayed open after the drain", notes=notes)
    return passed(f"GOAWAY NO_ERROR {ids}; stream 1 completed; {late_text}; closed", notes=notes)


# --- H2-14 ----------------------------------------------------------------------------------
async def probe_latencies(ctx: CaseContext, wire: H2Wire, first: int, n: int) -> list[float]:
    """n sequential GET /healthz on `wire` from stream `first`: latencies in s (inf: failed)."""
    out = []
    for i in range(n):
        t0 = time.monotonic()
        st = await fetch(wire, ctx, first + 2 * i, routes.HEALTHZ)
        out.append(time.monotonic() - t0 if st.status == 200 else float("inf"))
    return out


@case(
    "H2-14",
    "h2",
    "rapid reset (HEADERS + RST_STREAM floods) leaves the server responsive",
    "RFC 9113 §10.5 (CVE-2023-44487)",
    "MUST",
    needs={"h2"},
)
async def rapid_reset(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx) as control:
        baseline = await probe_latencies(ctx, control, 1, 3)
        bound = max(1.0, 20 * sorted(baseline)[1])
        async with open_h2(ctx) as attacker:
            block = attacker.encode(_get(attacker, ctx, routes.HEALTHZ))
            reset = CANCEL.to_bytes(4, "big")
            burst = b"".join(
                raw_frame(HEADERS, 0x5, 1 + 2 * i, block)
                + raw_frame(RST_STREAM, 0, 1 + 2 * i, reset)
                for i in range(RAPID_RESETS)
            )
            with trio.move_on_after(ctx.wait(5.0)):
                await attacker.send(burst)  # the server may close this connection: allowed
            during = await probe_latencies(ctx, control, 7, CONTROL_PROBES)
            calm = attacker.goaway_code() == 0xB
    if max(during) == float("inf"):
        return failed("control requests failed during the flood")
    worst = max(during)
    if worst > bound:
        return failed(f"control request took {worst * 1e3:.0f} ms (bound {bound * 1e3:.0f} ms)")
    async with open_h2(ctx) as after:
        if (await fetch(after, ctx, 1, routes.HEALTHZ)).status != 200:
            return failed("the server stopped serving new connections after the flood")
    calm_text = "; GOAWAY ENHANCE_YOUR_CALM" if calm else ""
    return passed(f"{RAPID_RESETS} resets; control p100 {worst * 1e3:.0f} ms{calm_text}")


# --- H2-15 ----------------------------------------------------------------------------------
@case(
    "H2-15",
    "h2",
    "an endless CONTINUATION sequence is cut off early",
    "RFC 9113 §10.5.1",
    "MUST",
    needs={"h2"},
)
async def continuation_flood(ctx: CaseContext) -> Outcome:
    async with open_h2(ctx) as wire:
        head = wire.encode(_get(wire, ctx, routes.HEALTHZ))
        await wire.send(raw_frame(HEADERS, 0x1, 1, head))  # no END_HEADERS
        field = b"\x00" + prefix_int(6, 7, 0) + b"x-fill" + prefix_int(16_000, 7, 0) + b"f" * 16_000
        chunk = raw_frame(CONTINUATION, 0, 1, field) * 16
        sent = 0

        def reacted() -> bool:
            st = wire.stream(1)
            return wire.conn_error is not None or st.reset is not None or st.status is not None

        while sent < CONTINUATION_BUDGET_BYTES and not reacted():
            with trio.move_on_after(ctx.wait()) as scope:
                await wire.send(chunk)
            if scope.cancelled_caught:
                return passed(f"server stopped reading after {sent:,} bytes (back-pressure)")
            sent += len(chunk)
        await wire.wait_for(reacted, ctx.wait(1.0))
        if not reacted():
            return failed(f"{sent:,} bytes of CONTINUATION accepted without a reaction")
        st = wire.stream(1)
        how = wire.conn_error or (
            f"RST_STREAM {error_name(st.reset)}" if st.reset is not None else f"status {st.status}"
        )
        return passed(f"cut off after {sent:,} bytes: {how}")
