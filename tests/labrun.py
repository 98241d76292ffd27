"""`lab run` as a user runs it, for the tests that need a real run: a scenario file (written here
or one of scenarios/), `python -m lab run FILE --out DIR --impair emulator --yes` in a
subprocess from the repository root, exit code 0, and the one run directory loaded back.

Imported as `from labrun import ...` (tests/ is on sys.path, as for tests/fixtures).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.results.reader import RunResults, load

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ("--impair", "emulator", "--yes")  # the userspace emulator, no confirmation prompt
RUN_TIMEOUT_S = 300
LIMITED_MEMORY_BYTES = 2 * 2**30  # address space of `run_lab_limited`: an alias bomb hits it


@dataclass(frozen=True)
class LabRun:
    """A finished `lab run`: its process (stdout, stderr), its results and its wall time (s)."""

    process: subprocess.CompletedProcess[str]
    results: RunResults
    wall_s: float


def skip_without_netns() -> None:
    """Skip the calling test or fixture unless this host can build namespaces and TUN devices."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not Path("/dev/net/tun").exists():
        pytest.skip("needs /dev/net/tun")


def lab_argv(*args: str) -> list[str]:
    """argv of `python -m lab ARGS` with this interpreter."""
    return [sys.executable, "-m", "lab", *args]


def run_lab(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run `python -m lab ARGS` from the repository root (no stdin); assert exit code 0."""
    p = subprocess.run(
        lab_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def run_lab_limited(
    *args: str, memory_bytes: int = LIMITED_MEMORY_BYTES, timeout_s: float = 30
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m lab ARGS` in a process limited to `memory_bytes` of address space, exit code
    not checked; (its result, its CPU seconds, user + system)."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(
        lab_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        preexec_fn=limit_memory,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return p, cpu_s


TIMER_PROBE = """
import os, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
except OSError:
    pass
late = []
for _ in range({n}):
    due = time.monotonic_ns() + 1_000_000
    time.sleep(0.001)
    late.append(time.monotonic_ns() - due)
late.sort()
print(late[int(0.99 * len(late))] / 1e6)
"""


def timer_overshoot_p99_ms(samples: int = 2000) -> float:
    """How late a 1 ms sleep wakes up on this host, p99 in ms, measured in a SCHED_FIFO child
    (the emulator's own scheduling; its release-lateness check, p99 ≤ 1 ms, rests on the same
    wake-ups). A hypervisor that takes the CPU away breaks any 0.5 ms check: seen here with
    nothing else running, p99 1.3–2.7 ms and a 20 ms maximum, the emulator 4–11 ms late."""
    code = TIMER_PROBE.format(n=samples)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return float(p.stdout)


def write_scenario(directory: Path, name: str, text: str) -> Path:
    """`text` written to DIRECTORY/NAME.yaml; its path."""
    scenario = directory / f"{name}.yaml"
    scenario.write_text(text)
    return scenario


def run_scenario(scenario: Path, out: Path, *, timeout_s: float = RUN_TIMEOUT_S) -> LabRun:
    """`lab run SCENARIO --out OUT` through the emulator; asserts exit code 0 and exactly one
    run directory under OUT, and loads it."""
    t0 = time.monotonic()
    p = run_lab("run", str(scenario), "--out", str(out), *EMULATOR, timeout_s=timeout_s)
    wall_s = time.monotonic() - t0
    (run_dir,) = out.iterdir()
    return LabRun(p, load(run_dir), wall_s)


def run_scenario_text(directory: Path, name: str, text: str) -> LabRun:
    """`text` written to DIRECTORY/NAME.yaml and run with `run_scenario`, results under
    DIRECTORY/NAME/."""
    return run_scenario(write_scenario(directory, name, text), directory / name)
