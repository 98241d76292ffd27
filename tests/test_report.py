"""`lab report`: report.md + PNGs and a self-contained report.html from fixture runs; the KEP
claims first (with their confounds), the minimum effect, the environment last."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures.make_run import make_fixture_run, make_run_from_rows

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
        "report-queue_cdf.png",
        "report-rest_cdf.png",
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
    assert len(images) == 7
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


# --- the claims first ----------------------------------------------------------------------
CLAIM_COLUMNS = [
    "claim",
    "condition",
    "measure",
    "h2",
    "h3",
    "h3/h2 [95% CI]",
    "n",
    "verdict",
    "confounds",
]
HOL = "(a) no head-of-line blocking under loss [KEP-3156]"
ZERO_RTT = "(b) 0-RTT starts faster [KEP-3156]"
RPC = "(c) small requests beside a download [lab]"
THROUGHPUT = "(d) throughput [lab]"


def _table_after(md: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table after `heading`, as dicts; an empty claim cell repeats the
    claim of the row above."""
    lines = md.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        table.append([c.strip() for c in ln.strip().strip("|").split(" | ")])
    headers, rows = table[0], table[2:]
    out = [dict(zip(headers, r, strict=True)) for r in rows]
    for prev, row in itertools.pairwise(out):
        if "claim" in row and not row["claim"]:
            row["claim"] = prev["claim"]
    return out


def _claims(run: Path, out: Path) -> tuple[str, list[dict[str, str]]]:
    md = write_report(run, out).markdown.read_text()
    return md, _table_after(md, "## KEP claims")


def _row(rows: list[dict[str, str]], claim: str, condition: str, measure: str) -> dict[str, str]:
    (row,) = [
        r
        for r in rows
        if r["claim"] == claim and r["condition"] == condition and r["measure"].startswith(measure)
    ]
    return row


def test_the_claims_come_first_with_their_columns(written: ReportFiles) -> None:
    md = written.markdown.read_text()
    sections = re.findall(r"^## (.+)$", md, flags=re.M)
    assert sections[0] == "KEP claims"
    assert sections[1] == "Verdicts at a glance"
    assert sections[-2:] == ["How to read this", "Scenario and environment"]
    header = next(ln for ln in md.split("## KEP claims", 1)[1].splitlines() if ln.startswith("|"))
    assert header == "| " + " | ".join(CLAIM_COLUMNS) + " |"
    rows = _table_after(md, "## KEP claims")
    assert list(dict.fromkeys(r["claim"] for r in rows)) == [HOL, ZERO_RTT, RPC, THROUGHPUT]

    hol = _row(rows, HOL, "loss 1%, RTT 50 ms, 20 Mbit/s, 16 streams", "hol_spread")
    assert hol["verdict"] == "h3 better" and hol["n"] == "3"
    assert 0.8 < float(hol["h2"]) <= 1.0 and float(hol["h3"]) < 0.25
    point, low, high = map(
        float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", hol["h3/h2 [95% CI]"]).groups()
    )
    assert low <= point <= high < 1.0
    assert hol["confounds"] == ""  # same controller (cubic), 3 repetitions, nothing CPU-bound
    assert not [r for r in rows if r["claim"] == HOL and "no loss" in r["condition"]]  # under loss
    one = _row(rows, HOL, "loss 2%, RTT 50 ms, 20 Mbit/s, 1 stream", "excess_p99_ms")
    assert one["confounds"] == "1 stream: no other stream to block"

    cold = _row(rows, ZERO_RTT, "no loss, RTT 50 ms, 20 Mbit/s", "ttfb_rtt: h3 zero_rtt vs h2 cold")
    resumed = _row(
        rows, ZERO_RTT, "no loss, RTT 50 ms, 20 Mbit/s", "ttfb_rtt: h3 zero_rtt vs h2 resumed"
    )
    for r in (cold, resumed):
        assert r["verdict"] == "h3 better" and r["h3"].endswith(" RTT")
        assert 1.0 < float(r["h3"].split()[0]) < 1.2 and 3.0 < float(r["h2"].split()[0]) < 3.2
    rpc = _row(rows, RPC, "loss 2%, RTT 50 ms, 20 Mbit/s", "rpc_p95_ms")
    assert rpc["verdict"] == "h3 better" and rpc["n"] == "9"  # watch.streams cells pooled
    goodput = _row(rows, THROUGHPUT, "no loss, RTT 50 ms, 20 Mbit/s", "goodput_mbit")
    assert goodput["verdict"] == "h3 worse" and goodput["h2"].endswith(" Mbit/s")


def test_confounds_are_listed_where_they_apply(tmp_path: Path) -> None:
    stacks = {
        "reference": {
            "h2": {"tcp_congestion": "bbr"},
            "quic": {"engine": "aioquic", "congestion_control": "cubic"},
        }
    }
    run = make_fixture_run(
        tmp_path / "runs", repetitions=3, cpu_bound_cells=["c005"], stacks=stacks
    )
    _, rows = _claims(run, tmp_path / "a")
    controllers = "different congestion controllers: h2 TCP bbr, h3 QUIC cubic"
    assert all(controllers in r["confounds"] for r in rows)
    bound = _row(rows, HOL, "loss 1%, RTT 50 ms, 20 Mbit/s, 16 streams", "hol_spread")
    cpu = "cpu_bound (h3 in 3 of 3 pairs): measures Python, not the protocol"
    assert bound["confounds"] == f"{cpu}; {controllers}"
    fine = _row(rows, HOL, "loss 1%, RTT 50 ms, 20 Mbit/s, 4 streams", "hol_spread")
    assert "cpu_bound" not in fine["confounds"]
    pooled = _row(rows, THROUGHPUT, "loss 1%, RTT 50 ms, 20 Mbit/s", "goodput_mbit")
    assert "cpu_bound (h3 in 3 of 9 pairs)" in pooled["confounds"]  # c003-c005 pooled

    few = make_fixture_run(tmp_path / "runs", repetitions=2, run_id="two-repetitions")
    _, rows = _claims(few, tmp_path / "b")
    watch = [r for r in rows if r["claim"] == HOL]
    assert watch and all(
        r["verdict"] == "undecided" and "too few repetitions (2 < 3)" in r["confounds"]
        for r in watch
    )
    # bulk does not depend on watch.streams: 3 cells × 2 repetitions are enough pairs
    goodput = _row(rows, THROUGHPUT, "loss 1%, RTT 50 ms, 20 Mbit/s", "goodput_mbit")
    assert goodput["n"] == "6" and "too few" not in goodput["confounds"]


def _excess_rows(h2: list[float], h3: list[float]) -> list[dict[str, Any]]:
    """One watch cell with one stream: excess_p99_ms per repetition, congestion_limited set for
    h3 in repetition 0."""
    rows = []
    for proto, values in (("h2", h2), ("h3", h3)):
        for rep, v in enumerate(values):
            base = dict(cell="c000", repetition=rep, protocol=proto, workload="watch")
            rows.append({**base, "metric": "excess_p99_ms", "value": v, "unit": "ms"})
            limited = float(proto == "h3" and rep == 0)
            rows.append({**base, "metric": "congestion_limited", "value": limited, "unit": "bool"})
    return rows


def test_a_twentieth_of_a_millisecond_is_no_meaningful_difference(tmp_path: Path) -> None:
    """The report used to say "h3 better" for 0.05 ms of excess p99 with one stream."""
    lossy = {"delay_ms": 25.0, "loss": {"model": "bernoulli", "rate": 0.01}, "rate_mbit": 20.0}
    cells = [
        {"cell": "c000", "axes": {"watch.streams": 1}, "link": {"uplink": lossy, "downlink": lossy}}
    ]
    h2 = [1.00, 1.01, 1.02, 1.00, 1.01]
    run = make_run_from_rows(
        tmp_path / "runs", _excess_rows(h2, [v - 0.05 for v in h2]), cells=cells, repetitions=5
    )
    md, rows = _claims(run, tmp_path / "out")
    hol = _row(rows, HOL, "loss 1%, RTT 50 ms, 20 Mbit/s, 1 stream", "excess_p99_ms")
    assert hol["verdict"] == "no meaningful difference"
    assert float(hol["h3/h2 [95% CI]"].split(" [")[1].split(",")[1].rstrip("]")) < 1.0
    assert hol["confounds"] == (
        "congestion_limited (h3 in 1 of 5 pairs): measures congestion control, not head-of-line "
        "blocking; 1 stream: no other stream to block"
    )
    (detail,) = _table_after(md, "## Watch streams (head-of-line blocking)")
    assert detail["verdict"] == "no meaningful difference"
    others = {r["claim"]: r["verdict"] for r in rows if r["claim"] != HOL}
    assert others == {
        ZERO_RTT: "not measured: the run has no handshake workload",
        RPC: "not measured: the run has no rpc_under_load workload",
        THROUGHPUT: "not measured: the run has no bulk workload",
    }


def test_environment_tables_come_last_collapsed_in_html(written: ReportFiles) -> None:
    page = written.html.read_text()
    order = [
        page.index(f"<h2>{h}</h2>")
        for h in (
            "KEP claims",
            "Verdicts at a glance",
            "How to read this",
            "Scenario and environment",
        )
    ]
    assert order == sorted(order)
    tail = page[order[-1] :]
    titles = ("Versions and seed", "Impairment: backend emulator", "Stack settings", "Cells")
    for title in titles:
        assert f"<details><summary>{html.escape(title)}</summary><table>" in tail
    assert tail.count("<table>") == len(titles)  # every table of the section is collapsed
    assert "<table>" in page[: order[1]]  # the claims table is not
