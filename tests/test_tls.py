"""Certificates of the lab (CA + leaf) and the TLS contexts built on them."""

from __future__ import annotations

import ssl
import stat

import pytest
from cryptography import x509

from lab.http.tls import (
    DEFAULT_SANS,
    client_ssl_context,
    ensure_certs,
    server_ssl_context,
)


def _leaf(paths) -> x509.Certificate:
    return x509.load_pem_x509_certificate(paths.cert.read_bytes())


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(ext.get_values_for_type(x509.DNSName))
    names |= {str(a) for a in ext.get_values_for_type(x509.IPAddress)}
    return names


def test_leaf_names_loopback_and_lab_addresses(tmp_path):
    paths = ensure_certs(tmp_path)
    sans = _sans(_leaf(paths))
    assert set(DEFAULT_SANS) <= sans
    assert {"localhost", "127.0.0.1", "::1", "198.51.100.2", "2001:db8:2::2"} <= sans


def test_leaf_is_not_a_ca_and_chain_verifies(tmp_path):
    paths = ensure_certs(tmp_path)
    leaf = _leaf(paths)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    leaf.verify_directly_issued_by(ca)  # raises when the signature does not verify
    assert leaf.issuer == ca.subject != leaf.subject


def test_private_keys_are_mode_0600(tmp_path):
    paths = ensure_certs(tmp_path)
    for key in (paths.key, paths.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_certificates_are_reused_and_reissued_for_new_sans(tmp_path):
    first = ensure_certs(tmp_path)
    leaf_pem = first.cert.read_bytes()
    ca_pem = first.ca_cert.read_bytes()
    again = ensure_certs(tmp_path)
    assert again.cert.read_bytes() == leaf_pem
    extra = ensure_certs(tmp_path, extra_sans=["server.lab.test", "192.0.2.7"])
    assert extra.cert.read_bytes() != leaf_pem
    assert extra.ca_cert.read_bytes() == ca_pem  # same CA, new leaf
    assert {"server.lab.test", "192.0.2.7", "localhost"} <= _sans(_leaf(extra))


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, name: str) -> ssl.SSLObject:
    """A full TLS handshake in memory; returns the client's SSLObject."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, obj in (("c", cli), ("s", srv)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return cli
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1", "198.51.100.2"])
def test_client_verifies_server_by_name_and_alpn_h2(tmp_path, name):
    paths = ensure_certs(tmp_path)
    cli = _handshake(
        client_ssl_context(paths.ca_cert, ("h2",)),
        server_ssl_context(paths.cert, paths.key),
        name,
    )
    assert cli.version() == "TLSv1.3"
    assert cli.selected_alpn_protocol() == "h2"


def test_wrong_name_is_rejected(tmp_path):
    paths = ensure_certs(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(
            client_ssl_context(paths.ca_cert),
            server_ssl_context(paths.cert, paths.key),
            "example.org",
        )


def test_sslkeylogfile_is_written(tmp_path, monkeypatch):
    paths = ensure_certs(tmp_path)
    log = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(log))
    _handshake(
        client_ssl_context(paths.ca_cert),
        server_ssl_context(paths.cert, paths.key),
        "localhost",
    )
    text = log.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text
    assert "SERVER_TRAFFIC_SECRET_0" in text
