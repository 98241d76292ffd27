"""Atomic file writes: the one helper the lab writes files with.

The data goes to a temporary file beside the target, is fsynced, renamed over the target, and
the directory is fsynced: a reader, a crash or a `kill -9` sees the old content or the new,
never a torn file. Cheap to import (no pandas): the emulator and the TLS code use it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of `data`, as 64 lowercase hex digits (what run.json records)."""
    return hashlib.sha256(data).hexdigest()


def write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> str:
    """Replace `path` atomically with `data`; returns `sha256_hex(data)`.

    `mode` gives exact permission bits (e.g. 0o600 for a private key; the temporary file has
    them from its creation on, whatever the umask); None gives a new file's usual bits
    (0o666 less the umask).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return sha256_hex(data)


def write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, mode: int | None = None
) -> str:
    """Write `obj` as JSON (plus a newline) atomically; returns the SHA-256 of the bytes.

    Paths, numpy scalars, datetimes and pydantic models are converted (`json_default`).
    """
    text = json.dumps(obj, indent=indent, default=json_default) + "\n"
    return write_bytes(path, text.encode(), mode=mode)


def write_parquet(path: str | os.PathLike[str], df: pd.DataFrame) -> str:
    """Write `df` (without its index) as parquet atomically; returns the SHA-256 of the file."""
    data = df.to_parquet(None, index=False)
    return write_bytes(path, data)


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for the values a run records beside plain JSON."""
    if isinstance(obj, Path):
        return str(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # a numpy scalar
        return obj.item()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
