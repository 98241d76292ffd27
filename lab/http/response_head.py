"""A response head as a client recorded it: (name, value) text pairs, `:status` among them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ResponseHead:
    """The header fields of one response (base of the per-stream records of raw clients)."""

    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        """The :status, or None when no response head arrived."""
        for name, value in self.headers:
            if name == ":status":
                return int(value)
        return None

    def header(self, name: str) -> str | None:
        """The first value of a response header, or None."""
        return next((v for k, v in self.headers if k == name), None)
