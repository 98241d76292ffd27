"""`lab doctor`: what this host can do — privileges, namespaces, TUN, qdiscs, tools, versions.

Probes create only throwaway objects named with a fresh run prefix (`lab<hex>-doc`) and remove them
again. `diagnose()` returns a `DoctorReport`; `ok` is True when `lab run` can work here (root,
network namespaces, ethtool and at least one impairment backend); `problems()` gives one line per
missing piece.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab.link.netem import netem_probe
from lab.net import nsenter, tun
from lab.net.names import new_prefix
from lab.net.runlock import RunLock
from lab.peers import go

LIBRARIES = ("trio", "h2", "aioquic", "qh3", "pyroute2", "numpy", "pydantic")
PEERS = ("caddy", "gtlsclient", "gtlsserver", "h2load", "nghttp", "chromium")


@dataclass(frozen=True, slots=True)
class Check:
    """One probe: `ok`, a short detail, and whether `lab run` needs it."""

    name: str
    ok: bool
    detail: str
    required: bool = True


@dataclass
class DoctorReport:
    """All probes, versions, usable impairment backends and peers found."""

    checks: list[Check] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    peers: dict[str, str | None] = field(default_factory=dict)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def problems(self) -> list[str]:
        """One line per missing piece `lab run` needs."""
        out = [f"{c.name}: {c.detail}" for c in self.checks if c.required and not c.ok]
        if not self.backends:
            out.append("impairment: neither the TUN emulator nor tc netem works on this host")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    lines = (p.stderr or p.stdout).strip().splitlines()
    return p.returncode == 0, lines[0] if lines else ""


def _probe_tun(ns: str) -> tuple[bool, str]:
    name = ns.replace("-doc", "-dt")
    try:
        with nsenter.enter(ns):
            fd = tun.attach(name)  # a non-persistent TUN device: gone when fd closes
            os.close(fd)
    except OSError as e:
        return False, f"cannot create a TUN device: {e}"
    return True, "/dev/net/tun works"


def _probe_qdisc(ns: str, kind: str, args: list[str]) -> tuple[bool, str]:
    ok, msg = _run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", kind, *args])
    if ok:
        _run(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"])
        return True, f"tc qdisc {kind} works"
    return False, f"tc qdisc add … {kind} failed: {msg or 'unknown error'}"


def _netem_probe(ns: str) -> tuple[bool, str]:
    try:
        return netem_probe()
    except Exception as e:  # the probe itself failed: report, do not crash the doctor
        return False, f"netem probe failed: {e}"


def _guest_check() -> Check:
    """Whether `lab vm` can boot its user-mode-linux guest here (docs/vm.md): the UML kernel,
    its overlayfs and sch_netem modules, and modprobe. (lab/vm/kernel.py boots it.)"""
    if os.environ.get("LAB_VM") == "1":
        return Check("vm", True, "running inside the lab vm guest", required=False)
    kernel = shutil.which("linux.uml") or shutil.which("linux")
    modules = sorted(Path("/usr/lib/uml/modules").glob("*/kernel/net/sched/sch_netem.ko"))
    if kernel is None or not modules:
        return Check(
            "vm", False, "no user-mode-linux guest (apt-get install user-mode-linux)", False
        )
    if shutil.which("modprobe") is None:
        return Check(
            "vm", False, "user-mode-linux found, but no modprobe (apt-get install kmod)", False
        )
    release = modules[-1].parents[3].name
    return Check("vm", True, f"lab vm: UML {release} guest with tc netem ({kernel})", False)


def _versions() -> dict[str, str]:
    v = {"kernel": platform.release(), "python": platform.python_version()}
    ok, out = _run(["ip", "-V"])
    m = re.search(r"iproute2-(\S+?),?(\s|$)", out)
    v["iproute2"] = (m.group(1) if m else out) if ok else "missing"
    for lib in LIBRARIES:
        try:
            v[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            v[lib] = "missing"
    return v


def diagnose() -> DoctorReport:
    """Probe this host (creates and removes one prefixed namespace when root)."""
    rep = DoctorReport(versions=_versions())
    root = os.geteuid() == 0
    rep.checks.append(Check("root", root, "running as root" if root else "needs root (sudo lab …)"))
    for tool in ("ip", "tc", "ethtool"):
        path = shutil.which(tool)
        rep.checks.append(Check(tool, path is not None, path or f"`{tool}` not found in PATH"))
    rep.peers = {p: shutil.which(p) for p in PEERS}
    go_build = go.build_status()  # the `go` server and the Go agent (scripts/build-go.sh)
    rep.checks.append(Check("go", go_build.built, go_build.detail, required=False))
    rep.checks.append(_guest_check())

    netns_ok = tun_ok = netem_ok = tbf_ok = False
    if root and shutil.which("ip"):
        prefix = new_prefix()
        ns = f"{prefix}-doc"
        lock = RunLock(prefix)
        lock.acquire()
        try:
            netns_ok, msg = _run(["ip", "netns", "add", ns])
            rep.checks.append(
                Check("netns", netns_ok, "network namespaces work" if netns_ok else msg)
            )
            if netns_ok:
                tun_ok, msg = _probe_tun(ns)
                rep.checks.append(Check("tun", tun_ok, msg))
                netem_ok, msg = _netem_probe(ns)
                rep.checks.append(Check("netem", netem_ok, msg, required=False))
                tbf_ok, msg = _probe_qdisc(
                    ns, "tbf", ["rate", "1mbit", "burst", "32kbit", "latency", "400ms"]
                )
                rep.checks.append(Check("tbf", tbf_ok, msg, required=False))
        finally:
            with contextlib.suppress(Exception):
                if ns in nsenter.list_namespaces():
                    _run(["ip", "netns", "delete", ns])
            lock.release()
    else:
        rep.checks.append(Check("netns", False, "not probed (needs root and `ip`)"))
    if netns_ok and tun_ok:
        rep.backends.append("emulator")
    if netns_ok and netem_ok:
        rep.backends.append("netem")
    return rep


def format_report(rep: DoctorReport) -> str:
    """Plain-text report: checks, backends, peers, versions, then the verdict."""
    lines = []
    for c in rep.checks:
        mark = "ok " if c.ok else ("MISSING" if c.required else "no ")
        lines.append(f"  {mark:7} {c.name:8} {c.detail}")
    lines.append(f"impairment backends: {', '.join(rep.backends) or 'none'}")
    lines.append(
        "peers: " + ", ".join(f"{p}{'' if path else ' (missing)'}" for p, path in rep.peers.items())
    )
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in rep.versions.items()))
    if rep.ok:
        lines.append("lab run can work on this host")
    else:
        lines += [f"lab run cannot work here: {p}" for p in rep.problems()]
    return "\n".join(lines)


if __name__ == "__main__":
    r = diagnose()
    print(format_report(r))
    sys.exit(0 if r.ok else 1)
