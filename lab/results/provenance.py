"""Where a run came from, for run.json: kernel and library versions, git commit, run id."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = ("trio", "h2", "aioquic", "qh3", "numpy", "pandas", "pyarrow", "pyroute2")


def environment_info() -> dict[str, Any]:
    """Kernel, iproute2, Python and library versions, CPU count (for run.json)."""
    uname = os.uname()
    libs: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "kernel": f"{uname.sysname} {uname.release} {uname.version} {uname.machine}",
        "iproute2": _iproute2_version(),
        "python": platform.python_version(),
        "libraries": libs,
        "host_cpus": os.cpu_count(),
    }


def _iproute2_version() -> str | None:
    try:
        out = subprocess.run(["ip", "-V"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"iproute2[-\s]?([\w.]+)", out.stdout + out.stderr)
    return m.group(1) if m else (out.stdout.strip() or None)


def git_commit(repo: Path | None = None) -> str | None:
    """The HEAD commit of the checkout holding `repo` (default: this package), "+dirty" when
    there are uncommitted changes; None outside a git checkout."""
    where = repo or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def make_run_id(name: str, when: datetime, suffix: str) -> str:
    """`YYYYmmdd-HHMMSS-<name>-<suffix>`, e.g. 20261126-213000-lossy-3f2a (when in UTC)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return f"{when.strftime('%Y%m%d-%H%M%S')}-{slug}-{suffix}"
