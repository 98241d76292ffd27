"""The children of a cell repetition: the emulator, the server and the waiting agents must live
until the repetition ends. One that exits early fails the repetition at once (lab.run.runner)
instead of leaving the running agent to time out, workload after workload.

`check_alive(children, during)` raises `ChildExited` naming the first dead child, with the tail
of its log; `wait_exit` and `wait_readable` wait on one process or pipe while checking the others
every `WATCH_INTERVAL_S` seconds.
"""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lab.errors import RunError

WATCH_INTERVAL_S = 0.1  # how long a dead child can go unnoticed


class ChildExited(RunError):
    """A process the cell repetition needs exited before the repetition's end."""


@dataclass(frozen=True)
class Child:
    """A process the cell needs alive, and where its output goes."""

    label: str  # e.g. "emulator", "server", "h3 agent"
    poll: Callable[[], int | None]  # its exit status once it has exited, else None
    log: Path | None = None  # quoted (its tail) when it died


def exit_status(rc: int) -> str:
    """A process exit status in words: "status 1", "signal SIGKILL"."""
    if rc >= 0:
        return f"status {rc}"
    try:
        return f"signal {signal.Signals(-rc).name}"
    except ValueError:
        return f"signal {-rc}"


def tail(path: Path | None, n: int = 1500) -> str:
    """The last `n` characters of a log file ("" when there is none)."""
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


def check_alive(children: Sequence[Child], during: str) -> None:
    """Raise ChildExited for the first child that has exited (`during`: what the cell was doing,
    for the message)."""
    for child in children:
        rc = child.poll()
        if rc is not None:
            output = tail(child.log) or "(no output)"
            raise ChildExited(f"{child.label} exited ({exit_status(rc)}) during {during}: {output}")


def wait_exit(
    proc: subprocess.Popen[bytes], limit_s: float, children: Sequence[Child], during: str
) -> int | None:
    """Wait up to `limit_s` seconds for `proc` to exit, checking `children` meanwhile; its exit
    status, or None when the limit passed. Raises ChildExited."""
    deadline = time.monotonic() + limit_s
    while True:
        left = deadline - time.monotonic()
        try:
            return proc.wait(max(0.0, min(WATCH_INTERVAL_S, left)))
        except subprocess.TimeoutExpired:
            pass
        check_alive(children, during)
        if left <= WATCH_INTERVAL_S:
            return None


def wait_readable(
    stream: IO[bytes], timeout_s: float, children: Sequence[Child], during: str
) -> bool:
    """Wait up to `timeout_s` seconds until `stream` is readable (data or EOF), checking
    `children` meanwhile; False when the time passed. Raises ChildExited."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(0.0, min(WATCH_INTERVAL_S, left)))
        if ready:
            return True
        check_alive(children, during)
        if left <= WATCH_INTERVAL_S:
            return False
