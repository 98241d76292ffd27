"""The 1-stream hol_spread artefact of lossy.yaml (issue 11): summary.csv showed `hol_spread`
h3 0.5 / h2 1 beside `hol_losses` 0. Two things met there. The median of `hol_losses` is over
every repetition (most have no loss at 1% loss and one stream), that of `hol_spread` only over
the repetitions that counted a loss — so summary.csv now says how many (`hol_spread_reps`). And
an exposed stream that did not stall is a real 0 for HTTP/3 (the lost packet carried none of
its data, e.g. a session ticket), so h3's median of 1 and 0 read 0.5; `lab check` keeps that 0
(it used to drop repetitions without a stalled event, a rule of the schema-1 spread).

Synthetic traces through the real aggregation (pure code): one stream, an event every 100 ms,
25 ms each way (base RTT 50 ms, threshold 25 ms)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from lab.evidence.check import LoadedThreshold, Threshold, evaluate
from lab.results.schema import axis_columns, samples_frame
from lab.results.summary import summarise
from lab.run.progress import summary_table
from lab.scenario.workloads import WatchParams
from lab.workloads.aggregate import aggregate

MS = 1_000_000  # ns per ms
ONE_WAY_MS = 25.0
RTT_MS = 2 * ONE_WAY_MS
REPAIR_MS = 1.25 * RTT_MS + ONE_WAY_MS  # from the drop until the repair reaches the client
PARAMS = WatchParams(kind="watch", streams=1, interval_ms=100.0, duration_s=2.0)
K = 5  # the event the losses are next to
# Per repetition: when the packet lost is dropped relative to event K's send (ms), None for
# no loss. +0.3: the packet carried event K; −10: a packet just before it that carried no
# stream data (event K, sent 10 ms after the drop, is exposed to it).
LOSSES: tuple[float | None, ...] = (0.3, -10.0, None, None, None)


def _rows(drop_offset_ms: float | None, *, tcp: bool) -> list[dict[str, object]]:
    """The watch rows of one repetition: TCP holds every event sent from before the drop until
    the repair; QUIC only the event whose data was lost."""
    drop = None if drop_offset_ms is None else K * PARAMS.interval_ms + drop_offset_ms
    rows = []
    for k in range(int(PARAMS.duration_s * 1000 // PARAMS.interval_ms)):
        sent = k * PARAMS.interval_ms
        received = sent + ONE_WAY_MS + 0.1 * (k % 3)
        if drop is not None:
            lost_here = k == K and drop_offset_ms is not None and drop_offset_ms > 0
            held = drop - 1.0 <= sent < drop + REPAIR_MS - ONE_WAY_MS
            if lost_here or (tcp and held):
                received = max(received, drop + REPAIR_MS)
        rows.append(
            {"metric": "event_latency_ms", "value": received - sent, "unit": "ms", "stream": 0,
             "seq": k, "sent_ns": round(sent * MS), "received_ns": round(received * MS)}
        )  # fmt: skip
    return rows


def _drops(drop_offset_ms: float | None) -> pd.DataFrame:
    times = [] if drop_offset_ms is None else [K * PARAMS.interval_ms + drop_offset_ms]
    return pd.DataFrame(
        {
            "time_ns": [round(t * MS) for t in times],
            "direction": ["downlink"] * len(times),
            "ip_proto": [17] * len(times),
            "length": [359] * len(times),
            "reason": ["random"] * len(times),
        }
    )


def _samples() -> pd.DataFrame:
    out = []
    for rep, offset in enumerate(LOSSES):
        for proto in ("h2", "h3"):
            key = {"cell": "c000", "repetition": rep, "protocol": proto, "workload": "watch"}
            rows = aggregate(
                "watch",
                PARAMS,
                _rows(offset, tcp=proto == "h2"),
                base_rtt_ms=RTT_MS,
                rate_mbit=None,
                drops=_drops(offset),
            )
            out += [key | r for r in rows]
    return samples_frame(out)


SAMPLES = _samples()


def _per_rep(metric: str, protocol: str) -> list[float]:
    rows = SAMPLES[(SAMPLES["metric"] == metric) & (SAMPLES["protocol"] == protocol)]
    by_rep = rows.set_index("repetition")["value"]
    return [float(by_rep.get(r, float("nan"))) for r in range(len(LOSSES))]


def test_a_loss_that_stalled_no_stream_is_a_real_0_for_h3() -> None:
    """Repetition 1: the lost packet carried no event; event K was exposed and not stalled."""
    assert _per_rep("hol_losses", "h3") == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert _per_rep("hol_spread", "h3")[:2] == [1.0, 0.0]
    assert _per_rep("stalled_fraction", "h3")[1] == 0.0
    assert _per_rep("hol_spread", "h2")[:2] == [1.0, 1.0]  # TCP: the later bytes wait
    assert _per_rep("hol_exposed_mean", "h3")[:2] == [1.0, 1.0]


def test_the_summary_says_over_how_many_repetitions_the_spread_is() -> None:
    s = summarise(SAMPLES).set_index("protocol")
    assert list(s["n_repetitions"]) == [5, 5]
    assert s.loc["h3", "hol_losses"] == 0.0  # median of 1, 1, 0, 0, 0: over all repetitions
    assert s.loc["h3", "hol_spread"] == 0.5  # median of 1 and 0: over the two with a loss
    assert s.loc["h2", "hol_spread"] == 1.0
    assert list(s["hol_spread_reps"]) == [2, 2]
    assert s.loc["h3", "hol_exposed_mean"] == 1.0  # the same two repetitions
    assert "hol_spread_reps" not in axis_columns(s)  # a count, not a matrix axis


def test_no_hol_spread_reps_without_a_drop_log() -> None:
    """netem: no drop log, no hol_losses, so no count of repetitions with a counted loss."""
    rows = SAMPLES[~SAMPLES["metric"].str.startswith(("hol_", "loss_"))]
    s = summarise(rows)
    assert "hol_spread_reps" not in s.columns and "hol_spread" not in s.columns


def test_check_reads_the_same_repetitions_as_the_summary() -> None:
    t = Threshold(name="h3", workload="watch", metric="hol_spread", protocol="h3", max=0.6)
    result = evaluate(SAMPLES, LoadedThreshold(t, "t.yaml", 1))
    assert [(c.value, c.n) for c in result.cells] == [(0.5, 2)]
    assert result.status == "pass"


def test_the_terminal_table_shows_the_repetitions_with_a_loss() -> None:
    console = Console(record=True, width=250, force_terminal=False)
    console.print(summary_table(summarise(SAMPLES)))
    lines = console.export_text().splitlines()
    head = next(ln for ln in lines if "HOL spread (fraction)" in ln)
    assert "reps with a loss (count)" in head
    cells = [c.strip() for c in next(ln for ln in lines if ln.startswith("│ c000")).split("│")]
    # cell, HOL spread h2 h3, losses h2 h3, reps with a loss h2 h3, ...
    assert cells[1:8] == ["c000", "1", "0.5", "0", "0", "2", "2"]
