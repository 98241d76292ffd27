"""Loss-anchored HOL blocking (issue 11): the blast-radius metric on synthetic event and drop
traces with known answers, and, for real (`slow`), isolated losses through the emulator with
both protocols restarted from the same seed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from fixtures.events import agent_event_rows
from labrun import run_scenario_text, skip_without_netns

from lab.results.schema import samples_frame
from lab.scenario.workloads import WatchParams
from lab.workloads import metrics
from lab.workloads.aggregate import aggregate

MS = 1_000_000  # ns per ms
RTT_MS = 50.0
ONE_WAY_MS = 25.0
CARRIER_LAG_MS = 0.3  # from an event's write to its packet's drop at the router


# --- synthetic traces ---------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    """A watch of `streams` streams (phases staggered by interval/N, 25 ms one way), and a list
    of losses, each of the packet carrying one event of `lossy` (None: a packet carrying no
    event) dropped at `drop_ms`. The repair reaches the client 1.25 RTT + one way after it:
    TCP holds every event sent from the lost one until then, QUIC only the lossy stream's."""

    streams: int
    interval_ms: float
    duration_ms: float = 2000.0

    def send_ms(self, stream: int, k: int) -> float:
        return stream * self.interval_ms / self.streams + k * self.interval_ms

    def events(self, losses: list[tuple[float, int | None]], *, tcp: bool) -> pd.DataFrame:
        rows = []
        per_stream = int(self.duration_ms // self.interval_ms)
        for s in range(self.streams):
            for k in range(per_stream):
                sent = self.send_ms(s, k)
                received = sent + ONE_WAY_MS + 0.2 * (k % 3) / 3  # a little noise
                for drop, lossy in losses:
                    repair = drop + 1.25 * RTT_MS + ONE_WAY_MS
                    held = drop - CARRIER_LAG_MS <= sent < repair - ONE_WAY_MS
                    if held and (tcp or s == lossy):
                        received = max(received, repair)
                rows.append((s, k, round(sent * MS), round(received * MS)))
        return pd.DataFrame(rows, columns=["stream", "seq", "sent_ns", "received_ns"])

    def carrier_drop_ms(self, stream: int, k: int) -> float:
        """When the packet of event k of `stream` is dropped."""
        return self.send_ms(stream, k) + CARRIER_LAG_MS


def _drops(times_ms: list[float], **cols: object) -> pd.DataFrame:
    n = len(times_ms)
    base: dict[str, object] = {"direction": "downlink", "ip_proto": 6, "length": 320}
    base.update(cols)
    return pd.DataFrame(
        {
            "time_ns": [round(t * MS) for t in times_ms],
            **{k: [v] * n for k, v in base.items()},
            "reason": ["isolated"] * n,
        }
    )


def _hol(events: pd.DataFrame, drops: pd.DataFrame, **kw: object):
    wm, per_event = metrics.watch_metrics(events, events["stream"].nunique(), RTT_MS)
    return metrics.hol_losses(
        per_event,
        metrics.data_drop_times(drops),
        base_rtt_ms=RTT_MS,
        threshold_ms=wm.threshold_ms,
        **kw,  # type: ignore[arg-type]
    )


def _exposed_expected(trace: Trace) -> int:
    """Streams exposed to a loss of one stream's event: it, and every stream with an event
    sent within ½ RTT (the horizon) after the drop."""
    spacing = trace.interval_ms / trace.streams
    return min(trace.streams, 1 + int((RTT_MS / 2 + CARRIER_LAG_MS) // spacing))


def _known_answers_hold(**kw: object) -> bool:
    """Every exposed stream stalled → 1 (TCP); only the lossy stream → 1 ÷ exposed (QUIC); at
    intervals of 20, 100 and 200 ms alike, for isolated losses of different streams."""
    for interval in (20.0, 100.0, 200.0):
        trace = Trace(streams=16, interval_ms=interval)
        k = int(400 // interval)
        losses = [
            (trace.carrier_drop_ms(s, k + i * int(400 // interval)), s)
            for i, s in enumerate((3, 9, 14))
        ]
        drops = _drops([d for d, _ in losses])
        h2, _ = _hol(trace.events(losses, tcp=True), drops, **kw)
        h3, _ = _hol(trace.events(losses, tcp=False), drops, **kw)
        exposed = _exposed_expected(trace)
        ok = (
            h2.n_losses == h3.n_losses == 3
            and h2.hol_spread == pytest.approx(1.0)
            and h3.hol_spread == pytest.approx(1 / exposed)
            and h3.exposed_mean == exposed
            and h3.stalled_mean == 1.0
        )
        if not ok:
            return False
    return True


def test_blast_radius_known_answers_at_every_interval() -> None:
    assert _known_answers_hold()


@pytest.mark.parametrize(
    "broken",
    [
        {"lead_ms": 0.0},  # the dropped packet's own event (written before the drop) left out
        {"horizon": lambda rtt, threshold: 3 * rtt},  # exposure past the repair
        {"horizon": lambda rtt, threshold: 1.0},  # the window shorter than the stagger
    ],
    ids=["no-lead", "horizon-3-rtt", "horizon-1-ms"],
)
def test_a_broken_window_fails_the_known_answers(
    broken: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known-answer test can fail: with a wrong window definition it does."""
    kw = dict(broken)
    horizon = kw.pop("horizon", None)
    if horizon is not None:
        monkeypatch.setattr(metrics, "loss_horizon_ms", horizon)
    assert not _known_answers_hold(**kw)


def test_the_old_spread_moves_with_the_interval_the_new_does_not() -> None:
    old, new = {}, {}
    for interval in (20.0, 200.0):
        trace = Trace(streams=16, interval_ms=interval)
        losses = [(trace.carrier_drop_ms(5, int(400 // interval)), 5)]
        events = trace.events(losses, tcp=True)
        hl, _ = _hol(events, _drops([losses[0][0]]))
        _, per_event = metrics.watch_metrics(events, 16, RTT_MS)
        old[interval], new[interval] = metrics.overlap_spread(per_event, 16), hl.hol_spread
    assert new == {20.0: 1.0, 200.0: 1.0}
    assert old[20.0] > 0.9 and old[200.0] < 0.3  # one TCP loss: "every stream" only at 20 ms


def test_overlapping_recoveries_are_set_apart() -> None:
    trace = Trace(streams=8, interval_ms=20.0)
    first = trace.carrier_drop_ms(2, 20)  # ~400 ms; its repair lands ~87 ms later
    second = trace.carrier_drop_ms(6, 22)  # 40 ms later: inside the first one's recovery
    alone = trace.carrier_drop_ms(4, 60)  # ~1200 ms: on its own
    losses = [(first, 2), (second, 6), (alone, 4)]
    for tcp in (True, False):
        hl, table = _hol(trace.events(losses, tcp=tcp), _drops([first, second, alone]))
        assert table["status"].tolist() == ["overlapping", "overlapping", "counted"]
        assert (hl.n_losses, hl.n_overlapping, hl.n_unexposed) == (1, 2, 0)
        assert hl.hol_spread == pytest.approx(1.0 if tcp else 1 / 8)
        assert table["end_ns"].iloc[0] >= second * MS  # the second starts inside the first


def test_overlap_only_when_recovery_windows_meet() -> None:
    trace = Trace(streams=4, interval_ms=20.0)
    a = trace.carrier_drop_ms(1, 20)
    b = a + 1.25 * RTT_MS + ONE_WAY_MS + 10  # after the first repair reached the client
    hl, table = _hol(trace.events([(a, 1), (b, 3)], tcp=True), _drops([a, b]))
    assert table["status"].tolist() == ["counted", "counted"]
    assert hl.n_losses == 2


def test_a_loss_with_no_exposed_stream_is_counted_apart() -> None:
    trace = Trace(streams=1, interval_ms=200.0)
    quiet = trace.send_ms(0, 3) + 100.0  # halfway between two events: nothing in its window
    lossy = trace.carrier_drop_ms(0, 6)
    hl, table = _hol(trace.events([(lossy, 0)], tcp=True), _drops([quiet, lossy]))
    assert table["status"].tolist() == ["unexposed", "counted"]
    assert table["exposed"].tolist() == [0, 1]
    assert np.isnan(table["blast_radius"].iloc[0])
    assert (hl.n_losses, hl.n_unexposed) == (1, 1)
    assert hl.hol_spread == 1.0


def test_ack_sized_uplink_and_foreign_drops_are_ignored() -> None:
    trace = Trace(streams=4, interval_ms=20.0)
    t = trace.carrier_drop_ms(1, 20)
    events = trace.events([(t, 1)], tcp=True)
    ignored = pd.concat(
        [
            _drops([t], length=metrics.PURE_ACK_MAX_BYTES),  # a pure ACK: ≤ 100 bytes
            _drops([t], direction="uplink"),  # client → server data
            _drops([t], ip_proto=1),  # ICMP
        ]
    )
    assert len(metrics.data_drop_times(ignored)) == 0
    hl, table = _hol(events, ignored)
    assert hl.n_losses == 0 and table.empty and np.isnan(hl.hol_spread)
    names = [n for n, _, _ in hl.aggregate_rows()]
    assert names == ["hol_losses", "hol_losses_unexposed", "hol_losses_overlapping"]
    counted, _ = _hol(events, pd.concat([ignored, _drops([t], length=101)]))
    assert counted.n_losses == 1  # one byte more is data


def test_drops_outside_the_watch_are_not_its_losses() -> None:
    trace = Trace(streams=4, interval_ms=20.0, duration_ms=400.0)
    events = trace.events([], tcp=True)
    before = events["sent_ns"].min() / MS - 10  # during the connection's set-up
    after = events["received_ns"].max() / MS + 10  # after the last event arrived
    hl, table = _hol(events, _drops([before, after]))
    assert table.empty and hl.n_losses == hl.n_unexposed == 0


def test_collateral_delay_counts_the_other_streams_only() -> None:
    trace = Trace(streams=4, interval_ms=20.0)
    t = trace.carrier_drop_ms(2, 20)
    h2, tab2 = _hol(trace.events([(t, 2)], tcp=True), _drops([t]))
    h3, tab3 = _hol(trace.events([(t, 2)], tcp=False), _drops([t]))
    assert tab2["lossy_stream"].tolist() == tab3["lossy_stream"].tolist() == [2]
    assert h3.collateral_ms == 0.0
    # TCP: the other three streams each have an event within the horizon, held ≥ ½ RTT more
    assert h2.collateral_ms > 3 * RTT_MS / 2


def test_interval_is_a_seeded_bootstrap_of_the_mean() -> None:
    x = np.r_[np.ones(10), np.full(10, 0.25)]
    low, high = metrics.mean_interval(x, seed=1)
    assert low < x.mean() < high
    assert (low, high) == metrics.mean_interval(x, seed=1)  # same seed, same interval
    assert low > 0.45 and high < 0.8
    assert metrics.mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(np.isnan(metrics.mean_interval([])))


def test_threshold_must_be_below_the_base_rtt() -> None:
    assert metrics.loss_horizon_ms(50.0, 25.0) == 25.0
    with pytest.raises(ValueError, match="below the base RTT"):
        metrics.loss_horizon_ms(50.0, 50.0)


def test_aggregate_rows_with_and_without_a_drop_log() -> None:
    trace = Trace(streams=4, interval_ms=20.0)
    t = trace.carrier_drop_ms(1, 20)
    events = trace.events([(t, 1)], tcp=False)
    rows = agent_event_rows(events)
    params = WatchParams(kind="watch", streams=4, interval_ms=20)
    netem = aggregate("watch", params, rows, base_rtt_ms=RTT_MS, rate_mbit=None)
    assert not {"hol_spread", "hol_losses"} & {r["metric"] for r in netem}
    emu = aggregate("watch", params, rows, base_rtt_ms=RTT_MS, rate_mbit=None, drops=_drops([t]))
    agg = {
        r["metric"]: r["value"]
        for r in emu
        if r["stream"] is None and r["metric"] != "loss_blast_radius"
    }
    assert agg["hol_losses"] == 1 and agg["hol_spread"] == pytest.approx(0.25)
    assert agg["hol_spread_low"] == agg["hol_spread_high"] == pytest.approx(0.25)
    assert agg["hol_exposed_mean"] == 4 and agg["hol_stalled_mean"] == 1
    assert [r["value"] for r in emu if r["metric"] == "loss_blast_radius"] == [0.25]
    frame = samples_frame(
        [r | {"cell": "c000", "repetition": 0, "protocol": "h3", "workload": "watch"} for r in emu]
    )  # the results contract takes the new rows and units
    assert set(frame.loc[frame["metric"] == "hol_losses", "unit"]) == {"count"}


# --- real runs: isolated losses, both protocols from the same seed --------------------------
REAL = """
name: holcheck
seed: 3
repeat: 2
uplink: {delay_ms: 25, rate_mbit: 100, loss: {model: drop_list, packets: [0]}}
downlink: {delay_ms: 25, rate_mbit: 100, loss: {model: isolated, every_ms: 400}}
protocols: [h2, h3]
workloads:
  - {kind: handshake, modes: [cold], connections: 1, response_bytes: 100}
  - {kind: watch, streams: 8, interval_ms: 20, duration_s: 2.5}
matrix:
  watch.interval_ms: [20, 200]
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory):
    skip_without_netns()
    d = tmp_path_factory.mktemp("hol")
    return run_scenario_text(d, "holcheck", REAL).results


def _per_cell(samples: pd.DataFrame, metric: str) -> pd.Series:
    rows = samples[(samples["metric"] == metric) & (samples["workload"] == "watch")]
    return rows.groupby(["watch.interval_ms", "protocol"])["value"].median()


@pytest.mark.slow
@pytest.mark.netns
def test_real_h2_spread_is_one_and_h3_one_over_exposed(real_run) -> None:
    """h2: hol_spread (median over repetitions) ≥ 0.8. h3: the blast radius of the losses of
    both repetitions, pooled, has its median ≤ 1.5 ÷ exposed — a median, because on this shared
    2-core box a scheduling stall of the Python server or client now and then coincides with a
    loss and holds every stream (measured: 1 loss in ~13), which a mean of 6 losses would pass
    on to the cell; that is the host, not the transport (docs/metrics.md)."""
    s = real_run.samples
    spread = _per_cell(s, "hol_spread")
    exposed = _per_cell(s, "hol_exposed_mean")
    per_loss = _per_cell(s, "loss_blast_radius")  # median over the pooled losses
    assert set(spread.index) == {(i, p) for i in (20.0, 200.0) for p in ("h2", "h3")}
    assert (_per_cell(s, "hol_losses") >= 3).all()  # ~1 loss per 400 ms of watch
    for interval in (20.0, 200.0):
        assert spread[interval, "h2"] >= 0.8, spread
        assert per_loss[interval, "h3"] <= 1.5 / exposed[interval, "h3"], (per_loss, exposed)
    assert spread[20.0, "h3"] < 0.5 * spread[20.0, "h2"]  # the mean, too, is far from h2's
    assert exposed[20.0, "h3"] >= 6  # 8 streams within ½ RTT of each loss at 20 ms


@pytest.mark.slow
@pytest.mark.netns
def test_real_drop_list_hits_h2_and_h3_alike_whatever_the_order(real_run) -> None:
    assert real_run.meta["link_model_reseeded_per_protocol"] is True
    orders = set()
    for key in real_run.meta["cell_runs"]:
        stats = json.loads((real_run.path / "emulator" / key / "emulator.json").read_text())
        phases = stats["phases"]
        assert len(phases) == 3  # the start, then one reseed per protocol
        for phase in phases[1:]:  # each protocol's first uplink packet (SYN / Initial) dropped
            assert phase["directions"]["uplink"]["dropped_by_reason"] == {"drop_list": 1}
        orders.add(int(key.rsplit("-", 1)[1]) % 2)
    assert orders == {0, 1}  # h2 first and h3 first
    hs = real_run.samples
    ttfb = hs[(hs["metric"] == "ttfb_ms") & (hs["workload"] == "handshake")]
    # the lost SYN (Linux: 1 s) / Initial (aioquic's PTO) shows in both protocols' first TTFB
    for (cell, rep, protocol), v in ttfb.groupby(["cell", "repetition", "protocol"])["value"]:
        assert v.min() >= RTT_MS + 200, (cell, rep, protocol, v.min())
