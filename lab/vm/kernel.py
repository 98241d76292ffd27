"""Where Debian's user-mode-linux kernel and its modules are, and whether a guest can boot."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lab.errors import HostNotCapable

UML_MODULES_ROOT = Path("/usr/lib/uml/modules")  # Debian's user-mode-linux package
KERNEL_NAMES = ("linux.uml", "linux")
# modules the guest needs before anything can autoload them (overlay: before the root exists;
# tun: /dev/net/tun appears only once the module is in; ipv6: sysctls before the first socket)
OVERLAY_MODULE = Path("kernel/fs/overlayfs/overlay.ko")
NETEM_MODULE = Path("kernel/net/sched/sch_netem.ko")


@dataclass(frozen=True, slots=True)
class UmlKernel:
    """A bootable UML kernel: its binary, its release and its modules directory."""

    binary: Path
    release: str
    modules: Path  # /usr/lib/uml/modules/<release>


def find_kernel() -> UmlKernel:
    """The installed UML kernel; HostNotCapable (naming the missing piece) when there is none."""
    binary = next((Path(p) for n in KERNEL_NAMES if (p := shutil.which(n))), None)
    if binary is None:
        raise HostNotCapable("no user-mode-linux kernel (apt-get install user-mode-linux)")
    releases = sorted(p for p in UML_MODULES_ROOT.glob("*") if (p / OVERLAY_MODULE).exists())
    if not releases:
        raise HostNotCapable(f"no UML modules with overlayfs under {UML_MODULES_ROOT}")
    modules = releases[-1]
    if not (modules / NETEM_MODULE).exists():
        raise HostNotCapable(f"the UML kernel {modules.name} has no sch_netem module")
    if shutil.which("modprobe") is None:
        raise HostNotCapable("no modprobe (apt-get install kmod): the guest loads modules with it")
    return UmlKernel(binary=binary, release=modules.name, modules=modules)
