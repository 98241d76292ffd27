"""The Alt-Svc header field (RFC 7838 §3), parsed strictly (pure).

Alt-Svc       = clear / 1#alt-value
alt-value     = alternative *( OWS ";" OWS parameter )
alternative   = protocol-id "=" alt-authority     ; alt-authority: quoted [host] ":" port
parameter     = token "=" ( token / quoted-string )   ; ma = delta-seconds (1*DIGIT)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_AGE_S = 86_400  # RFC 7838 §3.1
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_AUTHORITY = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):(?P<port>[0-9]{1,5})$")


class AltSvcError(ValueError):
    """The field does not follow RFC 7838's grammar."""


@dataclass(frozen=True, slots=True)
class Alternative:
    """One alt-value: protocol, host ("" = the origin's), port, max age in s, parameters."""

    protocol: str
    host: str
    port: int
    max_age_s: int
    params: tuple[tuple[str, str], ...]


def _split(text: str, sep: str) -> list[str]:
    """Split at `sep` outside quoted strings (backslash escapes inside them)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    if quoted:
        raise AltSvcError("unterminated quoted string")
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise AltSvcError(f"alt-authority {value!r} is not a quoted string")
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def parse(field: str) -> list[Alternative]:
    """The alternatives of one Alt-Svc field value ([] for `clear`); AltSvcError otherwise."""
    if field.strip() == "clear":
        return []
    out = []
    for alt_value in _split(field, ","):
        pieces = [p.strip() for p in _split(alt_value, ";")]
        protocol, eq, authority = pieces[0].partition("=")
        if not eq or not _TOKEN.match(protocol):
            raise AltSvcError(f'alternative {pieces[0]!r} is not protocol-id="host:port"')
        m = _AUTHORITY.match(_unquote(authority))
        if m is None or not 0 < int(m["port"]) < 65_536:
            raise AltSvcError(f"alt-authority {authority} is not [host]:port")
        params = []
        max_age = DEFAULT_MAX_AGE_S
        for piece in pieces[1:]:
            if not piece:
                continue
            name, eq, value = piece.partition("=")
            if not eq or not _TOKEN.match(name.strip()):
                raise AltSvcError(f"parameter {piece!r} is not token=value")
            name, value = name.strip().lower(), value.strip()
            if not (_TOKEN.match(value) or value.startswith('"')):
                raise AltSvcError(f"parameter value {value!r} is neither token nor quoted")
            value = _unquote(value) if value.startswith('"') else value
            if name == "ma":
                if not value.isdigit():
                    raise AltSvcError(f"ma={value!r} is not delta-seconds")
                max_age = int(value)
            params.append((name, value))
        host = m["host"].strip("[]")
        out.append(Alternative(protocol, host, int(m["port"]), max_age, tuple(params)))
    return out
