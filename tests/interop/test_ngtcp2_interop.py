"""The lab's HTTP/3 client against ngtcp2's gtlsserver (GnuTLS + nghttp3), bodies by hash."""

from __future__ import annotations

import pytest
import trio
from interop_helpers import Server, expected, get, get_and_wait_for_ticket, sha256

from lab.http.client import open_connection
from lab.http.types import ConnectOptions, Response, TicketStore

pytestmark = pytest.mark.interop


def test_lab_client_h3_get_from_gtlsserver(gtls_server: Server) -> None:
    n = 1_000_000
    opts = ConnectOptions(
        protocol="h3", host=gtls_server.host, port=gtls_server.port, ca_file=gtls_server.ca_file
    )

    resp = trio.run(get, opts, f"/bytes/{n}")
    assert resp.status == 200
    assert ("server", "nghttp3/ngtcp2 server") in resp.headers
    assert resp.body is not None and sha256(resp.body) == expected(n)


def test_lab_client_h3_zero_rtt_accepted_by_gtlsserver(gtls_server: Server) -> None:
    """0-RTT proven twice: by the client's QUIC state (early data accepted, request sent before
    the handshake completed) and by gtlsserver's own log of the 0-RTT packets it received."""
    n = 100_000
    tickets = TicketStore()
    base = dict(host=gtls_server.host, port=gtls_server.port, ca_file=gtls_server.ca_file)

    async def main() -> tuple[object, Response]:
        await get_and_wait_for_ticket(ConnectOptions("h3", tickets=tickets, **base), "/bytes/1000")
        opts = ConnectOptions(protocol="h3", mode="zero_rtt", tickets=tickets, **base)
        async with open_connection(opts) as conn:
            early = await conn.request("GET", f"/bytes/{n}")
            with trio.fail_after(5):
                await conn.handshake_done.wait()
            return conn, early

    conn, early = trio.run(main)
    assert early.status == 200 and sha256(early.body or b"") == expected(n)
    assert conn.timings.early_data_sent and conn.timings.resumed
    assert conn.timings.early_data_accepted  # from the QUIC/TLS state, not a header
    assert early.request_sent_ns < conn.timings.handshake_done_ns
    log = gtls_server.proc.output().splitlines()
    assert any(" pkt rx " in line and "type=0RTT" in line for line in log)
