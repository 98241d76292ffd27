"""The lab's clients against Caddy 2.6 (Go net/http for h2, quic-go for h3), bodies by hash."""

from __future__ import annotations

import pytest
import trio
from interop_helpers import Server, expected, get, get_and_wait_for_ticket, sha256

from lab.http.client import open_connection
from lab.http.types import ConnectOptions, Response, TicketStore

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("protocol", ["h2", "h3"])
def test_lab_client_gets_bytes_from_caddy(caddy_server: Server, protocol: str) -> None:
    n = 1_000_000
    opts = ConnectOptions(
        protocol=protocol,
        host=caddy_server.host,
        port=caddy_server.port,
        ca_file=caddy_server.ca_file,
    )
    resp = trio.run(get, opts, f"/bytes/{n}")
    assert resp.status == 200
    assert resp.body is not None and sha256(resp.body) == expected(n)
    assert resp.body_bytes == n
    assert ("server", "Caddy") in resp.headers
    if protocol == "h2":
        # Caddy advertises its HTTP/3 endpoint on the same port
        assert f'h3=":{caddy_server.port}"' in dict(resp.headers).get("alt-svc", "")


def test_lab_client_h2_against_caddy_internal_ca(caddy_internal_tls: Server) -> None:
    """`tls internal` works offline, and the lab client verifies Caddy's own root."""
    srv = caddy_internal_tls
    assert srv.ca_file is not None and srv.ca_file.exists()
    opts = ConnectOptions(protocol="h2", host=srv.host, port=srv.port, ca_file=srv.ca_file)
    resp = trio.run(get, opts, "/bytes/100000")
    assert resp.status == 200
    assert resp.body is not None and sha256(resp.body) == expected(100_000)
    health = trio.run(get, opts, "/healthz")
    assert (health.status, health.body) == (200, b"ok")


def test_lab_client_h3_zero_rtt_accepted_by_caddy(caddy_server: Server) -> None:
    """Resumption with 0-RTT: quic-go accepts the early data; Caddy sends no lab-early-data
    header, so the proof is the client's QUIC state: the request left before the handshake
    completed and the server's EncryptedExtensions accepted early data."""
    n = 100_000
    tickets = TicketStore()
    base = dict(host=caddy_server.host, port=caddy_server.port, ca_file=caddy_server.ca_file)

    async def main() -> tuple[Response, object, Response]:
        # quic-go sends NewSessionTicket right after the handshake
        cold = await get_and_wait_for_ticket(
            ConnectOptions("h3", tickets=tickets, **base), f"/bytes/{n}"
        )
        opts = ConnectOptions(protocol="h3", mode="zero_rtt", tickets=tickets, **base)
        async with open_connection(opts) as conn:
            early = await conn.request("GET", f"/bytes/{n}")
            with trio.fail_after(5):
                await conn.handshake_done.wait()
            return cold, conn, early

    cold, conn, early = trio.run(main)
    assert cold.status == 200 and sha256(cold.body or b"") == expected(n)
    assert early.status == 200 and sha256(early.body or b"") == expected(n)
    assert conn.timings.early_data_sent
    assert conn.timings.resumed
    assert conn.timings.early_data_accepted  # from the QUIC/TLS state, not a header
    assert conn.timings.handshake_done_ns is not None
    assert early.request_sent_ns < conn.timings.handshake_done_ns
    assert not early.early_data  # Caddy does not send lab-early-data
