"""Helpers shared by the interop tests (fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab.http import payload
from lab.peers.proc import Running

HOST = "127.0.0.1"
SIZES = (1000, 100_000, 1_000_000)  # /bytes/{n} bodies the tests fetch


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def expected(n: int) -> str:
    """Hex SHA-256 of the reference /bytes/{n} body."""
    return payload.expected_sha256(n)


def need(binary: str) -> str:
    """The path of a peer binary; fails (does not skip) when it is missing: CI installs it."""
    path = shutil.which(binary)
    assert path, f"{binary} not installed: run scripts/install.sh"
    return path


@dataclass
class Server:
    """A running server on loopback."""

    name: str
    host: str
    port: int
    ca_file: Path | None  # the CA that issued its certificate
    proc: Running
    workdir: Path

    def url(self, path: str, name: str = "localhost") -> str:
        """An https URL with `name` as authority."""
        return f"https://{name}:{self.port}{path}"
