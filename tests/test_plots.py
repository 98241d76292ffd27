"""Plots drawn from fixture results: the returned axes carry the expected lines and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.make_run import BASE_RTT_MS, make_fixture_run
from matplotlib.figure import Figure

from lab.evidence import plots
from lab.evidence.significance import with_link_columns
from lab.results.reader import load
from lab.results.schema import samples_frame


@pytest.fixture(scope="module")
def run_df(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run = load(make_fixture_run(tmp_path_factory.mktemp("runs"), repetitions=3))
    return with_link_columns(run.samples, run.meta)


def _ax():
    return Figure(figsize=(6, 4)).add_subplot()


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _series(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label → (x, y) of every plain line and every error-bar series on the axes."""
    out = {ln.get_label(): ln.get_data() for ln in ax.get_lines()}
    for c in ax.containers:
        if c.lines and c.lines[0] is not None:
            out[c.get_label()] = c.lines[0].get_data()
    return {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in out.items()}


def _drawn_as_points(ax) -> None:
    """Nothing is a line against x: every series is a single point without a connecting line,
    every other line is horizontal (a reference value)."""
    assert ax.containers
    for c in ax.containers:
        line = c.lines[0]
        assert len(line.get_xdata()) == 1 and line.get_linestyle() == "None", c.get_label()
    for ln in ax.get_lines():
        if any(ln is c.lines[0] for c in ax.containers):
            continue
        y = np.asarray(ln.get_ydata(), float)
        assert np.all(y == y[0]), ln.get_label()  # horizontal


def test_ttfb_at_one_rtt_is_points_beside_horizontal_references(run_df: pd.DataFrame) -> None:
    ax = plots.plot_ttfb(run_df, _ax())  # the fixture has one base RTT, 50 ms
    _drawn_as_points(ax)
    assert set(_labels(ax)) == {"1 RTT", "2 RTT", "3 RTT"}
    assert "base RTT 50 ms" in ax.get_title() and "loss 0%" in ax.get_title()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["h2 cold", "h2 resumed", "h3 cold", "h3 resumed", "h3 zero_rtt"]
    series = _series(ax)
    ref = {k: series[f"{k} RTT"][1][0] for k in (1, 2, 3)}
    assert ref == {k: pytest.approx(k * BASE_RTT_MS) for k in (1, 2, 3)}
    # each handshake lies nearest to its textbook reference
    for label, k in (("h3 zero_rtt", 1), ("h3 cold", 2), ("h2 cold", 3), ("h2 resumed", 3)):
        y = series[label][1][0]
        assert min(ref, key=lambda j: abs(ref[j] - y)) == k, label
    # the h3 0-RTT point sits near 1 RTT, h2 cold near 3 RTT (fixture: +0.02…0.15 RTT)
    assert series["h3 zero_rtt"][1][0] == pytest.approx(1.1 * BASE_RTT_MS, rel=0.08)
    assert series["h2 cold"][1][0] == pytest.approx(3.1 * BASE_RTT_MS, rel=0.05)


def test_a_single_loss_rate_or_stream_count_is_not_drawn_as_a_line(run_df: pd.DataFrame) -> None:
    one_loss = run_df[run_df["link.loss.rate"] == 0.01]
    ax = plots.plot_goodput(one_loss, _ax())
    _drawn_as_points(ax)
    assert "loss 1%" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["h2", "h3"]
    h2, h3 = (_series(ax)[p][1][0] for p in ("h2", "h3"))
    assert 14 < h3 < h2 < 18  # fixture at 1% loss: 20 × 0.92 × {0.9, 0.8}

    one_count = one_loss[one_loss["watch.streams"] == 16]
    ax = plots.plot_hol_spread(one_count, _ax())
    _drawn_as_points(ax)
    assert "16 streams" in ax.get_title()
    series = _series(ax)
    assert series["1: all streams wait"][1][0] == 1.0
    assert series["1/N = 1/16: one stream waits"][1][0] == pytest.approx(1 / 16)
    assert series["h2"][1][0] > 0.8 and series["h3"][1][0] < 0.25


def test_ttfb_rtt_sweep_puts_points_at_each_rtt() -> None:
    rows = []
    for cell, rtt in (("c0", 10.0), ("c1", 50.0), ("c2", 200.0)):
        for rep in range(3):
            for proto, k in (("h2", 3.0), ("h3", 2.0)):
                ttfb = k * rtt * (1 + 0.01 * rep)
                base = dict(cell=cell, repetition=rep, protocol=proto, workload="handshake")
                rows.append({**base, "metric": "ttfb_ms", "value": ttfb, "unit": "ms"})
                rows.append({**base, "metric": "ttfb_rtt", "value": ttfb / rtt, "unit": "rtt"})
    for r in rows:
        r.update(mode="cold", early_data=False)
    ax = plots.plot_ttfb(samples_frame(rows), _ax())
    x, y = _series(ax)["h3 cold"]
    assert list(x) == pytest.approx([10.0, 50.0, 200.0])
    assert list(y) == pytest.approx([20.2, 101.0, 404.0], rel=0.01)


def test_zero_rtt_without_early_data_is_not_labelled_zero_rtt() -> None:
    rows = [
        dict(
            cell="c0",
            repetition=r,
            protocol="h3",
            workload="handshake",
            metric=m,
            value=v,
            unit=u,
            mode="zero_rtt",
            early_data=False,
        )
        for r in range(3)
        for m, v, u in (("ttfb_ms", 100.0, "ms"), ("ttfb_rtt", 2.0, "rtt"))
    ]
    labels = set(_series(plots.plot_ttfb(samples_frame(rows), _ax())))
    assert "h3 zero_rtt→1-RTT" in labels
    assert "h3 zero_rtt" not in labels


def test_goodput_against_loss_with_intervals(run_df: pd.DataFrame) -> None:
    ax = plots.plot_goodput(run_df, _ax())
    assert set(_labels(ax)) == {"h2", "h3"}
    x, y = _series(ax)["h2"]
    assert list(x) == pytest.approx([0.0, 1.0, 2.0])  # percent
    assert all(np.diff(y) < 0)  # goodput falls with loss in the fixture
    assert ax.get_xlabel() == "packet loss (%)"
    # one error bar per point, each from its interval's low to high around the median
    h2 = next(c for c in ax.containers if c.get_label() == "h2")
    bars = h2.lines[2][0].get_segments()
    assert len(bars) == 3
    for segment, xi, yi in zip(bars, x, y, strict=True):
        (x0, low), (x1, high) = segment
        assert x0 == x1 == xi and low <= yi <= high and low < high


def test_hol_spread_against_streams(run_df: pd.DataFrame) -> None:
    ax = plots.plot_hol_spread(run_df, _ax())
    labels = _labels(ax)
    assert "1/N: one stream waits" in labels
    assert "h3, loss 1%" in labels and "h2, loss 2%" in labels
    assert not any("loss 0%" in lab for lab in labels)  # no stalls without loss: left out
    series = _series(ax)
    x, y = series["h3, loss 1%"]
    assert list(x) == [1.0, 4.0, 16.0]
    assert y[-1] < 0.25
    assert series["h2, loss 1%"][1][-1] > 0.8


def test_excess_cdf_known_answer() -> None:
    rows = [
        dict(cell="c0", repetition=rep, protocol=proto, workload="watch", stream=i,
             metric="event_excess_ms", value=v, unit="ms")
        for proto, per_rep in (("h2", [[30.0, 0.0], [10.0, 20.0]]), ("h3", [[5.0, 0.0]]))
        for rep, values in enumerate(per_rep)
        for i, v in enumerate(values)
    ]  # fmt: skip
    series = _series(plots.plot_excess_cdf(samples_frame(rows), _ax()))
    x, y = series["h2"]  # repetitions pooled, sorted, a step of 1/n per event
    assert list(x) == [0.0, 10.0, 20.0, 30.0] and list(y) == [0.25, 0.5, 0.75, 1.0]
    x, y = series["h3"]
    assert list(x) == [0.0, 5.0] and list(y) == [0.5, 1.0]


def test_excess_cdf_per_protocol_and_loss(run_df: pd.DataFrame) -> None:
    ax = plots.plot_excess_cdf(run_df, _ax())
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert {lab.split(",")[0] for lab in lines} == {"h2", "h3"}
    assert "16 streams" in ax.get_title()
    style = {label: ln.get_linestyle() for label, ln in lines.items()}
    for loss in ("0%", "1%", "2%"):  # one line style per condition, the same for both protocols
        assert style[f"h2, loss {loss}"] == style[f"h3, loss {loss}"]
    assert len(set(style.values())) == 3

    def median_excess(label: str) -> float:
        return float(np.median(lines[label].get_xdata()))

    # at 2% loss h2 streams wait on each other's losses, h3 streams do not
    assert median_excess("h3, loss 2%") < median_excess("h2, loss 2%") / 10
    assert median_excess("h2, loss 0%") < median_excess("h2, loss 2%")


def test_rpc_delay_boxes_per_protocol_and_condition(run_df: pd.DataFrame) -> None:
    ax = plots.plot_rpc_delay(run_df, _ax())
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"{p}\nloss {x}%" for x in ("0", "1", "2") for p in ("h2", "h3")]
    assert len(ax.patches) == 6


@pytest.mark.parametrize(
    "draw",
    [
        plots.plot_ttfb,
        plots.plot_goodput,
        plots.plot_excess_cdf,
        plots.plot_hol_spread,
        plots.plot_rpc_delay,
    ],
)
def test_plot_without_its_data_says_so(draw) -> None:
    rows = [
        dict(
            cell="c0",
            repetition=0,
            protocol="h2",
            workload="other",
            metric="cpu_bound",
            value=0.0,
            unit="bool",
        )
    ]
    ax = draw(samples_frame(rows), _ax())
    assert any(t.get_text().startswith("no data") for t in ax.texts)
    assert not ax.get_lines() and not ax.containers


def test_figure_renders_png(run_df: pd.DataFrame, tmp_path: Path) -> None:
    specs = plots.plots_for(run_df, "watch")
    assert [s.name for s in specs] == ["hol_spread", "excess_cdf", "queue_cdf", "rest_cdf"]
    fig = plots.figure(specs[0], run_df)
    (ax,) = fig.axes
    assert ax.get_title().startswith("Head-of-line blocking spread")  # the spec's plot, drawn
    assert ax.containers  # with its data, not "no data"
    out = tmp_path / "w.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
