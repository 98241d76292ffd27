"""Give freed heap memory back to the operating system (after a flood of connections ended).

CPython keeps freed objects in its own arenas and glibc keeps freed blocks in its heaps, so a
process's RSS stays at its peak after a burst of short-lived state. `release_freed_memory()`
collects reference cycles (QUIC connections hold some) and asks glibc to return free pages
(`malloc_trim(0)`); on another C library only the collection runs. It takes a few ms to tens of
ms, so call it after a burst, not per connection.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - raises AttributeError off glibc
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Collect cycles, then return free heap pages to the OS where glibc allows it."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
