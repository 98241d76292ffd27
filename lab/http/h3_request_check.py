"""Is an HTTP/3 request head well-formed? (pure; RFC 9114 §4.2, §4.3.1, §4.4; RFC 9110 §7.2)

The reference server asks this of every request head before it dispatches it; a malformed one is
a stream error H3_MESSAGE_ERROR (RFC 9114 §4.1.2). The rules are those the h2 library applies to
an HTTP/2 request (lab.http.h2_server), so both front ends refuse the same heads, plus HTTP/3's
own: `:authority` or `Host` is required only for schemes with a mandatory authority (http,
https), and a request with `Host` and no `:authority` is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

Field = tuple[bytes, bytes]

REQUEST_PSEUDO_HEADERS = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
AUTHORITY_SCHEMES = frozenset((b"http", b"https"))  # schemes whose URIs must have an authority
_WHITESPACE = (0x20, 0x09)  # SP, HTAB
_FORBIDDEN_IN_VALUE = frozenset((0x00, 0x0A, 0x0D))  # NUL, LF, CR
MAX_CONTENT_LENGTH = 2**62 - 1  # bytes: the most a QUIC stream can carry (RFC 9000 §4.5)


def _show(data: bytes) -> str:
    """A field name or value for a reason (repr, cut at 40 bytes)."""
    return repr(data[:40]) + ("…" if len(data) > 40 else "")


def _length(value: bytes) -> int | None:
    """A content-length value in bytes; None unless 1*DIGIT and at most MAX_CONTENT_LENGTH."""
    digits = value.lstrip(b"0") or b"0"
    if not value.isdigit() or len(digits) > len(str(MAX_CONTENT_LENGTH)):
        return None  # (bounded before int(): a huge digit string is refused, not parsed)
    length = int(digits)
    return length if length <= MAX_CONTENT_LENGTH else None


def _name_problem(name: bytes) -> str | None:
    """Why a field name is not allowed (RFC 9114 §4.2: lowercase; RFC 9113 §8.2.1 characters)."""
    if not name:
        return "empty field name"
    for c in name:
        if 0x41 <= c <= 0x5A:
            return f"uppercase field name {_show(name)}"
        if c <= 0x20 or c >= 0x7F:
            return f"invalid character in field name {_show(name)}"
    if name.find(b":", 1) != -1:
        return f"non-initial colon in field name {_show(name)}"
    return None


def _value_problem(name: bytes, value: bytes) -> str | None:
    """Why a field value is not allowed (no NUL/CR/LF, no leading or trailing whitespace)."""
    if any(c in _FORBIDDEN_IN_VALUE for c in value):
        return f"NUL, CR or LF in the value of {_show(name)}"
    if value and (value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
        return f"whitespace around the value of {_show(name)}"
    return None


def _field_problem(name: bytes, value: bytes) -> str | None:
    """Why a regular (non-pseudo) field is not allowed in a request (RFC 9114 §4.2)."""
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific field {_show(name)}"
    if name == b"te" and value.lower() != b"trailers":
        return f"te: {_show(value)} (only 'trailers' is allowed)"
    if name == b"content-length" and _length(value) is None:
        return f"content-length {_show(value)} is not an integer in 0…2^62-1"
    return None


def _pseudo_problem(pseudo: dict[bytes, bytes]) -> str | None:
    """Why the set of pseudo-headers does not make a request (RFC 9114 §4.3.1, §4.4)."""
    method = pseudo.get(b":method")
    if not method:
        return "missing :method"
    connect = method == b"CONNECT"
    if b":protocol" in pseudo and not connect:
        return ":protocol without CONNECT"
    if connect and b":protocol" not in pseudo:  # plain CONNECT: only :method and :authority
        if b":scheme" in pseudo or b":path" in pseudo:
            return "CONNECT with :scheme or :path"
        if not pseudo.get(b":authority"):
            return "CONNECT without :authority"
        return None
    for required in (b":scheme", b":path"):
        if required not in pseudo:
            return f"missing {required.decode()}"
        if not pseudo[required]:
            return f"empty {required.decode()}"
    return None


def _authority_problem(pseudo: dict[bytes, bytes], hosts: list[bytes]) -> str | None:
    """`:authority` and `Host` (RFC 9114 §4.3.1, RFC 9110 §7.2): at least one for http(s), never
    empty, at most one Host, and the same value when both are present."""
    if len(hosts) > 1:
        return f"{len(hosts)} Host fields"
    authority, host = pseudo.get(b":authority"), hosts[0] if hosts else None
    if pseudo.get(b":scheme") in AUTHORITY_SCHEMES:
        if authority is None and host is None:
            return "neither :authority nor Host"
        if authority == b"" or host == b"":
            return "empty :authority or Host"
    if authority is not None and host is not None and authority != host:
        return f"Host {_show(host)} differs from :authority {_show(authority)}"
    return None


def request_problem(headers: Sequence[Field]) -> str | None:
    """Why a request head (field lines in order, names and values as bytes) is malformed, or
    None when it is a well-formed request."""
    pseudo: dict[bytes, bytes] = {}
    hosts: list[bytes] = []
    lengths: set[int | None] = set()
    regular_seen = False
    for name, value in headers:
        problem = _name_problem(name) or _value_problem(name, value)
        if problem:
            return problem
        if name.startswith(b":"):
            if regular_seen:
                return f"pseudo-header {_show(name)} after a regular field"
            if name not in REQUEST_PSEUDO_HEADERS:
                return f"pseudo-header {_show(name)} is not a request one"
            if name in pseudo:
                return f"duplicate {_show(name)}"
            pseudo[name] = value
            continue
        regular_seen = True
        problem = _field_problem(name, value)
        if problem:
            return problem
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.add(_length(value))
    if len(lengths) > 1:
        return "content-length fields disagree"
    return _pseudo_problem(pseudo) or _authority_problem(pseudo, hosts)


def declared_content_length(headers: Sequence[Field]) -> int | None:
    """The body length a request head declares (bytes), None when it declares none or not one
    well-formed value (then `request_problem` names the fault)."""
    lengths = {_length(v) for n, v in headers if n == b"content-length"}
    return lengths.pop() if len(lengths) == 1 else None
