"""lab doctor: probes on this host (real namespaces, TUN, tc) and the report logic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.doctor import Check, DoctorReport, diagnose, format_report
from lab.net import nsenter


def test_report_lists_one_line_per_missing_required_piece() -> None:
    rep = DoctorReport(
        checks=[
            Check("root", False, "needs root (sudo lab …)"),
            Check("tun", False, "cannot create a TUN device"),
            Check("netem", False, "no sch_netem", required=False),
        ],
        backends=[],
    )
    assert not rep.ok
    problems = rep.problems()
    assert problems[:2] == ["root: needs root (sudo lab …)", "tun: cannot create a TUN device"]
    assert any(p.startswith("impairment:") for p in problems)
    assert "netem" not in " ".join(problems[:2])
    text = format_report(rep)
    assert "lab run cannot work here: root" in text


def test_optional_checks_do_not_fail_the_verdict() -> None:
    rep = DoctorReport(
        checks=[Check("root", True, "ok"), Check("netem", False, "no", required=False)],
        backends=["emulator"],
    )
    assert rep.ok and rep.problems() == []


@pytest.mark.netns
def test_diagnose_this_host_and_leave_nothing_behind() -> None:
    before = set(nsenter.list_namespaces())
    rep = diagnose()
    assert set(nsenter.list_namespaces()) - before == set()
    assert rep.check("root").ok
    assert rep.check("netns").ok and rep.check("tun").ok
    assert "emulator" in rep.backends
    # the netem verdict must match what tc really does on this kernel
    netem = rep.check("netem")
    assert ("netem" in rep.backends) == netem.ok
    assert rep.versions["kernel"] and rep.versions["pyroute2"] != "missing"
    assert set(rep.peers) >= {"caddy", "h2load", "gtlsclient"}
    assert rep.ok


@pytest.mark.netns
def test_lab_doctor_cli_exit_code() -> None:
    p = subprocess.run([sys.executable, "-m", "lab", "doctor"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "impairment backends: emulator" in p.stdout
    assert "lab run can work on this host" in p.stdout
