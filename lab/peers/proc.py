"""Start a peer process from a `LaunchSpec` and always stop it: SIGTERM, then SIGKILL.

For tests and benchmarks on loopback; the scenario runner owns process lifetimes in namespaces.
stdout and stderr go to files in a log directory, so a chatty peer cannot fill a pipe and stall.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.peers.registry import LaunchSpec


@dataclass
class Running:
    """A started process and where its output goes."""

    process: subprocess.Popen[bytes]
    stdout_file: Path
    stderr_file: Path

    def output(self) -> str:
        """stdout + stderr so far (for assertion messages)."""
        return self.stdout_file.read_text(errors="replace") + self.stderr_file.read_text(
            errors="replace"
        )


def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> int:
    """SIGTERM the process, SIGKILL it after grace_s seconds; returns its exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def running(spec: LaunchSpec, log_dir: Path, name: str, grace_s: float = 5.0) -> Iterator[Running]:
    """Run `spec` for the duration of the with-block; stopped in finally."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        process = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Running(process, out, err)
    finally:
        stop(process, grace_s)


def free_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port that is free on both TCP and UDP at `host` right now (racy, as all such checks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free on both TCP and UDP at {host}")
