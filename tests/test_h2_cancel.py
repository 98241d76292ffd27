"""Issue 9.1: resetting some streams must not damage the others on the same HTTP/2 connection.

The reference server (`lab serve`, a real process over real TLS on loopback) serves 20 × 2 MB on
one connection to a raw python-`h2` client that cancels every other stream after its first DATA
frame; every other stream must arrive whole (bytes checked against lab.http.payload) with
END_STREAM, and the connection must stay usable. Then the same for the lab's own h2 client,
whose requests are cancelled with trio cancel scopes.
"""

from __future__ import annotations

import random
import socket
import ssl
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
import trio
from h2.errors import ErrorCodes
from test_server import ServeProcess

from lab.http.client import open_connection
from lab.http.payload import body_slice
from lab.http.tls import ensure_certs
from lab.http.types import ConnectOptions

BODY_BYTES = 2_000_000
STREAMS = 20
TRIALS = 30
TRIAL_TIMEOUT_S = 5.0
WINDOW_BYTES = 16 * 1024 * 1024
BODY = body_slice(0, BODY_BYTES)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServeProcess]:
    """One `lab serve` for the whole module (trials are independent connections)."""
    cert_dir = tmp_path_factory.mktemp("certs")
    ensure_certs(cert_dir)
    p = ServeProcess(cert_dir)
    try:
        yield p
    finally:
        p.stop()


# --- a raw, conformant python-h2 client over the stdlib's ssl ---------------------------------
class RawClient:
    """Blocking h2 client: one TLS socket, h2's engine, big windows, every DATA acknowledged."""

    def __init__(self, server: ServeProcess, deadline: float):
        ctx = ssl.create_default_context(cafile=str(server.cert_dir / "ca.pem"))
        ctx.set_alpn_protocols(["h2"])
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TRIAL_TIMEOUT_S)
        self.tls = ctx.wrap_socket(sock, server_hostname="localhost")
        assert self.tls.selected_alpn_protocol() == "h2"
        self.deadline = deadline
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW_BYTES})
        self.conn.increment_flow_control_window(WINDOW_BYTES)
        self.flush()
        self.eof = False
        self.error: str | None = None
        self.goaway: h2.events.ConnectionTerminated | None = None

    def flush(self) -> None:
        try:
            self.tls.sendall(self.conn.data_to_send())
        except OSError:  # includes ssl.SSLError: the server closed the connection
            self.eof = True

    def get(self, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
        self.conn.send_headers(sid, [*head, (":path", path)], end_stream=True)
        return sid

    def events(self) -> list[h2.events.Event]:
        """Events of the next read; [] and `eof` at the end or past the deadline."""
        self.tls.settimeout(max(0.01, self.deadline - time.monotonic()))
        try:
            data = self.tls.recv(256 * 1024)
        except (TimeoutError, OSError):
            data = b""
        if not data:
            self.eof = True
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:  # e.g. END_STREAM short of content-length
            self.error = f"h2 protocol error: {e}"
            self.eof = True
            return []
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        return events

    def close(self) -> None:
        self.tls.close()


def _raw_trial(server: ServeProcess) -> list[str]:
    """One connection: 20 × GET /bytes/2000000, every other one reset after its first DATA.

    Returns what went wrong (empty when everything is right).
    """
    c = RawClient(server, time.monotonic() + TRIAL_TIMEOUT_S)
    try:
        ids = [c.get(f"/bytes/{BODY_BYTES}") for _ in range(STREAMS)]
        c.flush()
        cancel = set(ids[::2])
        body = {sid: bytearray() for sid in ids}
        ended: set[int] = set()
        problems: list[str] = []
        keep = [sid for sid in ids if sid not in cancel]
        while not ended.issuperset(keep) and not c.eof and c.goaway is None:
            for ev in c.events():
                sid = getattr(ev, "stream_id", 0)
                if isinstance(ev, h2.events.DataReceived):
                    body[sid] += ev.data
                    if sid in cancel and sid not in ended:
                        ended.add(sid)
                        c.conn.reset_stream(sid, ErrorCodes.CANCEL)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended.add(sid)
                elif isinstance(ev, h2.events.StreamReset) and sid not in cancel:
                    problems.append(f"stream {sid} reset by the server ({ev.error_code!r})")
                    ended.add(sid)
            c.flush()
        if c.error is not None:
            problems.append(c.error)
        elif c.goaway is not None:
            problems.append(f"GOAWAY {c.goaway.error_code!r} mid-transfer")
        elif c.eof:
            problems.append("connection closed (or stalled) without GOAWAY")
        for sid in keep:
            got = body[sid]
            if len(got) != BODY_BYTES:
                problems.append(f"stream {sid}: {len(got)} bytes, {BODY_BYTES - len(got)} short")
            elif got != BODY:
                problems.append(f"stream {sid}: wrong content")
        if problems:
            return problems
        # still usable: a PING is answered and a fresh request completes intact
        c.conn.ping(b"lab-ping")
        sid = c.get("/bytes/100000")
        c.flush()
        fresh, pong, done = bytearray(), False, False
        while not (pong and done) and not c.eof and c.goaway is None:
            for ev in c.events():
                if isinstance(ev, h2.events.PingAckReceived):
                    pong = True
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    fresh += ev.data
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            c.flush()
        if not (pong and done and fresh == BODY[:100_000]):
            return [f"after the resets: ping={pong} fresh request done={done} ({len(fresh)} B)"]
        return []
    finally:
        c.close()


@pytest.mark.parametrize("trial", range(TRIALS))
def test_reset_streams_leave_their_neighbours_intact(server, trial):
    problems = _raw_trial(server)
    assert not problems, "\n".join(problems)


# --- the lab's own client -----------------------------------------------------------------------
async def _lab_trial(opts: ConnectOptions, rng: random.Random) -> None:
    """12 requests on one connection, GETs and 2 MB POST uploads alternating; requests 0, 1, 4,
    5, 8, 9 are cancelled (a GET after its first chunk, a POST at a random moment)."""
    results: dict[int, bytes] = {}
    payloads = {i: rng.randbytes(BODY_BYTES) for i in range(1, 12, 2)}
    cancelled = {i for i in range(12) if i % 4 < 2}
    async with open_connection(opts) as conn:

        async def get(i: int) -> None:
            with trio.CancelScope() as scope:
                on_chunk = (lambda d, t: scope.cancel()) if i in cancelled else None
                r = await conn.request("GET", f"/bytes/{BODY_BYTES}", on_chunk=on_chunk)
                results[i] = r.body

        async def post(i: int) -> None:
            with trio.move_on_after(rng.uniform(0, 0.05) if i in cancelled else 60):
                r = await conn.request("POST", "/echo", body=payloads[i])
                results[i] = r.body

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(post if i in payloads else get, i)
            for i in set(range(12)) - cancelled:
                assert results.get(i) == payloads.get(i, BODY), f"request {i}"
            r = await conn.request("GET", "/bytes/100000")
            assert r.body == BODY[:100_000]


def test_lab_client_cancelled_requests_leave_the_others_intact(server):
    """The rest complete intact and the connection still serves a request afterwards."""
    opts = ConnectOptions("h2", "127.0.0.1", server.port, ca_file=server.cert_dir / "ca.pem")
    rng = random.Random(9)

    async def main() -> None:
        for _ in range(5):
            await _lab_trial(opts, rng)

    trio.run(main)
