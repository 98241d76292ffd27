"""The guest's kernel command line and its two init stages, as text (pure: nothing runs here).

Stage 1 (`init`, PID 1 on the host's `/` mounted read-only through hostfs): load overlayfs,
mount a tmpfs, stack an overlay (lower: the host's `/`, upper: the tmpfs) and mount the
read-write hostfs shares inside it; then move the overlay onto `/` and `exec chroot` into it —
PID 1 itself, so that the kernel's module autoloading (which runs `/sbin/modprobe` in PID 1's
root) finds `/lib/modules/<release>`, a symlink to the UML modules in the overlay.
Stage 2 (`stage2`, PID 1 in the overlay): proc, sys, dev, cgroup2, loopback, the modules nothing
autoloads, then the guest agent (`python -m lab.vm.guest`), then power off.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lab.vm.kernel import OVERLAY_MODULE, UmlKernel

DEFAULT_MEM_MB = 1536
PRELOAD_MODULES = ("ipv6", "tun")  # tun: /dev/net/tun exists only once it is loaded
# characters a hostfs mount option or the kernel command line cannot carry in a path
UNSAFE_PATH_CHARS = frozenset(", \t\n\"'\\")


@dataclass(frozen=True)
class GuestLayout:
    """One guest's files on the host (all under `workdir`, which the guest sees at the same
    path) and what it mounts. `shares` are host directories mounted read-write."""

    workdir: Path
    kernel: UmlKernel
    python: str  # the host's interpreter (absolute), which runs the agent in the guest
    mem_mb: int = DEFAULT_MEM_MB
    overlay_mb: int | None = None  # tmpfs for the overlay's upper layer (default: mem / 2)
    shares: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def control(self) -> Path:
        """Shared read-write with the guest: spec.json in, rc and stop files."""
        return self.workdir / "ctl"

    @property
    def init(self) -> Path:
        return self.workdir / "init"

    @property
    def stage2(self) -> Path:
        return self.workdir / "stage2"

    @property
    def rootfs(self) -> Path:
        """Mount point of the tmpfs that holds the overlay (upper, work, merged)."""
        return self.workdir / "root"

    @property
    def uml_dir(self) -> Path:
        """UML's own directory (mconsole socket, pid file) instead of ~/.uml."""
        return self.workdir / "uml"


def unsafe_path(path: Path) -> str | None:
    """Why `path` cannot be shared with the guest (None when it can)."""
    bad = sorted(set(str(path)) & UNSAFE_PATH_CHARS)
    if not path.is_absolute():
        return f"{path}: not an absolute path"
    return f"{path}: contains {bad!r}" if bad else None


def kernel_cmdline(layout: GuestLayout, umid: str, stderr_fd: int = 3) -> list[str]:
    """The UML kernel's arguments: memory, hostfs root (read-only), our init, consoles
    (con0 = the command's stdout on host fd 1, con1 = its stderr on host fd `stderr_fd`;
    no input)."""
    return [
        f"mem={layout.mem_mb}M",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={layout.init}",
        "quiet",
        "loglevel=1",
        f"umid={umid}",
        f"uml_dir={layout.uml_dir}",
        "con=null",
        "con0=null,fd:1",
        f"con1=null,fd:{stderr_fd}",
        "ssl=null",
    ]


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def init_script(layout: GuestLayout) -> str:
    """Stage 1: PID 1 on the read-only hostfs root builds the overlay and chroots into it."""
    k = layout.kernel
    overlay_mb = layout.overlay_mb or layout.mem_mb // 2
    root = layout.rootfs
    merged = root / "merged"
    lines = [
        "#!/bin/sh",
        "# lab vm, stage 1 (PID 1 on the host's / through hostfs, read-only): lab/vm/boot.py",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
        'die() { echo "labvm: stage 1: $*"; poweroff -f; exit 1; }',
        f"insmod {_q(k.modules / OVERLAY_MODULE)} || die 'cannot load overlayfs'",
        f"mount -n -t tmpfs -o size={overlay_mb}m,mode=0755 labvm {_q(root)} || die tmpfs",
        f"mkdir {_q(root / 'upper')} {_q(root / 'work')} {_q(merged)} || die mkdir",
        f"mount -n -t overlay labroot -o lowerdir=/,upperdir={_q(root / 'upper')},"
        f"workdir={_q(root / 'work')} {_q(merged)} || die overlay",
        f"mkdir -p {_q(merged / 'usr/lib/modules')}",
        f"ln -sfn {_q(k.modules)} {_q(merged / 'usr/lib/modules' / k.release)}",
    ]
    for share in (layout.control, *layout.shares):
        target = merged / share.relative_to("/")
        lines.append(
            f"mount -n -t hostfs -o {_q(share)} labshare {_q(target)} || die 'share {share}'"
        )
    lines += [
        f"cd {_q(merged)} || die cd",
        "mount -n --move . / || die 'move the overlay onto /'",
        f"exec chroot . /bin/sh {_q(layout.stage2)}",
        "",
    ]
    return "\n".join(lines)


def stage2_script(layout: GuestLayout, pythonpath: str) -> str:
    """Stage 2: PID 1 in the overlay mounts the kernel file systems, then runs the agent."""
    spec = layout.control / "spec.json"
    lines = [
        "#!/bin/sh",
        "# lab vm, stage 2 (PID 1 in the overlay root): lab/vm/boot.py",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
        "mount -n -t proc proc /proc",
        "mount -n -t sysfs sys /sys",
        "mount -n -t devtmpfs dev /dev",
        "mkdir -p /dev/pts /dev/shm",
        "mount -n -t devpts devpts /dev/pts",
        "mount -n -t tmpfs shm /dev/shm",
        "mount -n -t tmpfs run /run",
        "mount -n -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null",
        "echo 1 > /proc/sys/kernel/printk",
        "hostname labvm",
        "ip link set lo up",
        *(f"modprobe -q {m}" for m in PRELOAD_MODULES),
        f"PYTHONPATH={_q(pythonpath)} {_q(layout.python)} -m lab.vm.guest {_q(spec)}",
        "sync",
        "poweroff -f || reboot -f",
        "",
    ]
    return "\n".join(lines)
