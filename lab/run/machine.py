"""The machine a run (or a shard of one) ran on, for run.json `machine`: CPU model, cores,
CPU limit, memory, load average at the start — what makes two shards' timings comparable.

The parsers are pure (text in, values out); `machine_info` reads /proc, /sys and the
environment. In a Kubernetes pod the node's name comes from `LAB_NODE_NAME` (the rendered
manifests set it from `spec.nodeName`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

NODE_NAME_ENV = "LAB_NODE_NAME"
_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota µs> <period µs>" or "max …"


def cpu_model(cpuinfo: str) -> str | None:
    """The first "model name" of /proc/cpuinfo text (x86; "Model" or "CPU part" elsewhere)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Processor", "cpu model", "CPU part"):
        if fields.get(key):
            return fields[key]
    return None


def cpu_limit(cpu_max: str) -> float | None:
    """CPUs a cgroup v2 `cpu.max` allows ("200000 100000" → 2.0); None when unlimited."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return round(quota / period, 3) if period > 0 else None


def mem_total_mib(meminfo: str) -> int | None:
    """MemTotal of /proc/meminfo text, in MiB."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """This machine, now: host and node name, CPU model, logical CPUs, CPUs this process may
    use (affinity), the cgroup CPU limit, memory (MiB), load averages (1, 5, 15 min)."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "hostname": socket.gethostname(),
        "node": os.environ.get(NODE_NAME_ENV) or None,
        "cpu_model": cpu_model(_read(_CPUINFO)),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_limit": cpu_limit(_read(_CGROUP_CPU_MAX)),
        "mem_total_mib": mem_total_mib(_read(_MEMINFO)),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
