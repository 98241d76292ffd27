"""lab.cli: one place maps the error tree to exit codes and one stderr line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from lab import cli
from lab.errors import (
    BadInput,
    HostNotCapable,
    LabError,
    PeerError,
    ResultsError,
    RunError,
    RunSetupError,
    ScenarioError,
    ThresholdFileError,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadInput("--repeat must be ≥ 1"), 2),
        (ResultsError("results/x/run.json: not JSON"), 2),
        (ThresholdFileError("t.yaml:3: unknown metric"), 2),
        (RunSetupError("server 'caddy' cannot serve workload(s) ['watch']"), 2),
        (HostNotCapable("no sch_netem in this kernel"), 2),
        (RunError("agent exited with 1"), 1),
        (PeerError("server not ready after 20 s"), 1),
    ],
)
def test_lab_errors_become_their_exit_code_and_one_prefixed_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: LabError, code: int
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "_cmd_doctor", handler)
    assert cli.main(["doctor"]) == code
    err = capsys.readouterr().err
    assert err == f"lab doctor: {error}\n"


def test_a_scenario_error_is_printed_as_it_is_since_it_names_its_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise ScenarioError("s.yaml", 4, "link.delay_ms", "must be ≥ 0")

    monkeypatch.setattr(cli, "_cmd_doctor", handler)
    assert cli.main(["doctor"]) == 2
    assert capsys.readouterr().err == "s.yaml:4: link.delay_ms: must be ≥ 0\n"


def test_a_multi_line_message_is_folded_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise PeerError("server exited with 1:\nTraceback …\n  OSError: port in use")

    monkeypatch.setattr(cli, "_cmd_doctor", handler)
    assert cli.main(["doctor"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_an_internal_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_cmd_doctor", handler)
    with pytest.raises(ZeroDivisionError):
        cli.main(["doctor"])


def test_a_missing_run_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    for command in (["report", str(missing)], ["compare", str(missing), str(missing)]):
        p = subprocess.run(
            [sys.executable, "-m", "lab", *command], capture_output=True, text=True, check=False
        )
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"lab {command[0]}: ")
        assert "no-such-run" in p.stderr
