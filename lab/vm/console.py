"""The guest's console as the host reads it: boot noise, then the command's output between two
markers that the guest agent writes (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

BOOT_LOG_BYTES = 64_000  # boot noise kept for the error message when a guest does not start


def start_marker(token: str) -> bytes:
    return f"\x1elabvm start {token}\x1e\n".encode()


def end_marker(token: str) -> bytes:
    return f"\x1elabvm end {token}\x1e\n".encode()


@dataclass
class ConsoleFilter:
    """`feed(chunk)` returns the bytes of the command's output in the chunk: nothing before the
    start marker (kept in `boot_log`), nothing from the end marker on. Markers may be split
    across chunks; output bytes are passed on as soon as they cannot be part of a marker."""

    token: str
    started: bool = False
    ended: bool = False
    boot_log: bytearray = field(default_factory=bytearray)
    _held: bytes = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.ended:
            return b""
        data = self._held + chunk
        self._held = b""
        if not self.started:
            start = start_marker(self.token)
            i = data.find(start)
            if i < 0:
                keep = len(start) - 1
                self._held = data[-keep:] if len(data) > keep else data
                self._log(data[: len(data) - len(self._held)])
                return b""
            self._log(data[:i])
            self.started = True
            data = data[i + len(start) :]
        end = end_marker(self.token)
        i = data.find(end)
        if i >= 0:
            self.ended = True
            return data[:i]
        held = _partial_suffix(data, end)
        self._held = data[len(data) - held :] if held else b""
        return data[: len(data) - held]

    def _log(self, data: bytes) -> None:
        self.boot_log += data
        del self.boot_log[:-BOOT_LOG_BYTES]


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """Length of the longest end of `data` that is a proper prefix of `marker`."""
    for n in range(min(len(data), len(marker) - 1), 0, -1):
        if data.endswith(marker[:n]):
            return n
    return 0
