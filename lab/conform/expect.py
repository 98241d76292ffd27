"""The pass/fail policy of the catalogue, once, for both protocols.

1. The specific error code or the generic one passes (PROTOCOL_ERROR / INTERNAL_ERROR for h2,
   H3_GENERAL_PROTOCOL_ERROR / H3_INTERNAL_ERROR and PROTOCOL_VIOLATION / INTERNAL_ERROR for QUIC).
2. A connection error where a stream error is specified passes as "passed (coarse)".
3. GOAWAY + FIN, a bare FIN or a reset close an h2 connection; CONNECTION_CLOSE or a stateless
   reset a QUIC one; the reason says which.
4. Frames that do not answer the question (WINDOW_UPDATE, SETTINGS, PING, …) are waited past.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lab.conform import h2wire
from lab.conform.h2wire import H2Wire
from lab.conform.model import Outcome, failed, passed
from lab.conform.quicwire import H3_GENERIC, TRANSPORT_GENERIC, QuicWire
from lab.conform.quicwire import error_name as quic_error_name

RESPONSE_RESET_GRACE_S = 0.3  # after a 4xx to a malformed request: time for its RST_STREAM


def _names(codes: Iterable[int], name: object) -> str:
    assert callable(name)
    return " or ".join(str(name(c)) for c in sorted(codes))


# --- HTTP/2 ---------------------------------------------------------------------------------
async def h2_conn_error(wire: H2Wire, codes: Iterable[int], timeout_s: float) -> Outcome:
    """A connection error with one of `codes` (or a generic one), or a plain close."""
    allowed = frozenset(codes) | h2wire.GENERIC_ERRORS
    if not await wire.wait_for(lambda: wire.conn_error is not None, timeout_s):
        return failed(f"no connection error within {timeout_s:g} s")
    code = wire.goaway_code()
    if code is None:
        return passed(f"{wire.conn_error} without GOAWAY (allowed)")
    if code in allowed:
        return passed(f"GOAWAY {h2wire.error_name(code)}")
    return failed(f"GOAWAY {h2wire.error_name(code)}, expected {_names(codes, h2wire.error_name)}")


async def h2_stream_error(
    wire: H2Wire,
    stream_id: int,
    codes: Iterable[int],
    timeout_s: float,
    *,
    stream_level: bool = True,
) -> Outcome:
    """RST_STREAM with one of `codes` on `stream_id`; a connection error with such a code (or a
    plain close) passes too — as "coarse" when the RFC specifies a stream error
    (`stream_level`). A response without a reset fails: the request was served."""
    allowed = frozenset(codes) | h2wire.GENERIC_ERRORS
    st = wire.stream(stream_id)
    await wire.wait_for(
        lambda: st.reset is not None or wire.conn_error is not None or st.ended, timeout_s
    )
    if st.ended and st.reset is None and wire.conn_error is None:
        await wire.wait_for(lambda: st.reset is not None, RESPONSE_RESET_GRACE_S)
    want = _names(codes, h2wire.error_name)
    if st.reset is not None:
        name = h2wire.error_name(st.reset)
        if st.reset in allowed:
            return passed(f"RST_STREAM {name}")
        return failed(f"RST_STREAM {name}, expected {want}")
    if wire.conn_error is not None:
        code = wire.goaway_code()
        if code is None or code in allowed:
            return passed(f"connection error ({wire.conn_error})", coarse=stream_level)
        return failed(f"GOAWAY {h2wire.error_name(code)}, expected {want}")
    if st.status is not None and st.status >= 400:
        return failed(f"answered {st.status} but sent no RST_STREAM (a stream error is required)")
    if st.ended or st.status is not None:
        return failed(f"served with status {st.status} and no stream error")
    return failed(f"no stream or connection error within {timeout_s:g} s")


# --- QUIC / HTTP/3 --------------------------------------------------------------------------
async def quic_conn_error(
    wire: QuicWire, codes: Iterable[int], timeout_s: float, *, transport: bool = False
) -> Outcome:
    """CONNECTION_CLOSE with one of `codes` (or a generic HTTP/3 or transport one)."""
    generic = TRANSPORT_GENERIC if transport else H3_GENERIC
    allowed = frozenset(codes) | generic
    done = await wire.wait_for(lambda: wire.terminated is not None, timeout_s)
    if wire.stateless_reset:
        return passed("stateless reset")
    if not done or wire.terminated is None:
        return failed(f"no CONNECTION_CLOSE within {timeout_s:g} s")
    code = wire.terminated.error_code
    if code in allowed:
        return passed(wire.close_text())
    return failed(f"{wire.close_text()}, expected {_names(codes, quic_error_name)}")


async def h3_stream_error(
    wire: QuicWire, stream_id: int, codes: Iterable[int], timeout_s: float
) -> Outcome:
    """RESET_STREAM or STOP_SENDING with one of `codes` on `stream_id`, or a connection close
    with such a code (coarse). A complete response fails."""
    allowed = frozenset(codes) | H3_GENERIC
    st = wire.stream(stream_id)
    await wire.wait_for(
        lambda: (
            st.reset is not None
            or st.stop_sending is not None
            or wire.terminated is not None
            or st.ended
        ),
        timeout_s,
    )
    want = _names(codes, quic_error_name)
    for kind, code in (("RESET_STREAM", st.reset), ("STOP_SENDING", st.stop_sending)):
        if code is not None:
            if code in allowed:
                return passed(f"{kind} {quic_error_name(code)}")
            return failed(f"{kind} {quic_error_name(code)}, expected {want}")
    if wire.terminated is not None:
        if wire.terminated.error_code in allowed:
            return passed(wire.close_text(), coarse=True)
        return failed(f"{wire.close_text()}, expected {want}")
    if st.ended or st.status is not None:
        return failed(f"served with status {st.status} and no stream error")
    return failed(f"no stream or connection error within {timeout_s:g} s")


# --- several sub-checks in one case ---------------------------------------------------------
def combine(parts: Sequence[tuple[str, Outcome]], *, should: Iterable[str] = ()) -> Outcome:
    """One outcome from labelled sub-checks: failed if a MUST part failed (a failed part named
    in `should` only adds a note), coarse if any part was, the parts' reasons joined."""
    optional = set(should)
    notes: list[str] = []
    bad = []
    for label, o in parts:
        notes += o.notes
        if o.status == "failed":
            if label in optional:
                notes.append(f"SHOULD not met: {label}: {o.reason}")
            else:
                bad.append(f"{label}: {o.reason}")
    if bad:
        return failed("; ".join(bad), notes=notes)
    coarse = [label for label, o in parts if o.coarse]
    if coarse:
        notes.append("stream-level errors preferred: " + ", ".join(coarse))
    reason = "; ".join(f"{label}: {o.reason}" for label, o in parts if o.status == "passed")
    return passed(reason, coarse=bool(coarse), notes=notes)
