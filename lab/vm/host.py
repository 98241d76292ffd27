"""Boot a guest for one command and always stop it again (`run_in_guest`).

The UML kernel runs in its own session (process group), so the terminal's Ctrl-C reaches only
this process: the first Ctrl-C (or SIGTERM) asks the guest to interrupt the command (it unwinds
and writes its results as on the host), the second kills the guest's whole process group. The
guest's files (init scripts, control directory, UML's own directory) live in one temporary
directory that is removed on every way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lab.errors import BadInput, HostNotCapable, RunError
from lab.run.lifecycle import sigterm_as_interrupt
from lab.vm.boot import GuestLayout, init_script, kernel_cmdline, stage2_script, unsafe_path
from lab.vm.console import ConsoleFilter
from lab.vm.kernel import find_kernel
from lab.vm.shim import build_shim

BOOT_TIMEOUT_S = 120.0  # kernel + overlay + agent start; ~3 s on an idle host
STOP_GRACE_S = 120.0  # after a stop request: the command's own teardown (a run's cells)
# host variables that make no sense in the guest or would change the guest kernel's behaviour
DROPPED_ENV = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
)
BOOT_LOG_TAIL_LINES = 15


@dataclass(frozen=True, slots=True)
class GuestResult:
    """What one guest did: the command's exit code, boot time (s, until the command started)
    and wall time (s, boot to power-off)."""

    exit_code: int
    boot_s: float
    wall_s: float
    interrupted: bool = False


def project_root() -> Path:
    """The directory that holds the `lab` package the host runs (the guest runs the same)."""
    return Path(__file__).resolve().parents[2]


def guest_env(tty: bool, columns: int | None = None) -> dict[str, str]:
    """The command's environment in the guest: the host's, minus DROPPED_ENV, with this `lab`
    first on PYTHONPATH and LAB_VM=1."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    root = str(project_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["LAB_VM"] = "1"
    if not tty:
        env["TERM"] = "dumb"
    elif columns:
        env["COLUMNS"] = str(columns)
    return env


def results_shares(args: Sequence[str], cwd: Path) -> list[Path]:
    """Host directories `lab ARGS…` writes to: the value of `--out` if given, else `results/`
    for `lab run` and `lab compose run`; none for other commands."""
    args = list(args)
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            return [(cwd / args[i + 1]).resolve()]
        if a.startswith("--out="):
            return [(cwd / a.split("=", 1)[1]).resolve()]
    writes_results = args[:1] == ["run"] or args[:2] == ["compose", "run"]
    return [(cwd / "results").resolve()] if writes_results else []


def _layout(workdir: Path, shares: Sequence[Path], mem_mb: int) -> GuestLayout:
    for share in (workdir, *shares):
        why = unsafe_path(share)
        if why:
            raise BadInput(f"cannot share with the guest: {why}")
    return GuestLayout(
        workdir=workdir,
        kernel=find_kernel(),
        python=sys.executable,
        mem_mb=mem_mb,
        shares=tuple(shares),
    )


def _write_guest_files(layout: GuestLayout, spec: dict[str, object]) -> None:
    layout.control.mkdir()
    layout.rootfs.mkdir()
    layout.uml_dir.mkdir()
    layout.init.write_text(init_script(layout))
    layout.stage2.write_text(stage2_script(layout, str(project_root())))
    layout.init.chmod(0o755)
    (layout.control / "spec.json").write_text(json.dumps(spec))


def _spawn(layout: GuestLayout, umid: str, stderr_w: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    shim = build_shim()
    if shim is not None:
        env["LD_PRELOAD"] = str(shim)
    env["TMPDIR"] = str(layout.workdir)  # UML's memory file

    return subprocess.Popen(
        [str(layout.kernel.binary), *kernel_cmdline(layout, umid, stderr_w)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        pass_fds=(stderr_w,),  # the guest's con1: the command's stderr
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the guest's whole process group (UML and every guest process)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _tail(log: bytes) -> str:
    lines = log.decode(errors="replace").replace("\r", "").strip().splitlines()
    return "\n".join(lines[-BOOT_LOG_TAIL_LINES:])


def run_in_guest(
    args: Sequence[str],
    *,
    shares: Sequence[Path] = (),
    mem_mb: int = 1536,
    timeout_s: float | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    program: Sequence[str] | None = None,
) -> GuestResult:
    """Run `lab ARGS…` in a fresh guest, streaming its stdout and stderr to `stdout`/`stderr`
    (default: this process's). `shares` are host directories the guest writes through
    (created if missing). `timeout_s` bounds the whole guest (then it is stopped, exit 124).
    `program` replaces `lab ARGS…` by any argv (tests)."""
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    for share in shares:
        share.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="labvm-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        layout = _layout(workdir, shares, mem_mb)
        tty = out.isatty() if hasattr(out, "isatty") else False
        token = secrets.token_hex(8)
        columns = shutil.get_terminal_size().columns if tty else None
        spec = {
            "argv": list(program) if program is not None else [sys.executable, "-m", "lab", *args],
            "cwd": os.getcwd(),
            "env": guest_env(tty, columns),
            "tty": tty,
            "token": token,
        }
        _write_guest_files(layout, spec)
        r3, w3 = os.pipe()
        t0 = time.monotonic()
        try:
            proc = _spawn(layout, f"labvm-{token}", w3)
        finally:
            os.close(w3)
        return _supervise(proc, layout, ConsoleFilter(token), r3, out, err, t0, timeout_s)
    finally:
        if proc is not None and proc.poll() is None:
            _kill(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(
    proc: subprocess.Popen[bytes],
    layout: GuestLayout,
    console: ConsoleFilter,
    stderr_r: int,
    out: BinaryIO,
    err: BinaryIO,
    t0: float,
    timeout_s: float | None,
) -> GuestResult:
    """Stream the consoles until the guest powers off; stop requests on Ctrl-C and timeouts."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    uml_log = bytearray()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(stderr_r, selectors.EVENT_READ, "err")
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "uml")
    boot_s: float | None = None
    stops = 0
    stop_at: float | None = None
    timed_out = False

    def request(name: str) -> None:
        nonlocal stops, stop_at
        stops += 1
        (layout.control / name).touch()
        stop_at = time.monotonic()
        if name == "kill":
            _kill(proc)

    with sigterm_as_interrupt():
        while sel.get_map():
            try:
                events = sel.select(timeout=0.5)
                for key, _ in events:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    if key.data == "out":
                        data = console.feed(chunk)
                        if console.started and boot_s is None:
                            boot_s = time.monotonic() - t0
                        if data:
                            out.write(data)
                            out.flush()
                    elif key.data == "err":
                        err.write(chunk)
                        err.flush()
                    else:
                        uml_log += chunk
                now = time.monotonic()
                if boot_s is None and now - t0 > BOOT_TIMEOUT_S and stops == 0:
                    request("kill")
                if timeout_s is not None and now - t0 > timeout_s and stops == 0:
                    timed_out = True
                    request("stop")
                if stop_at is not None and stops == 1 and now - stop_at > STOP_GRACE_S:
                    request("kill")
            except KeyboardInterrupt:
                request("stop" if stops == 0 else "kill")
    os.close(stderr_r)
    proc.wait()
    wall_s = time.monotonic() - t0
    rc_file = layout.control / "rc"
    if rc_file.exists():
        rc = int(rc_file.read_text().strip() or 1)
        return GuestResult(124 if timed_out else rc, boot_s or 0.0, wall_s, interrupted=stops > 0)
    if stops and not timed_out:
        return GuestResult(130, boot_s or 0.0, wall_s, interrupted=True)
    log = bytes(console.boot_log) + bytes(uml_log)
    if not console.started:
        raise HostNotCapable(
            f"the UML guest did not start the command; its boot log ends:\n{_tail(log)}"
        )
    raise RunError(f"the UML guest stopped without the command's exit code:\n{_tail(log)}")
