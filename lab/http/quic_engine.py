"""One small facade over the two QUIC engines the lab can drive: aioquic and qh3.

Both expose the same sans-I/O API (QuicConnection + H3Connection, `now` in seconds of
`time.monotonic()`); qh3 (2.x) has a compiled packet core, so a few internals differ. Everything
the front ends need from an engine is looked up here, once, so that the rest of `lab.http` stays
engine-neutral. Select with `QuicSettings.engine` / `--quic-engine aioquic|qh3`.

Early data: `QuicEngine.connection_class` is a subclass of the engine's QuicConnection that
records the ids of the streams of which at least one STREAM frame arrived in a 0-RTT packet
(`zero_rtt_stream_ids`). A request is early data when any part of it arrived in 0-RTT
(RFC 8470 §5.2), which is what that set answers.
"""

from __future__ import annotations

import dataclasses
import importlib
import ssl
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from lab.http.settings import QuicEngine as QuicEngineName
from lab.http.settings import QuicSettings

ENGINES: tuple[QuicEngineName, ...] = ("aioquic", "qh3")
ZERO_RTT_PACKET_TYPE = 1  # QuicPacketType.ZERO_RTT in both engines
QH3_MAX_STREAMS = 100  # qh3 2.x: local max bidi streams, fixed in its core


@dataclass(frozen=True)
class QuicEngine:
    """The modules and classes of one engine, under engine-neutral names."""

    name: QuicEngineName
    version: str
    configuration: ModuleType  # .QuicConfiguration
    connection: ModuleType  # .QuicConnection, .QuicConnectionError
    events: ModuleType  # QUIC events
    packet: ModuleType  # pull_quic_header, QuicPacketType, encode_quic_version_negotiation
    logger: ModuleType  # QuicFileLogger
    h3: ModuleType  # H3Connection, H3_ALPN, ErrorCode, FrameType, encode_frame
    h3_events: ModuleType
    tls: ModuleType  # SessionTicket, Epoch
    buffer_class: type
    encode_uint_var: Any
    connection_class: type  # QuicConnection subclass with `zero_rtt_stream_ids`

    @property
    def alpn(self) -> list[str]:
        """ALPN protocols of HTTP/3 (`["h3"]`)."""
        return list(self.h3.H3_ALPN)

    def make_configuration(
        self,
        settings: QuicSettings,
        *,
        is_client: bool,
        server_name: str | None = None,
        secrets_log_file: TextIO | None = None,
        qlog_dir: Path | None = None,
    ) -> Any:
        """A QuicConfiguration from the lab's QUIC settings (data limits in bytes, seconds)."""
        cfg = self.configuration.QuicConfiguration(is_client=is_client, alpn_protocols=self.alpn)
        cfg.max_data = settings.max_data_bytes
        cfg.max_stream_data = settings.max_stream_data_bytes
        cfg.idle_timeout = settings.idle_timeout_s
        cfg.max_datagram_size = settings.max_datagram_size_bytes
        if server_name is not None:
            cfg.server_name = server_name
        if secrets_log_file is not None:
            cfg.secrets_log_file = secrets_log_file
        if self.name == "aioquic":
            cfg.congestion_control_algorithm = settings.congestion_control
        else:
            # qh3's native core has one congestion controller and no knob; it also probes
            # for larger datagrams unless told not to (keep the configured size for fairness).
            cfg.probe_datagram_size = False
            # qh3's H3 layer always advertises H3_DATAGRAM, which RFC 9297 ties to this
            # transport parameter; without it a qh3 peer closes with H3_SETTINGS_ERROR
            cfg.max_datagram_frame_size = 65_536
        if qlog_dir is not None:
            Path(qlog_dir).mkdir(parents=True, exist_ok=True)
            cfg.quic_logger = self.logger.QuicFileLogger(str(qlog_dir))
        return cfg

    def load_cert_chain(self, cfg: Any, cert_file: Path, key_file: Path) -> None:
        """Put the server's certificate chain and key into a configuration."""
        cfg.load_cert_chain(str(cert_file), str(key_file))

    def set_verification(self, cfg: Any, ca_file: Path | None) -> None:
        """Verify the server against `ca_file`, or not at all when it is None."""
        if ca_file is None:
            cfg.verify_mode = ssl.CERT_NONE
        else:
            cfg.verify_mode = ssl.CERT_REQUIRED
            cfg.load_verify_locations(cafile=str(ca_file))

    def pull_header(self, data: bytes, host_cid_length: int) -> Any:
        """Parse the first QUIC header of a datagram; raises ValueError on garbage."""
        return self.packet.pull_quic_header(self.buffer_class(data=data), host_cid_length)

    def encode_goaway(self, stream_id: int) -> bytes:
        """An HTTP/3 GOAWAY frame naming the first request stream id that will not be served."""
        return self.h3.encode_frame(self.h3.FrameType.GOAWAY, self.encode_uint_var(stream_id))

    def without_early_data(self, ticket: Any) -> Any:
        """A copy of a session ticket that resumes the session but cannot send 0-RTT."""
        return dataclasses.replace(ticket, max_early_data_size=None)

    def set_max_streams(self, quic: Any, max_streams: int) -> int:
        """Limit the bidirectional streams a peer may have open at once on a fresh connection
        (before its first datagram); returns the limit in effect. qh3's core fixes it at 100."""
        if self.name == "aioquic":
            quic._local_max_streams_bidi.value = max_streams
            return max_streams
        return QH3_MAX_STREAMS

    def allows_early_data(self, ticket: Any) -> bool:
        """True when a session ticket lets the client send 0-RTT data."""
        return getattr(ticket, "max_early_data_size", None) == 0xFFFFFFFF


def _aioquic_connection_class(base: type, epoch_zero_rtt: Any) -> type:
    class EarlyDataQuicConnection(base):
        """aioquic QuicConnection recording streams that carried 0-RTT STREAM frames."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.zero_rtt_stream_ids: set[int] = set()

        def _handle_stream_frame(self, context: Any, frame_type: int, buf: Any) -> None:
            if context.epoch == epoch_zero_rtt:
                start = buf.tell()
                self.zero_rtt_stream_ids.add(buf.pull_uint_var())
                buf.seek(start)
            super()._handle_stream_frame(context, frame_type, buf)

    return EarlyDataQuicConnection


def _qh3_connection_class(base: type, pull_raw_header: Any, cid_length_of: Any) -> type:
    class EarlyDataQuicConnection(base):
        """qh3 QuicConnection recording streams that carried 0-RTT STREAM frames.

        qh3 hands the native core one packet at a time (`_call_core(core.receive_datagram,
        packet, …)`) and drains the core's events right after (`_drain_core`); the packet type
        of the packet being processed therefore tags the stream events drained next.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.zero_rtt_stream_ids: set[int] = set()
            self._lab_packet_is_zero_rtt = False

        def _call_core(self, operation: Any, *args: Any) -> Any:
            if args and getattr(operation, "__name__", "") == "receive_datagram":
                packet = args[0]
                self._lab_packet_is_zero_rtt = False
                if packet and packet[0] & 0x80:  # long header; short-header packets are 1-RTT
                    try:
                        header = pull_raw_header(packet, 0, cid_length_of(self))
                        self._lab_packet_is_zero_rtt = header[1] == ZERO_RTT_PACKET_TYPE
                    except ValueError:
                        pass
            return super()._call_core(operation, *args)

        def _drain_core(self) -> None:
            if not self._lab_packet_is_zero_rtt:
                super()._drain_core()
                return
            before = len(self._events)
            super()._drain_core()
            self._lab_packet_is_zero_rtt = False
            for event in list(self._events)[before:]:
                stream_id = getattr(event, "stream_id", None)
                if stream_id is not None and type(event).__name__ == "StreamDataReceived":
                    self.zero_rtt_stream_ids.add(stream_id)

    return EarlyDataQuicConnection


@cache
def load_engine(name: QuicEngineName = "aioquic") -> QuicEngine:
    """Import one engine's modules; raises ValueError for an unknown name."""
    if name not in ENGINES:
        raise ValueError(f"unknown QUIC engine {name!r}; choose one of {', '.join(ENGINES)}")

    def mod(sub: str) -> ModuleType:
        return importlib.import_module(f"{name}.{sub}")

    top = importlib.import_module(name)
    connection = mod("quic.connection")
    tls = importlib.import_module(f"{name}.tls")
    if name == "aioquic":
        buffer = mod("buffer")
        buffer_class, encode_uint_var = buffer.Buffer, buffer.encode_uint_var
        connection_class = _aioquic_connection_class(connection.QuicConnection, tls.Epoch.ZERO_RTT)
    else:
        hazmat = mod("_hazmat")
        buffer_class, encode_uint_var = hazmat.Buffer, hazmat.encode_uint_var
        connection_class = _qh3_connection_class(
            connection.QuicConnection,
            hazmat.pull_quic_header,
            lambda conn: conn._configuration.connection_id_length,
        )
    return QuicEngine(
        name=name,
        version=getattr(top, "__version__", "unknown"),
        configuration=mod("quic.configuration"),
        connection=connection,
        events=mod("quic.events"),
        packet=mod("quic.packet"),
        logger=mod("quic.logger"),
        h3=mod("h3.connection"),
        h3_events=mod("h3.events"),
        tls=tls,
        buffer_class=buffer_class,
        encode_uint_var=encode_uint_var,
        connection_class=connection_class,
    )


def is_closing(quic: Any) -> bool:
    """True once a connection is closing, draining or terminated (nothing more may be sent)."""
    close_event = getattr(quic, "_close_event", None)  # qh3: set on local or peer close
    state = getattr(quic, "_state", None)
    return close_event is not None or (state is not None and state.value >= 2)


def end_qlog_trace(quic: Any) -> None:
    """Write out a connection's qlog trace now (normally written when it terminates)."""
    trace = getattr(quic, "_quic_logger", None)
    file_logger = quic.configuration.quic_logger
    if trace is not None and file_logger is not None:
        quic._quic_logger = None
        file_logger.end_trace(trace)


def send_backlog(engine: QuicEngine, quic: Any, stream_id: int) -> int:
    """Bytes written to a stream that the peer has not yet acknowledged (aioquic) or that were
    not yet sent (qh3); what a writer waits on before handing the engine more body bytes."""
    if engine.name == "qh3":
        return quic.get_send_buffer_size(stream_id)
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return sender._buffer_stop - sender._buffer_start


def peer_stream_credit(quic: Any) -> int | None:
    """How many bidirectional streams the peer lets this endpoint open in total (MAX_STREAMS,
    cumulative), or None while the engine does not know yet (no handshake, no 0-RTT ticket)."""
    if not hasattr(quic, "_core"):  # aioquic
        return int(quic._remote_max_streams_bidi)
    core = quic._core
    return None if core is None else int(core.stream_limits[0])
