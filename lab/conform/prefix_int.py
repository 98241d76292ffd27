"""The prefix integer of HPACK and QPACK (RFC 7541 §5.1, RFC 9204 §4.1.1), as raw bytes."""

from __future__ import annotations


def prefix_int(value: int, prefix_bits: int, first: int) -> bytes:
    """`value` in a `prefix_bits`-bit prefix, `first` holding the pattern bits above it."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = bytearray([first | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
