"""QUIC transport (RFC 9000, 9001, 9002, 9368, 9369): cases Q-01 … Q-14.

Socket-level cases (Q-02, Q-05, Q-06) send raw datagrams built by lab.conform.initial; the
internals cases subclass aioquic's QuicConnection (transport parameters, a PATH_CHALLENGE
counter) or move its limits, guarded by `internals()`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import trio
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import (
    QuicFrameType,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)
from cryptography.hazmat.primitives.serialization import Encoding

from lab.conform import routes
from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.expect import combine, quic_conn_error
from lab.conform.initial import first_flight, strip_padding, version_negotiation_versions
from lab.conform.model import Outcome, failed, passed, skipped, unsupported
from lab.conform.quicwire import (
    FLOW_CONTROL_ERROR,
    STREAM_LIMIT_ERROR,
    TRANSPORT_PARAMETER_ERROR,
    client_configuration,
    error_name,
    internals,
    open_quic,
)
from lab.peers.probe import version_negotiation_probe

VERSION_1, VERSION_2, RESERVED_VERSION = 0x00000001, 0x6B3343CF, 0x1A2A3A4A
AMPLIFICATION_FACTOR = 3
LARGE_CHAIN_BYTES = 8_000  # a chain this large cannot fit in 3 × 1200 bytes
SILENT_S = 3.0  # an anti-amplification probe listens this long (the server's PTOs)
GETS = 2_000
IN_FLIGHT = 50
SMALL_WINDOW = 64 * 1024
REBIND_AFTER_BYTES = 200_000
IDLE_MARGIN_S = 1.0
HANDSHAKES = 10


async def _recv_all(sock: trio.socket.SocketType, seconds: float, until: Any = None) -> list[bytes]:
    """Every datagram `sock` receives for `seconds` (or until `until(datagram)` is true)."""
    got: list[bytes] = []
    with trio.move_on_after(seconds):
        while True:
            got.append(await sock.recv(65_536))
            if until is not None and until(got[-1]):
                break
    return got


def _udp(ctx: CaseContext) -> trio.socket.SocketType:
    raw = ctx.socket(socket.SOCK_DGRAM)
    raw.connect((ctx.endpoint.host, ctx.endpoint.port))
    return trio.socket.from_stdlib_socket(raw)


# --- Q-01 -----------------------------------------------------------------------------------
@case(
    "Q-01",
    "quic",
    "one connection, one GET: one handshake, no Retry, 200",
    "RFC 9000 §7",
    "MUST",
    needs={"h3"},
)
async def handshake(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        internals()
        retries = wire.quic._retry_count
    if st.status != 200:
        return failed(f"GET /healthz: {st.status or wire.close_text()}")
    if retries:
        return failed("the server sent Retry without being configured for it")
    return passed("1 handshake, no Retry, 200")


# --- Q-02 -----------------------------------------------------------------------------------
@case(
    "Q-02",
    "quic",
    "a reserved version gets Version Negotiation listing v1; v1 then connects",
    "RFC 9000 §6",
    "SHOULD",
    needs={"h3"},
)
async def version_negotiation(ctx: CaseContext) -> Outcome:
    dcid, scid = os.urandom(8), os.urandom(8)
    sock = _udp(ctx)
    with sock:
        await sock.send(version_negotiation_probe(dcid, scid))
        answers = await _recv_all(sock, ctx.wait(1.0), version_negotiation_versions)
    lists = [v for v in map(version_negotiation_versions, answers) if v is not None]
    if not lists:
        return failed(f"no Version Negotiation ({len(answers)} other datagrams)")
    if VERSION_1 not in lists[0]:
        return failed(f"Version Negotiation lists {[hex(v) for v in lists[0]]}, not v1")
    async with open_quic(ctx) as wire:
        version = wire.quic._version
    if version != VERSION_1:
        return failed(f"then connected with version 0x{version:x}")
    return passed(f"VN lists {', '.join(f'0x{v:x}' for v in lists[0])}; v1 connects")


# --- Q-03 -----------------------------------------------------------------------------------
@case(
    "Q-03",
    "quic",
    "v1 offering v2: compatible version negotiation to v2, or v1 (informational)",
    "RFC 9368, RFC 9369",
    "MAY",
    needs={"h3"},
)
async def compatible_version(ctx: CaseContext) -> Outcome:
    internals()
    cfg = client_configuration(ctx)
    cfg.original_version = VERSION_1
    cfg.supported_versions = [VERSION_1, VERSION_2]
    async with open_quic(ctx, cfg) as wire:
        st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        version = wire.quic._version
    if st.status != 200:
        return failed(f"offering v2 broke the connection: {wire.close_text()}")
    name = "v2 (compatible negotiation)" if version == VERSION_2 else "stayed on v1"
    return passed(name)


# --- Q-04 -----------------------------------------------------------------------------------
@case(
    "Q-04",
    "quic",
    "a server configured for Retry: Retry, token in the next Initial, CIDs validate, 1 handshake",
    "RFC 9000 §8.1.2, §7.3, §17.2.5",
    "MUST",
    needs={"h3", "retry"},
)
async def retry(ctx: CaseContext) -> Outcome:
    assert ctx.retry_server is not None
    internals()
    with ctx.retry_server() as endpoint:
        rctx = CaseContext(endpoint, ctx.make_socket, ctx.path, ctx.timing, artifacts=ctx.artifacts)
        try:
            async with open_quic(rctx) as wire:
                st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
                retries = wire.quic._retry_count
        except ConnectionError as e:
            return failed(f"after Retry: {e}")
    if not retries:
        return failed("configured for Retry but sent none")
    if st.status != 200:
        return failed(f"Retry, then GET: {st.status or wire.close_text()}")
    return passed("Retry; token echoed; transport-parameter CIDs validated; 200")


# --- Q-05 -----------------------------------------------------------------------------------
async def _chain_bytes(ctx: CaseContext) -> int:
    """The DER size of the server's certificate chain, from a real handshake (internals)."""
    async with open_quic(ctx, h3=False) as wire:
        t: Any = wire.quic.tls
        certs = [t._peer_certificate, *getattr(t, "_peer_certificate_chain", [])]
    return sum(len(c.public_bytes(Encoding.DER)) for c in certs if c is not None)


@case(
    "Q-05",
    "quic",
    "anti-amplification: before validation the server sends at most 3 × what it received",
    "RFC 9000 §8.1, §21.1.1.1",
    "MUST",
    needs={"h3"},
)
async def amplification(ctx: CaseContext) -> Outcome:
    internals()
    chain = await _chain_bytes(ctx)
    (datagram, *_) = first_flight(ctx.endpoint.server_name, (ctx.endpoint.host, ctx.endpoint.port))
    sock = _udp(ctx)
    with sock:
        await sock.send(datagram)
        answers = await _recv_all(sock, ctx.wait(SILENT_S))
    sent, limit = len(datagram), AMPLIFICATION_FACTOR * len(datagram)
    got = sum(map(len, answers))
    if got > limit:
        ratio = got / sent
        return failed(
            f"{got:,} bytes in {len(answers)} datagrams to {sent:,} received ({ratio:.2f}×)"
        )
    notes = []
    if chain < LARGE_CHAIN_BYTES:
        notes.append(f"certificate chain only {chain:,} bytes: the limit was hardly exercised")
    return passed(
        f"{got:,} bytes to {sent:,} received (≤ {limit:,}); chain {chain:,} B", notes=notes
    )


# --- Q-06 -----------------------------------------------------------------------------------
@case(
    "Q-06",
    "quic",
    "an Initial in a datagram below 1200 bytes is dropped",
    "RFC 9000 §14.1",
    "MUST",
    needs={"h3"},
)
async def small_initial(ctx: CaseContext) -> Outcome:
    (datagram, *_) = first_flight(ctx.endpoint.server_name, (ctx.endpoint.host, ctx.endpoint.port))
    short = strip_padding(datagram)
    sock = _udp(ctx)
    with sock:
        await sock.send(short)
        answers = await _recv_all(sock, ctx.wait(1.0))
    if answers:
        return failed(f"answered a {len(short)}-byte Initial with {len(answers)} datagram(s)")
    return passed(f"{len(short)}-byte Initial dropped silently")


# --- Q-07 -----------------------------------------------------------------------------------
def _tp_connection(change: str) -> type[QuicConnection]:
    """A client QuicConnection whose transport parameters break one rule."""

    class BadParameters(QuicConnection):
        def _serialize_transport_parameters(self) -> bytes:
            params = pull_quic_transport_parameters(
                Buffer(data=super()._serialize_transport_parameters())
            )
            if change == "max_udp_payload_size":
                params.max_udp_payload_size = 1100
            elif change == "ack_delay_exponent":
                params.ack_delay_exponent = 30
            else:
                params.stateless_reset_token = os.urandom(16)
            buf = Buffer(capacity=4096)
            push_quic_transport_parameters(buf, params)
            return buf.data

    return BadParameters


async def _bad_tp(ctx: CaseContext, change: str) -> Outcome:
    cls = _tp_connection(change)
    async with open_quic(ctx, h3=False, connection_class=cls, handshake=False) as wire:
        return await quic_conn_error(wire, {TRANSPORT_PARAMETER_ERROR}, ctx.wait(), transport=True)


@case(
    "Q-07",
    "quic",
    "invalid client transport parameters are TRANSPORT_PARAMETER_ERROR",
    "RFC 9000 §7.4, §18.2",
    "MUST",
    needs={"h3"},
)
async def transport_parameters(ctx: CaseContext) -> Outcome:
    internals()
    parts = []
    for label, change in (
        ("max_udp_payload_size 1100", "max_udp_payload_size"),
        ("ack_delay_exponent 30", "ack_delay_exponent"),
        ("client stateless_reset_token", "stateless_reset_token"),
    ):
        parts.append((label, await _bad_tp(ctx, change)))
    return combine(parts)


# --- Q-08 -----------------------------------------------------------------------------------
async def _many_gets(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        internals()
        initial_bidi = wire.quic._remote_max_streams_bidi
        done = 0
        open_ids: list[int] = []
        while done < GETS:
            while len(open_ids) < IN_FLIGHT and done + len(open_ids) < GETS:
                open_ids.append(wire.get(routes.HEALTHZ))
            first = wire.stream(open_ids[0])
            if not await wire.wait_for(first.done, ctx.timing.stall()):
                return failed(f"stalled after {done} of {GETS} GETs ({wire.close_text()})")
            for sid in [s for s in open_ids if wire.stream(s).ended or wire.stream(s).reset]:
                st = wire.streams.pop(sid)
                if st.status != 200:
                    return failed(f"GET {done + 1}: {st.status or error_name(st.reset or 0)}")
                open_ids.remove(sid)
                done += 1
        final = wire.quic._remote_max_streams_bidi
    notes = (
        [] if initial_bidi >= 100 else [f"SHOULD allow ≥ 100 bidi streams, allows {initial_bidi}"]
    )
    return passed(f"{GETS} GETs; MAX_STREAMS {initial_bidi} → {final}", notes=notes)


async def _over_limit(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        q = wire.quic
        limit = q._remote_max_streams_bidi
        q._remote_max_streams_bidi = limit + 8  # so aioquic opens the stream instead of queueing
        q.send_stream_data(4 * limit, b"over the limit", end_stream=True)
        wire.transmit()
        return await quic_conn_error(wire, {STREAM_LIMIT_ERROR}, ctx.wait(), transport=True)


@case(
    "Q-08",
    "quic",
    "streams: 2,000 GETs on one connection (MAX_STREAMS); a stream over the limit",
    "RFC 9000 §4.6; RFC 9114 §6.1",
    "MUST",
    impaired=True,
    needs={"h3"},
)
async def stream_limits(ctx: CaseContext) -> Outcome:
    internals()
    parts = [("2000 GETs", await _many_gets(ctx))]
    if ctx.path == "clean":  # a protocol violation: on the clean path only
        parts.append(("stream over the limit", await _over_limit(ctx)))
    return combine(parts)


# --- Q-09 -----------------------------------------------------------------------------------
class _SteadyWindows(QuicConnection):
    """A client that grants a stream 64 KiB of credit ahead of what arrived, never more
    (aioquic doubles its windows, which a sender ignoring them would never overrun)."""

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        ahead = stream.receiver.highest_offset + SMALL_WINDOW
        if (
            stream.max_stream_data_local
            and ahead - SMALL_WINDOW // 2 > stream.max_stream_data_local
        ):
            stream.max_stream_data_local = ahead
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


async def _small_windows(ctx: CaseContext) -> Outcome:
    n = routes.BIG if ctx.path == "clean" else routes.LARGE  # a short run under impairment
    cfg = client_configuration(ctx)
    cfg.max_data = cfg.max_stream_data = SMALL_WINDOW
    async with open_quic(ctx, cfg, connection_class=_SteadyWindows) as wire:
        st = await wire.transfer(
            wire.get(routes.bytes_path(n)), ctx.timing.stall(), ctx.timing.transfer(n)
        )
        if wire.terminated is not None:
            return failed(f"{wire.close_text()} at {len(st.body):,} bytes")
        if not st.ended:
            return failed(f"incomplete: {len(st.body):,} of {n:,} bytes")
        if problem := routes.body_problem(st.body, n):
            return failed(problem)
    return passed(f"{n:,} bytes, never more than 64 KiB ahead")  # 5 MB clean, 1 MiB impaired


async def _past_window(ctx: CaseContext) -> Outcome:
    async with open_quic(ctx) as wire:
        q = wire.quic
        limit = q._remote_max_stream_data_bidi_remote
        sid = q.get_next_available_stream_id()
        stream = q._get_or_create_stream_for_send(sid)
        stream.max_stream_data_remote = limit + 64 * 1024
        sender = stream.sender
        sender._buffer_start = sender._buffer_stop = sender.highest_offset = limit
        q.send_stream_data(sid, b"x" * 1000, end_stream=True)  # bytes [limit, limit + 1000)
        wire.transmit()
        return await quic_conn_error(wire, {FLOW_CONTROL_ERROR}, ctx.wait(), transport=True)


@case(
    "Q-09",
    "quic",
    "flow control: the server respects 64 KiB client windows; data past its own is an error",
    "RFC 9000 §4.1, §4.5",
    "MUST",
    impaired=True,
    needs={"h3"},
)
async def flow_control(ctx: CaseContext) -> Outcome:
    internals()
    if not ctx.endpoint.serves_bytes(routes.BIG):
        return unsupported(f"the target does not serve /bytes/{routes.BIG}")
    parts = [("64 KiB windows", await _small_windows(ctx))]
    if ctx.path == "clean":
        parts.append(("STREAM past MAX_STREAM_DATA", await _past_window(ctx)))
    return combine(parts)


# --- Q-10 -----------------------------------------------------------------------------------
@case(
    "Q-10",
    "quic",
    "a client key update, then 3 MB: no error, the server answers in the new key phase",
    "RFC 9001 §6",
    "MUST",
    impaired=True,
    needs={"h3"},
)
async def key_update(ctx: CaseContext) -> Outcome:
    internals()
    n = routes.KEY_UPDATE if ctx.path == "clean" else routes.LARGE
    if not ctx.endpoint.serves_bytes(n):
        return unsupported(f"the target does not serve /bytes/{n}")
    async with open_quic(ctx) as wire:
        q = wire.quic
        first = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        if first.status != 200 or not await wire.wait_for(
            lambda: q._handshake_confirmed, ctx.wait()
        ):
            return failed(f"handshake not confirmed ({wire.close_text()})")
        crypto = q._cryptos[tls.Epoch.ONE_RTT]
        q.request_key_update()
        st = await wire.transfer(
            wire.get(routes.bytes_path(n)), ctx.timing.stall(), ctx.timing.transfer(n)
        )
        if wire.terminated is not None or not st.ended:
            return failed(f"after the key update: {wire.close_text()}, {len(st.body):,} bytes")
        if problem := routes.body_problem(st.body, n):
            return failed(problem)
        phases = (crypto.send.key_phase, crypto.recv.key_phase)
        if phases != (1, 1):
            return failed(f"key phases (send, receive) {phases} after the update, not (1, 1)")
        q.request_key_update()
        again = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        second = (crypto.send.key_phase, crypto.recv.key_phase)
    if again.status != 200 or second != (0, 0):
        return failed(f"second update: status {again.status}, phases {second}")
    return passed(f"{n:,} bytes in key phase 1; a second update back to phase 0")


# --- Q-11 -----------------------------------------------------------------------------------
class _ChallengeCounter(QuicConnection):
    """Counts the PATH_CHALLENGE frames the server sends."""

    path_challenges = 0

    def _handle_path_challenge_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        self.path_challenges += 1
        super()._handle_path_challenge_frame(context, frame_type, buf)


@case(
    "Q-11",
    "quic",
    "a new client port mid-transfer: the server validates the path; the transfer completes",
    "RFC 9000 §8.2, §9",
    "MUST",
    impaired=True,
    needs={"h3"},
)
async def rebinding(ctx: CaseContext) -> Outcome:
    internals()
    n = routes.LARGE
    if not ctx.endpoint.serves_bytes(n):
        return unsupported(f"the target does not serve /bytes/{n}")
    async with open_quic(ctx, connection_class=_ChallengeCounter) as wire:
        sid = wire.get(routes.bytes_path(n))
        st = wire.stream(sid)
        if not await wire.wait_for(lambda: len(st.body) >= REBIND_AFTER_BYTES, ctx.wait(5.0)):
            return failed(f"transfer did not start ({wire.close_text()})")
        wire.rebind()
        await wire.transfer(sid, ctx.timing.stall(), ctx.timing.transfer(n))
        challenges = getattr(wire.quic, "path_challenges", 0)
        if not st.ended:
            return failed(f"transfer stopped after rebinding at {len(st.body):,} bytes")
        if problem := routes.body_problem(st.body, n):
            return failed(problem)
    if not challenges:
        return failed("transfer completed but the server never validated the new path")
    return passed(f"{challenges} PATH_CHALLENGE on the new port; {n:,} bytes intact")


# --- Q-12 -----------------------------------------------------------------------------------
@case(
    "Q-12",
    "quic",
    "idle past the server's max_idle_timeout: its state is gone; a new connection works",
    "RFC 9000 §10.1",
    "MUST",
    needs={"h3"},
    slow=True,
)
async def idle_timeout(ctx: CaseContext) -> Outcome:
    internals()
    cfg = client_configuration(ctx)
    cfg.idle_timeout = 600.0
    async with open_quic(ctx, cfg) as wire:
        idle = wire.quic._remote_max_idle_timeout
        if not idle:
            return unsupported("the server disables its idle timeout (max_idle_timeout 0)")
        wire.quic._remote_max_idle_timeout = None  # our side stays: only the server times out
        await trio.sleep(idle + IDLE_MARGIN_S)
        st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait())
        ghost = st.status is not None
        reset = wire.stateless_reset
    if ghost:
        return failed(f"answered {st.status} after {idle:g} s idle (max_idle_timeout {idle:g} s)")
    async with open_quic(ctx) as fresh:
        again = await fresh.response(fresh.get(routes.HEALTHZ), ctx.wait(5.0))
    if again.status != 200:
        return failed(f"reconnect failed: {fresh.close_text()}")
    how = "stateless reset" if reset else "no answer"
    return passed(f"after {idle:g} s idle: {how}; reconnected")


# --- Q-13 -----------------------------------------------------------------------------------
@case(
    "Q-13",
    "quic",
    "after a server restart a request gets a stateless reset or times out, never hangs",
    "RFC 9000 §10.3",
    "MAY",
    needs={"h3", "restart"},
)
async def restart(ctx: CaseContext) -> Outcome:
    assert ctx.server is not None
    internals()
    cfg = client_configuration(ctx)
    cfg.idle_timeout = max(3.0, ctx.wait(3.0))
    async with open_quic(ctx, cfg) as wire:
        await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
        tokens = len(wire.reset_tokens())
        ctx.server.kill()
        await trio.to_thread.run_sync(ctx.server.restart)
        t0 = time.monotonic()
        st = await wire.response(wire.get(routes.HEALTHZ), cfg.idle_timeout + ctx.wait())
        waited = time.monotonic() - t0
        if st.status is not None:
            return failed("a restarted server answered on a connection it cannot know")
        if wire.stateless_reset:
            return passed(f"stateless reset after {waited:.1f} s ({tokens} tokens known)")
        if wire.terminated is None:
            return failed(f"no reset and no end after {waited:.1f} s")
    return passed(f"no stateless reset; the client gave up after {waited:.1f} s (idle timeout)")


# --- Q-14 -----------------------------------------------------------------------------------
@case(
    "Q-14",
    "quic",
    "handshakes and a 1 MiB transfer through the impaired link: hash OK, no errors",
    "RFC 9002; interop L1/L2/C1/B/LR",
    "MUST",
    impaired=True,
    needs={"h3", "link"},
)
async def impaired_transfers(ctx: CaseContext) -> Outcome:
    if ctx.path != "impaired":
        return skipped("runs through the impaired link only (--link)")
    n = routes.LARGE
    for i in range(HANDSHAKES):
        async with open_quic(ctx) as wire:
            st = await wire.response(wire.get(routes.HEALTHZ), ctx.wait(5.0))
            if st.status != 200:
                return failed(f"connection {i + 1}: {wire.close_text()}")
    if not ctx.endpoint.serves_bytes(n):
        return passed(f"{HANDSHAKES} handshakes; no /bytes/{n} for the transfer")
    async with open_quic(ctx) as wire:
        sid = wire.get(routes.bytes_path(n))
        st = await wire.transfer(sid, ctx.timing.stall(), ctx.timing.transfer(n))
        if wire.terminated is not None or not st.ended:
            return failed(f"transfer: {wire.close_text()}, {len(st.body):,} of {n:,} bytes")
        if problem := routes.body_problem(st.body, n):
            return failed(problem)
    return passed(f"{HANDSHAKES} handshakes + {n:,} bytes intact")
