"""HTTP/3 and QPACK (RFC 9114, RFC 9204): cases H3-01 … H3-13, with aioquic's client.

Requests go through aioquic's `H3Connection.send_headers`, which does not validate, so malformed
requests are easy; frames it would never send are written onto the QUIC streams directly. The
client's own control and QPACK stream ids are aioquic internals (guarded by `internals()`).
"""

from __future__ import annotations

import itertools

import trio
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, H3Connection, StreamType, encode_frame, encode_settings

from lab.conform import routes
from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.expect import combine, h3_stream_error, quic_conn_error
from lab.conform.model import Outcome, failed, passed, unsupported
from lab.conform.prefix_int import prefix_int
from lab.conform.quicwire import (
    QuicWire,
    client_configuration,
    error_name,
    internals,
    open_quic,
)

H3_CLOSED_CRITICAL_STREAM, H3_FRAME_UNEXPECTED, H3_ID_ERROR = 0x104, 0x105, 0x108
H3_SETTINGS_ERROR, H3_MISSING_SETTINGS, H3_REQUEST_REJECTED = 0x109, 0x10A, 0x10B
H3_REQUEST_CANCELLED, H3_MESSAGE_ERROR, H3_NO_ERROR = 0x10C, 0x10E, 0x100
QPACK_DECOMPRESSION_FAILED, QPACK_ENCODER_STREAM_ERROR = 0x200, 0x201
QPACK_DECODER_STREAM_ERROR = 0x202
NO_APPLICATION_PROTOCOL, HANDSHAKE_FAILURE, TLS_INTERNAL_ERROR = 0x178, 0x128, 0x150
MAX_FIELD_SECTION_SIZE = 0x6
RESERVED = 0x1F * 7 + 0x21  # a reserved (GREASE) frame, stream and setting type
HTTP2_SETTING = 0x2  # SETTINGS_ENABLE_PUSH of HTTP/2: forbidden in HTTP/3
DEFAULT_FIELD_SECTION_LIMIT = 64 * 1024
HUGE_FIELD_SECTION = 1024 * 1024  # an advertised limit above this is treated as none
MIN_UNI_STREAMS, RECOMMENDED_BIDI_STREAMS = 3, 100
GOAWAY_PUSH_IDS = (8, 16)


def _stream_ids(wire: QuicWire) -> tuple[int, int, int]:
    """The client's own control, QPACK encoder and decoder stream ids (aioquic internals)."""
    internals()
    h3 = wire.h3
    assert h3 is not None
    ids = (h3._local_control_stream_id, h3._local_encoder_stream_id, h3._local_decoder_stream_id)
    assert None not in ids
    return ids  # type: ignore[return-value]


async def _settings(wire: QuicWire, ctx: CaseContext) -> bool:
    """Wait for the server's SETTINGS (policy 5)."""
    return await wire.wait_for(lambda: wire.settings is not None, ctx.wait())


async def _served(wire: QuicWire, ctx: CaseContext, sid: int) -> Outcome:
    """The request on `sid` got a 200 and the connection lives."""
    st = await wire.response(sid, ctx.wait(5.0))
    if st.status == 200 and wire.terminated is None:
        return passed("ignored; request served")
    if wire.terminated is not None:
        return failed(f"not served: {wire.close_text()}")
    if st.reset is not None:
        return failed(f"not served: RESET_STREAM {error_name(st.reset)}")
    return failed(f"not served: {st.status or 'no response'}")


# --- H3-01 ----------------------------------------------------------------------------------
@case(
    "H3-01",
    "h3",
    "ALPN h3 is selected; an unknown ALPN alone fails the handshake",
    "RFC 9114 §3.2; RFC 9001 §8.1",
    "MUST",
    needs={"h3"},
)
async def alpn(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        if wire.alpn != "h3":
            return failed(f"ALPN {wire.alpn!r} selected")
    cfg = client_configuration(ctx, alpn=("dummy",))
    async with open_quic(ctx, cfg, h3=False, handshake=False) as wire:
        codes = {NO_APPLICATION_PROTOCOL, HANDSHAKE_FAILURE, TLS_INTERNAL_ERROR}
        refused = await quic_conn_error(wire, codes, ctx.wait(), transport=True)
        if wire.handshake is not None:
            return failed(f"handshake completed with ALPN {wire.alpn!r}")
    return combine([("h3", passed("selected")), ("dummy only", refused)])


# --- H3-02 ----------------------------------------------------------------------------------
@case(
    "H3-02",
    "h3",
    "control stream with SETTINGS first, QPACK streams; ≥ 3 uni (≥ 100 bidi) streams allowed",
    "RFC 9114 §6.1, §6.2, §6.2.1, §7.2.4",
    "MUST",
    needs={"h3"},
)
async def control_streams(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        internals()
        uni, bidi = wire.quic._remote_max_streams_uni, wire.quic._remote_max_streams_bidi
        if not await _settings(wire, ctx):
            return failed(f"no SETTINGS on a control stream ({wire.close_text()})")
        await wire.wait_for(lambda: {2, 3} <= set(wire.peer_uni_types.values()), 0.2)
        types = sorted(wire.peer_uni_types.values())
        settings = wire.settings or {}
    if types.count(StreamType.CONTROL) != 1:
        return failed(f"{types.count(0)} control streams (stream types {types})")
    if uni < MIN_UNI_STREAMS:
        return failed(f"initial_max_streams_uni {uni} < 3")
    notes = [] if bidi >= RECOMMENDED_BIDI_STREAMS else [f"SHOULD allow ≥ 100 bidi, allows {bidi}"]
    if not {StreamType.QPACK_ENCODER, StreamType.QPACK_DECODER} <= set(types):
        notes.append(f"QPACK streams not opened (types {types}; allowed when unused)")
    shown = ", ".join(f"0x{k:x}={v}" for k, v in sorted(settings.items()))
    return passed(f"SETTINGS {{{shown}}}; uni {uni}, bidi {bidi}", notes=notes)


# --- H3-03 ----------------------------------------------------------------------------------
async def _control_stream_case(ctx: CaseContext, payload: bytes, codes: set[int]) -> Outcome:
    """Open our own control stream (no aioquic H3 layer) carrying `payload` after its type."""
    async with open_quic(ctx, h3=False) as wire:
        sid = wire.quic.get_next_available_stream_id(is_unidirectional=True)
        wire.quic.send_stream_data(sid, encode_uint_var(StreamType.CONTROL) + payload)
        wire.transmit()
        return await quic_conn_error(wire, codes, ctx.wait())


@case(
    "H3-03",
    "h3",
    "control stream: MAX_PUSH_ID before SETTINGS, a second SETTINGS, HTTP/2 setting IDs",
    "RFC 9114 §6.2.1, §7.2.4, §7.2.4.1",
    "MUST",
    needs={"h3"},
)
async def control_stream_rules(ctx: CaseContext) -> Outcome:
    settings = encode_frame(FrameType.SETTINGS, encode_settings({}))
    variants = {
        "MAX_PUSH_ID first": (
            encode_frame(FrameType.MAX_PUSH_ID, encode_uint_var(8)),
            {H3_MISSING_SETTINGS},
        ),
        "second SETTINGS": (settings + settings, {H3_FRAME_UNEXPECTED}),
        "HTTP/2 setting 0x2": (
            encode_frame(FrameType.SETTINGS, encode_settings({HTTP2_SETTING: 0})),
            {H3_SETTINGS_ERROR},
        ),
    }
    return await _concurrently(ctx, variants, _control_stream_case)


async def _concurrently(ctx: CaseContext, variants: dict, run: object) -> Outcome:
    """Run `run(ctx, *args)` for every variant at once; combine the outcomes in order."""
    results: dict[str, Outcome] = {}

    async def one(label: str, args: tuple) -> None:
        assert callable(run)
        results[label] = await run(ctx, *args)

    async with trio.open_nursery() as nursery:
        for label, args in variants.items():
            nursery.start_soon(one, label, args)
    return combine([(k, results[k]) for k in variants])


# --- H3-04 ----------------------------------------------------------------------------------
async def _frame_on(ctx: CaseContext, where: str, frame: bytes) -> Outcome:
    async with open_quic(ctx) as wire:
        await _settings(wire, ctx)
        if where == "control":
            sid = _stream_ids(wire)[0]
            wire.quic.send_stream_data(sid, frame)
        else:  # a new request stream, the frame before HEADERS
            sid = wire.quic.get_next_available_stream_id()
            wire.quic.send_stream_data(sid, frame)
            assert wire.h3 is not None
            wire.h3.send_headers(sid, wire.request_headers("GET", routes.HEALTHZ), end_stream=True)
        wire.transmit()
        return await quic_conn_error(wire, {H3_FRAME_UNEXPECTED}, ctx.wait())


@case(
    "H3-04",
    "h3",
    "frames where they are not allowed: DATA first, DATA/HEADERS on control, GOAWAY on request",
    "RFC 9114 §4.1, §7.2.1, §7.2.2, §7.2.5, §7.2.6",
    "MUST",
    needs={"h3"},
)
async def unexpected_frames(ctx: CaseContext) -> Outcome:
    internals()
    variants = {
        "DATA before HEADERS": ("request", encode_frame(FrameType.DATA, b"early")),
        "DATA on control": ("control", encode_frame(FrameType.DATA, b"x")),
        "HEADERS on control": ("control", encode_frame(FrameType.HEADERS, b"\x00\x00")),
        "CANCEL_PUSH on request": ("request", encode_frame(FrameType.CANCEL_PUSH, b"\x00")),
        "GOAWAY on request": ("request", encode_frame(FrameType.GOAWAY, b"\x00")),
    }
    return await _concurrently(ctx, variants, _frame_on)


# --- H3-05 ----------------------------------------------------------------------------------
class _GreaseSettings(H3Connection):
    """aioquic's H3Connection announcing an unknown setting too."""

    def _get_local_settings(self) -> dict[int, int]:
        return {**super()._get_local_settings(), RESERVED: 7}


async def _grease(ctx: CaseContext, kind: str) -> Outcome:
    h3_class = _GreaseSettings if kind == "setting" else H3Connection
    async with open_quic(ctx, h3_class=h3_class) as wire:
        await _settings(wire, ctx)
        q = wire.quic
        if kind == "stream":
            uni = q.get_next_available_stream_id(is_unidirectional=True)
            q.send_stream_data(uni, encode_uint_var(RESERVED) + b"ignore this stream")
        sid = q.get_next_available_stream_id()
        if kind == "frame":
            q.send_stream_data(sid, encode_frame(RESERVED, b"grease"))
        assert wire.h3 is not None
        wire.h3.send_headers(sid, wire.request_headers("GET", routes.HEALTHZ), end_stream=True)
        wire.transmit()
        return await _served(wire, ctx, sid)


@case(
    "H3-05",
    "h3",
    "reserved frame types, stream types and setting IDs are ignored",
    "RFC 9114 §7.2.8, §6.2.3, §9",
    "MUST",
    needs={"h3"},
)
async def extensions_ignored(ctx: CaseContext) -> Outcome:
    variants = {
        "reserved frame": ("frame",),
        "reserved stream type": ("stream",),
        "unknown setting": ("setting",),
    }
    return await _concurrently(ctx, variants, _grease)


# --- H3-06 ----------------------------------------------------------------------------------
def _malformed(ctx: CaseContext) -> dict[str, list[tuple[bytes, bytes]]]:
    a = ctx.endpoint.authority.encode()
    m, s, au, p = (
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", a),
        (b":path", routes.HEALTHZ.encode()),
    )
    return {
        "duplicate pseudo-header": [m, m, s, au, p],
        "missing :scheme": [m, au, p],
        "missing :path": [m, s, au],
        "pseudo after field": [m, s, au, (b"x-regular", b"1"), p],
        "uppercase name": [m, s, au, p, (b"X-Upper", b"1")],
        "connection:": [m, s, au, p, (b"connection", b"keep-alive")],
        "Host ≠ :authority": [m, s, au, p, (b"host", b"other.invalid")],
    }


async def _malformed_one(ctx: CaseContext, headers: list[tuple[bytes, bytes]]) -> Outcome:
    async with open_quic(ctx) as wire:
        sid = wire.send_request(headers)
        return await h3_stream_error(wire, sid, {H3_MESSAGE_ERROR}, ctx.wait())


async def _host_only(ctx: CaseContext) -> Outcome:
    a = ctx.endpoint.authority.encode()
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/healthz"), (b"host", a)]
    async with open_quic(ctx) as wire:
        return await _served(wire, ctx, wire.send_request(headers))


@case(
    "H3-06",
    "h3",
    "malformed requests are H3_MESSAGE_ERROR; a request with Host and no :authority is served",
    "RFC 9114 §4.1.2, §4.2, §4.3.1",
    "MUST",
    needs={"h3"},
)
async def malformed_requests(ctx: CaseContext) -> Outcome:
    variants: dict[str, tuple] = {k: (v,) for k, v in _malformed(ctx).items()}
    rejected = await _concurrently(ctx, variants, _malformed_one)
    host_only = await _host_only(ctx)
    if host_only.status == "passed":
        host_only = passed("served")
    return combine([("malformed", rejected), ("Host instead of :authority", host_only)])


# --- H3-07 ----------------------------------------------------------------------------------
async def h3_counter(ctx: CaseContext) -> int | None:
    """GET /counter over a fresh HTTP/3 connection: the value, or None."""
    async with open_quic(ctx) as wire:
        st = await wire.response(wire.get(routes.COUNTER), ctx.wait(5.0))
        return routes.counter_value(st.body) if st.status == 200 else None


@case(
    "H3-07",
    "h3",
    "content-length larger than the DATA is H3_MESSAGE_ERROR and never reaches the application",
    "RFC 9114 §4.1.2",
    "MUST",
    needs={"h3"},
)
async def content_length(ctx: CaseContext) -> Outcome:
    path = routes.COUNTER if ctx.endpoint.counter else routes.ECHO
    before = await h3_counter(ctx) if ctx.endpoint.counter else None
    async with open_quic(ctx) as wire:
        head = wire.request_headers("POST", path, [(b"content-length", b"10")])
        sid = wire.send_request(head, b"12345")
        outcome = await h3_stream_error(wire, sid, {H3_MESSAGE_ERROR}, ctx.wait())
        if outcome.status == "failed" and wire.stream(sid).status in (404, 405):
            return unsupported(f"no route reads a request body ({path}: {wire.stream(sid).status})")
    if before is not None:
        after = await h3_counter(ctx)
        if after != before:
            return failed(f"{outcome.reason}, but /counter went from {before} to {after}")
        return outcome.with_notes([f"/counter unchanged ({before})"])
    return outcome


# --- H3-08 ----------------------------------------------------------------------------------
@case(
    "H3-08",
    "h3",
    "closing the client's control stream is H3_CLOSED_CRITICAL_STREAM",
    "RFC 9114 §6.2.1",
    "MUST",
    needs={"h3"},
)
async def closed_control_stream(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        await _settings(wire, ctx)
        wire.quic.send_stream_data(_stream_ids(wire)[0], b"", end_stream=True)
        wire.transmit()
        return await quic_conn_error(wire, {H3_CLOSED_CRITICAL_STREAM}, ctx.wait())


# --- H3-09 ----------------------------------------------------------------------------------
async def _qpack(ctx: CaseContext, where: str, data: bytes, code: int) -> Outcome:
    async with open_quic(ctx) as wire:
        await _settings(wire, ctx)
        _control, encoder, decoder = _stream_ids(wire)
        if where == "request":
            sid = wire.quic.get_next_available_stream_id()
            wire.quic.send_stream_data(sid, encode_frame(FrameType.HEADERS, data), end_stream=True)
        else:
            wire.quic.send_stream_data(encoder if where == "encoder" else decoder, data)
        wire.transmit()
        return await quic_conn_error(wire, {code}, ctx.wait())


@case(
    "H3-09",
    "h3",
    "QPACK: static index 99, a table capacity above the limit, Insert Count Increment 0",
    "RFC 9204 §3.1, §4.1.3, §4.4.3",
    "MUST",
    needs={"h3"},
)
async def qpack_errors(ctx: CaseContext) -> Outcome:
    internals()
    variants = {
        "static index 99": (
            "request",
            b"\x00\x00" + prefix_int(99, 6, 0xC0),
            QPACK_DECOMPRESSION_FAILED,
        ),
        "capacity 10^10": ("encoder", prefix_int(10**10, 5, 0x20), QPACK_ENCODER_STREAM_ERROR),
        "increment 0": ("decoder", prefix_int(0, 6, 0x00), QPACK_DECODER_STREAM_ERROR),
    }
    return await _concurrently(ctx, variants, _qpack)


# --- H3-10 ----------------------------------------------------------------------------------
@case(
    "H3-10",
    "h3",
    "a cancelled request (RESET_STREAM + STOP_SENDING) stops the response; the connection lives",
    "RFC 9114 §4.1.1",
    "MUST",
    impaired=True,
    needs={"h3"},
)
async def cancel_request(ctx: CaseContext) -> Outcome:
    n = routes.BIG
    if not ctx.endpoint.serves_bytes(n):
        return unsupported(f"the target does not serve /bytes/{n}")
    async with open_quic(ctx) as wire:
        sid = wire.get(routes.bytes_path(n))
        st = wire.stream(sid)
        if not await wire.wait_for(lambda: len(st.body) >= 64 * 1024, ctx.wait(5.0)):
            return failed(f"response did not start ({wire.close_text()})")
        wire.quic.reset_stream(sid, H3_REQUEST_CANCELLED)
        wire.quic.stop_stream(sid, H3_REQUEST_CANCELLED)
        wire.transmit()
        if not await wire.wait_for(lambda: st.reset is not None or st.ended, ctx.wait()):
            return failed(f"no RESET_STREAM after STOP_SENDING ({wire.close_text()})")
        if st.reset is None:
            return failed(
                f"the response ran to its end ({len(st.body):,} bytes) after STOP_SENDING"
            )
        got = len(st.body)
        follow = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        if follow.status != 200:
            return failed(f"connection unusable after the cancel ({wire.close_text()})")
    return passed(f"RESET_STREAM {error_name(st.reset)} after {got:,} bytes; next request served")


# --- H3-11 ----------------------------------------------------------------------------------
def _long_request(wire: QuicWire, ctx: CaseContext) -> tuple[int, int | None]:
    """Start a long response: a watch, else /bytes/5000000; (stream id, expected size)."""
    if ctx.endpoint.watch:
        return wire.get(routes.watch_path()), None
    return wire.get(routes.bytes_path(routes.BIG)), routes.BIG


@case(
    "H3-11",
    "h3",
    "graceful shutdown: GOAWAY ids (×4, never rising), in-flight completes, H3_NO_ERROR close",
    "RFC 9114 §5.2, §7.2.6, §4.1.1",
    "MUST",
    impaired=True,
    needs={"h3", "drain"},
)
async def graceful_shutdown(ctx: CaseContext) -> Outcome:
    assert ctx.server is not None
    if not ctx.endpoint.watch and not ctx.endpoint.serves_bytes(routes.BIG):
        return unsupported("needs the watch route or /bytes/5000000 for a long response")
    grace = ctx.wait(15.0)
    async with open_quic(ctx, close=False) as wire:
        sid, size = _long_request(wire, ctx)
        st = wire.stream(sid)
        if not await wire.wait_for(lambda: st.status is not None, ctx.wait(5.0)):
            return failed(f"no response head ({wire.close_text()})")
        ctx.server.drain()
        if not await wire.wait_for(lambda: wire.goaways, ctx.wait(5.0)):
            return failed(f"no GOAWAY after SIGTERM ({wire.close_text()})")
        late = wire.get(routes.HEALTHZ) if wire.terminated is None else None
        await wire.wait_for(lambda: st.ended or st.reset is not None, grace)
        await wire.wait_for(lambda: wire.terminated is not None, grace)
        return _judge_drain(wire, sid, size, late)


def _judge_drain(wire: QuicWire, sid: int, size: int | None, late: int | None) -> Outcome:
    ids = wire.goaways
    if any(i % 4 for i in ids):
        return failed(f"GOAWAY ids {ids} are not client-initiated bidirectional stream ids")
    if any(b > a for a, b in itertools.pairwise(ids)):
        return failed(f"GOAWAY ids increased: {ids}")
    st = wire.stream(sid)
    if st.reset is not None or not st.ended:
        cut = error_name(st.reset) if st.reset is not None else "cut"
        return failed(f"GOAWAY {ids}; stream {sid} did not complete ({cut})")
    if size is not None and (problem := routes.body_problem(st.body, size)):
        return failed(f"stream {sid}: {problem}")
    late_text = "no request after GOAWAY (closed)"
    if late is not None:
        lst = wire.stream(late)
        if late >= min(ids) and lst.status is not None:
            return failed(f"stream {late} ≥ GOAWAY id {min(ids)} was served ({lst.status})")
        late_text = (
            f"stream {late} rejected ({error_name(lst.reset)})"
            if lst.reset is not None
            else f"stream {late} not processed"
            if lst.status is None
            else f"stream {late} served (below the GOAWAY id)"
        )
    if wire.terminated is None:
        return failed(f"GOAWAY {ids}; the connection was not closed after the drain")
    if wire.terminated.error_code != H3_NO_ERROR:
        return failed(f"GOAWAY {ids}; closed with {wire.close_text()}")
    return passed(f"GOAWAY {ids}; stream {sid} completed; {late_text}; H3_NO_ERROR")


# --- H3-12 ----------------------------------------------------------------------------------
@case(
    "H3-12",
    "h3",
    "a client GOAWAY with a larger push ID than before is H3_ID_ERROR",
    "RFC 9114 §5.2",
    "MUST",
    needs={"h3"},
)
async def goaway_increase(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        await _settings(wire, ctx)
        control = _stream_ids(wire)[0]
        for push_id in GOAWAY_PUSH_IDS:
            wire.quic.send_stream_data(
                control, encode_frame(FrameType.GOAWAY, encode_uint_var(push_id))
            )
        wire.transmit()
        return await quic_conn_error(wire, {H3_ID_ERROR}, ctx.wait())


# --- H3-13 ----------------------------------------------------------------------------------
@case(
    "H3-13",
    "h3",
    "a header section above the server's limit gets 431 or a reset; the connection survives",
    "RFC 9114 §4.2.2",
    "MUST",
    needs={"h3"},
)
async def field_section_too_large(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        await _settings(wire, ctx)
        limit = (wire.settings or {}).get(MAX_FIELD_SECTION_SIZE)
        if limit is not None and limit > HUGE_FIELD_SECTION:
            limit = None  # e.g. 2^62-1: no limit in practice
        size = (limit or DEFAULT_FIELD_SECTION_LIMIT) + 16 * 1024
        big = [(b"x-large", b"v" * 4000)] * (size // 4000 + 1)
        sid = wire.send_request(wire.request_headers("GET", routes.HEALTHZ, big))
        st = await wire.response(sid, ctx.wait(5.0))
        if wire.terminated is not None:
            return failed(
                f"{size:,}-byte header section closed the connection: {wire.close_text()}"
            )
        if st.status == 431 or st.reset is not None:
            how = "431" if st.status == 431 else f"RESET_STREAM {error_name(st.reset or 0)}"
            outcome = passed(f"{size:,} bytes: {how}")
        elif st.status is not None and limit is None:
            outcome = passed(f"{size:,} bytes served ({st.status}); no limit advertised")
        else:
            return failed(f"{size:,} bytes (limit {limit}): {st.status or 'no answer'}")
        follow = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        if follow.status != 200:
            return failed(f"{outcome.reason}; the next request failed ({wire.close_text()})")
    return outcome
