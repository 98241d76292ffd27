"""Calibrate one link spec with both backends: the emulator with `lab calibrate` on the host,
tc netem with `lab vm calibrate` in a guest (the emulator inside UML is CPU-bound: one virtual
CPU, every syscall a ptrace round trip; its own lateness check fails there, docs/vm.md)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lab.errors import RunError
from lab.vm.host import run_in_guest


def scenario_text(name: str, link: dict[str, Any], seed: int = 11) -> str:
    """A one-cell scenario around `link` (what `lab calibrate` takes); a link with `uplink` or
    `downlink` keys becomes the scenario's top-level `uplink:`/`downlink:`."""
    doc = {
        "name": name,
        "seed": seed,
        "repeat": 1,
        **(link if {"uplink", "downlink"} & set(link) else {"link": link}),
        "protocols": ["h2", "h3"],
        "workloads": [{"kind": "bulk", "bytes": 100000}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _json(text: bytes, what: str) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(text)
    except ValueError as e:
        raise RunError(f"{what}: no calibration JSON ({e}): {text[-300:]!r}") from e
    return result


def calibrate_emulator(scenario: Path, probes: int) -> dict[str, Any]:
    """`lab calibrate SCENARIO --impair emulator --json` on the host."""
    argv = [sys.executable, "-m", "lab", "calibrate", str(scenario), "--impair", "emulator"]
    p = subprocess.run(
        [*argv, "--probes", str(probes), "--json"], capture_output=True, check=False, timeout=600
    )
    return _json(p.stdout, f"emulator calibration of {scenario.name}")


def calibrate_netem(scenario: Path, probes: int) -> dict[str, Any]:
    """`lab vm calibrate SCENARIO --impair netem --json`: tc netem in a fresh guest."""
    out, err = io.BytesIO(), io.BytesIO()
    args = ["calibrate", str(scenario), "--impair", "netem", "--probes", str(probes), "--json"]
    run_in_guest(args, timeout_s=600, stdout=out, stderr=err)
    return _json(out.getvalue(), f"netem calibration of {scenario.name}")


def calibrate_both(
    name: str, link: dict[str, Any], probes: int = 2000
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(emulator result, netem result) of the same link spec, each `lab calibrate --json`."""
    with tempfile.TemporaryDirectory(prefix="lab-xval-") as tmp:
        scenario = Path(tmp) / f"{name}.yaml"
        scenario.write_text(scenario_text(name, link))
        return calibrate_emulator(scenario, probes), calibrate_netem(scenario, probes)
