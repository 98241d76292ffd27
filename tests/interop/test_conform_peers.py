"""`lab conform` against third-party stacks in the lab's namespaces: Caddy (Go net/http +
quic-go) and ngtcp2's gtlsserver. A peer's failures are data, not test failures: the tests check
that every case ran to a result and that what is known about the peer holds; each table is
printed and written to the test's directory (`pytest -s` shows it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from lab.conform import registry
from lab.conform.model import ConformRun
from lab.conform.output import result_table, to_json
from lab.conform.runner import run_cases
from lab.conform.target import ServerTarget

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.slow]
WAIT_FACTOR = 0.5  # the peers answer at once inside the lab's namespaces


def _run(server: str, binary: str, tmp_path: Path) -> dict[str, dict[str, object]]:
    assert shutil.which(binary), f"{binary} not installed: run scripts/install.sh"
    with ServerTarget(server, wait_factor=WAIT_FACTOR) as target:
        run: ConformRun = run_cases(target, registry.CASES)
    doc = to_json(run)
    (tmp_path / f"conformance-{server}.json").write_text(json.dumps(doc, indent=2))
    Console(width=200, record=True).print(result_table(run))
    results = {str(r["id"]): r for r in doc["results"]}
    assert set(results) == {c.spec.id for c in registry.CASES}  # the run completed
    assert not [r for r in results.values() if str(r["reason"]).startswith("case error")]
    return results


def test_caddy_conformance_run_completes(tmp_path: Path) -> None:
    results = _run("caddy", "caddy", tmp_path)
    assert results["D-01"]["status"] == "passed"  # Alt-Svc on h2 and HTTP/1.1
    assert results["D-02"]["status"] == "passed" and not results["D-02"]["notes"]  # same port
    for case_id in ("H2-01", "H3-01", "Q-01", "Q-06", "D-03", "Z-01"):
        assert results[case_id]["status"] == "passed", (case_id, results[case_id]["reason"])
    assert results["Z-02"]["status"] == "unsupported"  # Caddy serves no /counter


def test_gtlsserver_conformance_run_completes(tmp_path: Path) -> None:
    results = _run("gtlsserver", "gtlsserver", tmp_path)
    h2 = [r for r in results.values() if r["group"] == "h2"]
    assert {r["status"] for r in h2} == {"unsupported"}  # HTTP/3 only: no TCP listener
    assert results["Q-04"]["status"] == "passed"  # --validate-addr: Retry
    for case_id in ("H3-01", "H3-02", "Q-01", "Q-05", "Q-07", "Z-01"):
        assert results[case_id]["status"] == "passed", (case_id, results[case_id]["reason"])
