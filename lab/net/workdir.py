"""A run's work directory `<tmp>/lab-run-<prefix>` (TLS keys, agent configs and outputs).

It carries the prefix of the run lock its owner holds (lab.net.runlock), so `lab clean` can tell
a live run's directory (lock held: leave it) from one a killed run left behind (remove it).
Directories of the older `lab-run-<random>` form name no lock and are left alone.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

WORKDIR_PREFIX = "lab-run-"
_WORKDIR_RE = re.compile(rf"^{WORKDIR_PREFIX}(lab[0-9a-f]{{6}})$")


def workdir_path(prefix: str) -> Path:
    """Where the work directory of run prefix `prefix` lives (not created)."""
    return Path(tempfile.gettempdir()) / f"{WORKDIR_PREFIX}{prefix}"


def create_workdir(prefix: str) -> Path:
    """Create the work directory of `prefix`, private to its owner (mode 0700); raises
    FileExistsError when it exists (the prefix is random, so it never should)."""
    path = workdir_path(prefix)
    path.mkdir(mode=0o700)
    return path


def remove_workdir(prefix: str) -> bool:
    """Remove the work directory of `prefix`; True when there was one and it is gone."""
    path = workdir_path(prefix)
    if not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def workdir_prefixes() -> set[str]:
    """Run prefixes that have a work directory."""
    root = Path(tempfile.gettempdir())
    return {m.group(1) for p in root.glob(f"{WORKDIR_PREFIX}*") if (m := _WORKDIR_RE.match(p.name))}
