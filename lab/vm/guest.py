"""The agent inside the guest (`python -m lab.vm.guest SPEC`, started by stage 2): runs the
command, forwards its output to the consoles, passes Ctrl-C on, and leaves its exit code in
the shared control directory. Standard library and `lab.vm.console` only: it starts fast.

Consoles: /dev/console (con0) carries stdout, /dev/tty1 (con1) stderr. With `tty` the command
writes to them itself (it sees a terminal, as on the host); otherwise through pipes.
Stop requests are files the host creates in the control directory: `stop` → SIGINT to the
command's process group, `kill` → SIGKILL. (The directory is listed, not stat'ed: a hostfs
negative dentry could hide a file the host creates later.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO, Any

from lab.vm.console import end_marker, start_marker

STDOUT_CONSOLE = "/dev/console"
STDERR_CONSOLE = "/dev/tty1"
POLL_S = 0.2


def _raw_output(fd: int) -> None:
    """No output post-processing on a console (no \\n → \\r\\n): bytes arrive as written."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _pump(src: IO[bytes], dst: int) -> None:
    while chunk := os.read(src.fileno(), 65536):
        os.write(dst, chunk)


def _write_rc(control: Path, rc: int) -> None:
    tmp = control / "rc.tmp"
    with tmp.open("w") as f:
        f.write(f"{rc}\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(control / "rc")


def run(spec: dict[str, Any], control: Path) -> int:
    """Run the command of `spec`; its exit code (128 + signal when a signal ended it)."""
    out = os.open(STDOUT_CONSOLE, os.O_WRONLY | os.O_NOCTTY)
    err = os.open(STDERR_CONSOLE, os.O_WRONLY | os.O_NOCTTY)
    for fd in (out, err):
        _raw_output(fd)
    token = spec["token"]
    os.write(out, start_marker(token))
    tty = bool(spec["tty"])
    child = subprocess.Popen(
        spec["argv"],
        cwd=spec["cwd"],
        env=spec["env"],
        stdin=subprocess.DEVNULL,
        stdout=out if tty else subprocess.PIPE,
        stderr=err if tty else subprocess.PIPE,
        start_new_session=True,
    )
    pumps = []
    if not tty:
        assert child.stdout is not None and child.stderr is not None
        for src, dst in ((child.stdout, out), (child.stderr, err)):
            t = threading.Thread(target=_pump, args=(src, dst), daemon=True)
            t.start()
            pumps.append(t)
    sent: set[str] = set()
    while child.poll() is None:
        time.sleep(POLL_S)
        requests = set(os.listdir(control)) & {"stop", "kill"}
        for name in sorted(requests - sent):
            sig = signal.SIGINT if name == "stop" else signal.SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            sent.add(name)
    for t in pumps:
        t.join(timeout=5)
    for fd in (err, out):  # the consoles' output reaches the host before the power-off
        termios.tcdrain(fd)
    rc = child.returncode if child.returncode >= 0 else 128 - child.returncode
    _write_rc(control, rc)
    os.write(out, end_marker(token))
    return rc


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        return run(spec, spec_path.parent)
    except Exception as e:  # the agent itself failed: say so on the console, give rc 125
        os.write(2, f"labvm: guest agent: {e!r}\n".encode())
        _write_rc(spec_path.parent, 125)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv))
