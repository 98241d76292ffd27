"""The LD_PRELOAD shim that lets UML 6.1 run on hosts with a large XSAVE area (`fpshim.c`).

Built once per source version with the host's C compiler into the user's cache directory.
Hosts without AVX-512 do not need it; there a missing compiler is not an error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.errors import HostNotCapable

SOURCE = Path(__file__).with_name("fpshim.c")
COMPILERS = ("cc", "gcc")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lab/vm (default ~/.cache/lab/vm)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lab" / "vm"


def host_needs_shim(cpuinfo: str | None = None) -> bool:
    """True when the host CPU has AVX-512 (its XSAVE area is then larger than UML 6.1's)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return "avx512f" in flags.split()


def build_shim() -> Path | None:
    """Path of the built shim (built now if needed); None when this host does not need it and
    has no compiler. HostNotCapable when it needs it and cannot build it."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = cache_dir() / f"fpshim-{digest}.so"
    if target.exists():
        return target
    cc = next((c for c in COMPILERS if shutil.which(c)), None)
    if cc is None:
        if host_needs_shim():
            raise HostNotCapable(
                "this CPU has AVX-512: the UML guest needs lab/vm/fpshim.c built, and there is "
                "no C compiler (apt-get install gcc libc6-dev)"
            )
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    argv = [cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", tmp, str(SOURCE), "-ldl"]
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        raise HostNotCapable(f"cannot build {SOURCE.name}: {p.stderr.strip()[-500:]}")
    os.replace(tmp, target)
    return target
