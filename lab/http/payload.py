"""The deterministic, incompressible body of `GET /bytes/{n}`.

Byte i of every body is byte i of an AES-128-CTR keystream under a fixed key: random-looking
(no compressor gains anything), identical on every run and every server, computable at any offset
without generating what precedes it, and fast (several GB/s with AES-NI). Clients verify bodies
with `expected_sha256(n)` or `body_slice(offset, length)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

BODY_SEED = b"lab /bytes v1"
_KEY = hashlib.sha256(BODY_SEED).digest()[:16]
_BLOCK = 16  # AES block size, bytes
DEFAULT_CHUNK_BYTES = 256 * 1024
_ZEROS = bytes(DEFAULT_CHUNK_BYTES + _BLOCK)


_PREFIX_BYTES = 1 << 20
_prefix_cache: list[bytes] = []


def _prefix() -> bytes:
    """The first `_PREFIX_BYTES` of the body, computed once."""
    if not _prefix_cache:
        _prefix_cache.append(body_slice(0, _PREFIX_BYTES))
    return _prefix_cache[0]


def _keystream_at(offset: int) -> CipherContext:
    """An encryptor positioned at `offset` (bytes) of the keystream, minus the sub-block skip."""
    counter = (offset // _BLOCK).to_bytes(16, "big")
    return Cipher(algorithms.AES(_KEY), modes.CTR(counter)).encryptor()


def body_slice(offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of every /bytes body."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be >= 0")
    skip = offset % _BLOCK
    out = _keystream_at(offset).update(bytes(skip + length))
    return out[skip:]


def iter_body(n: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """The n-byte body as chunks of at most `chunk_bytes`, never holding more than one chunk."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n <= _PREFIX_BYTES:  # small bodies: slices of a cached prefix, no cipher set-up
        prefix = _prefix()
        for off in range(0, n, chunk_bytes):
            yield prefix[off : min(n, off + chunk_bytes)]
        return
    enc = _keystream_at(0)
    zeros = memoryview(_ZEROS if chunk_bytes <= len(_ZEROS) else bytes(chunk_bytes))
    left = n
    while left > 0:
        k = min(chunk_bytes, left)
        yield enc.update(zeros[:k])
        left -= k


def expected_sha256(n: int) -> str:
    """Hex SHA-256 of the n-byte body, for verifying what a client received."""
    h = hashlib.sha256()
    for chunk in iter_body(n, 1 << 20):
        h.update(chunk)
    return h.hexdigest()
