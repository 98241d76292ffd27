"""Certificates and TLS contexts of the lab: a small CA, a leaf for the server, SSLKEYLOGFILE.

`ensure_certs()` issues (once, then reuses) a CA and a leaf signed by it into a cache directory.
The leaf is not a CA (some clients reject a CA-flagged leaf) and names localhost, the loopback
addresses and the lab's namespace server addresses. Private keys are written with mode 0600.
`pad_bytes` makes the leaf at least that much larger (a non-critical extension of zero bytes that
clients ignore): a certificate chain too large for a server's first flight under QUIC's 3×
anti-amplification limit, for `lab conform`'s Q-05.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.results.atomic import write_bytes

LAB_SERVER_ADDRESSES = ("198.51.100.2", "2001:db8:2::2")  # the server namespace's addresses
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1", *LAB_SERVER_ADDRESSES)
DEFAULT_CERT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lab" / "tls"
H2_ALPN = ("h2", "http/1.1")
_VALID_DAYS = 825  # the leaf's
_CA_VALID_DAYS = 3650
_RENEW_BEFORE = dt.timedelta(days=7)
# the padding extension's OID, under the Internet "experimental" arc (1.3.6.1.3, RFC 1155); small
# arcs: GnuTLS and Go's crypto/x509 refuse OID arcs beyond 32 / 31 bits
PAD_OID = x509.ObjectIdentifier("1.3.6.1.3.8470.1")


@dataclass(frozen=True)
class CertPaths:
    """PEM files of the lab's CA and server leaf."""

    ca_cert: Path
    ca_key: Path
    cert: Path  # the leaf only; clients trust ca_cert
    key: Path


def _paths(cert_dir: Path) -> CertPaths:
    return CertPaths(
        cert_dir / "ca.pem", cert_dir / "ca-key.pem", cert_dir / "cert.pem", cert_dir / "key.pem"
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, valid_days: int
) -> x509.CertificateBuilder:
    """A certificate for `key`, valid from an hour ago (clock skew) for `valid_days` days."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=valid_days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signatures; for a CA also certificate and CRL signing."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue_ca(paths: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab test CA")])
    cert = (
        _builder(name, name, key, _CA_VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_bytes(paths.ca_key, _key_pem(key), mode=0o600)
    write_bytes(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert, key


def _octet_string(n: int) -> bytes:
    """DER OCTET STRING of n zero bytes (the padding extension's value)."""
    size = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    length = size if n < 0x80 else bytes([0x80 | len(size)]) + size
    return b"\x04" + length + bytes(n)


def _padding(cert: x509.Certificate) -> int:
    """Bytes of padding in the certificate (0 without the extension)."""
    try:
        ext = cert.extensions.get_extension_for_oid(PAD_OID).value
    except x509.ExtensionNotFound:
        return 0
    return len(ext.value) if isinstance(ext, x509.UnrecognizedExtension) else 0


def _issue_leaf(
    paths: CertPaths,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: Sequence[str],
    pad_bytes: int = 0,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab server")])
    builder = _builder(name, ca.subject, key, _VALID_DAYS)
    if pad_bytes > 0:
        padding = x509.UnrecognizedExtension(PAD_OID, _octet_string(pad_bytes))
        builder = builder.add_extension(padding, critical=False)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_bytes(paths.key, _key_pem(key), mode=0o600)
    write_bytes(paths.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _usable(
    cert_file: Path, sans: Sequence[str], issuer: x509.Certificate | None, pad_bytes: int = 0
) -> bool:
    """The certificate exists, is valid for a while yet, names all `sans`, fits the issuer and
    carries at least `pad_bytes` of padding."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < _now():
        return False
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # InvalidSignature, wrong key type
            return False
        have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        if not set(_san_entries(sans)) <= have:
            return False
    return _padding(cert) >= pad_bytes


def ensure_certs(
    cert_dir: Path | None = None, extra_sans: Sequence[str] = (), pad_bytes: int = 0
) -> CertPaths:
    """The lab's CA and leaf in `cert_dir` (default ~/.cache/lab/tls), issued on first use.

    Reused while valid; the leaf is re-issued when it lacks one of the requested SANs or has
    less than `pad_bytes` of padding (so a padded leaf also serves callers that ask for none).
    Safe against concurrent callers (a lock file in the directory).
    """
    cert_dir = Path(cert_dir) if cert_dir is not None else DEFAULT_CERT_DIR
    cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = _paths(cert_dir)
    sans = (*DEFAULT_SANS, *extra_sans)
    lock_fd = os.open(cert_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if _usable(paths.ca_cert, (), None) and paths.ca_key.exists():
            ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
            ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        else:
            ca, ca_key = _issue_ca(paths)
        if not (_usable(paths.cert, sans, ca, pad_bytes) and paths.key.exists()):
            _issue_leaf(paths, ca, ca_key, sans, pad_bytes)
    finally:
        os.close(lock_fd)
    return paths


def keylog_path() -> str | None:
    """The SSLKEYLOGFILE path from the environment, or None."""
    return os.environ.get("SSLKEYLOGFILE") or None


def keylog_file() -> TextIO | None:
    """SSLKEYLOGFILE opened for appending (line-buffered; NSS key log format), or None."""
    path = keylog_path()
    if path is None:
        return None
    return open(path, "a", buffering=1)  # the caller owns and closes it


def server_ssl_context(
    cert_file: Path, key_file: Path, alpn: Sequence[str] = H2_ALPN
) -> ssl.SSLContext:
    """TLS 1.3 server context with ALPN, session tickets and SSLKEYLOGFILE."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.set_alpn_protocols(list(alpn))
    ctx.options &= ~ssl.OP_NO_TICKET  # stateless resumption tickets (on by default; say it)
    ctx.num_tickets = 2
    path = keylog_path()
    if path:
        ctx.keylog_filename = path
    return ctx


def client_ssl_context(ca_file: Path | None, alpn: Sequence[str] = ("h2",)) -> ssl.SSLContext:
    """TLS 1.3 client context; `ca_file` None means: do not verify the server at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca_file is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca_file))
    ctx.set_alpn_protocols(list(alpn))
    path = keylog_path()
    if path:
        ctx.keylog_filename = path
    return ctx
