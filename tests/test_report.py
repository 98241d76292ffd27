"""`lab report`: report.md + PNGs and a self-contained report.html from fixture runs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from fixtures.make_run import make_fixture_run

from lab.cli import main
from lab.evidence.report import (
    WORKLOAD_TITLES,
    ReportFiles,
    _group_identical,
    workloads_in,
    write_report,
)
from lab.scenario.workloads import WORKLOAD_KINDS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("runs"), repetitions=3)


@pytest.fixture(scope="module")
def written(run: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(run, tmp_path_factory.mktemp("report"))


def test_markdown_with_png_files_beside_it(written: ReportFiles) -> None:
    md = written.markdown.read_text()
    out = written.markdown.parent
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert refs == [
        "report-ttfb.png",
        "report-goodput.png",
        "report-hol_spread.png",
        "report-excess_cdf.png",
        "report-rpc_delay.png",
    ]
    for ref in refs:
        assert (out / ref).read_bytes().startswith(PNG)
    # scenario and environment: versions, impairment backend, stack settings, seed
    for text in (
        "## Scenario and environment",
        "Linux 6.1.0-fixture",
        "### Impairment: backend emulator",
        "reference.h2.tcp_congestion | cubic",
        "| seed | 0 |",
        "## Watch streams (head-of-line blocking)",
        "h3/h2 [95% CI]",
        "| h3 better |",
    ):
        assert text in md, text
    assert "incomplete" not in md
    # a verdict row: h3 HOL spread at 16 streams, 1% loss
    row = next(ln for ln in md.splitlines() if "watch.streams=16" in ln and "hol_spread" in ln)
    assert "| h3 better |" in row


def test_html_is_self_contained(written: ReportFiles) -> None:
    page = written.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(i).startswith(PNG) for i in images)


def test_incomplete_run_says_so(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    meta = json.loads((run / "run.json").read_text())
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in ("samples.parquet", "summary.csv", "errors.json"):
        (partial / f).write_bytes((run / f).read_bytes())
    meta.update(status="interrupted", completed=meta["completed"][:4])
    (partial / "run.json").write_text(json.dumps(meta))
    assert main(["report", str(partial)]) == 0
    err = capsys.readouterr().err
    assert "incomplete (status: interrupted): 4 of 27" in err
    assert "incomplete (status: interrupted): 4 of 27" in (partial / "report.md").read_text()
    assert 'class="warn"' in (partial / "report.html").read_text()


def test_cli_writes_into_the_run_and_rejects_a_non_run(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists() and (run / "report.md").exists()
    assert "wrote" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_identical_cell_settings_are_shown_once() -> None:
    link = {"delay_ms": 25.0, "loss": {"rate": 0.01}}
    assert _group_identical({"c000": link, "c001": dict(link)}) == {"all cells": link}
    other = {"delay_ms": 50.0, "loss": {"rate": 0.01}}
    grouped = _group_identical({"c000": link, "c001": other, "c002": dict(link)})
    assert grouped == {"c000, c002": link, "c001": other}


def test_every_workload_kind_has_a_section_title_in_reading_order() -> None:
    assert set(WORKLOAD_TITLES) == set(WORKLOAD_KINDS)
    samples = pd.DataFrame({"workload": ["watch", "zeta", "bulk", "handshake", None, "alpha"]})
    assert workloads_in(samples) == ["handshake", "bulk", "watch", "alpha", "zeta"]
