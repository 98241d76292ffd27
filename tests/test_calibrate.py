"""`lab calibrate`: the pure tolerance logic with hand-built numbers, and real calibrations of a
small link through the emulator (one that must pass, and the same measurement judged against a
tampered specification, which must fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lab.calibrate.evaluate import Check, evaluate, passed
from lab.calibrate.flows import run_sender_receiver
from lab.calibrate.measure import measure
from lab.calibrate.measurement import FlowSummary, Measurement, analyse_probes
from lab.calibrate.simulate import loss_interval, monte_carlo
from lab.calibrate.stats import (
    binomial_interval,
    clopper_pearson,
    count_reordered,
    counter_rate_mbit,
    receiver_rate_mbit,
)
from lab.link.mathis import mathis_mbit
from lab.link.spec import (
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    LinkSpec,
    ReorderSpec,
)
from lab.scenario.load import load_scenario
from lab.scenario.matrix import expand_cells

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000


def _link(**kw: object) -> LinkSpec:
    spec = DirectionSpec(**kw)  # type: ignore[arg-type]
    return LinkSpec(uplink=spec, downlink=spec)


# --- statistics -----------------------------------------------------------------------------
def test_binomial_interval_is_the_central_99_percent_region() -> None:
    lo, hi = binomial_interval(2000, 0.01)
    assert lo < 20 < hi
    inside = stats.binom.cdf(hi, 2000, 0.01) - stats.binom.cdf(lo - 1, 2000, 0.01)
    assert inside >= 0.99
    # one step narrower on either side falls below 99 % coverage
    narrower = stats.binom.cdf(hi - 1, 2000, 0.01) - stats.binom.cdf(lo, 2000, 0.01)
    assert narrower < 0.99
    assert binomial_interval(2000, 0.0) == (0, 0)
    assert binomial_interval(0, 0.5) == (0, 0)


def test_clopper_pearson_brackets_the_proportion() -> None:
    lo, hi = clopper_pearson(20, 2000)
    assert lo < 0.01 < hi
    assert clopper_pearson(0, 100)[0] == 0.0
    assert clopper_pearson(100, 100)[1] == 1.0
    # exact: P(X ≥ 20 | p = lo) = 0.005
    assert stats.binom.sf(19, 2000, lo) == pytest.approx(0.005, rel=1e-6)


def test_count_reordered_counts_overtakers_once() -> None:
    assert count_reordered([0, 1, 2, 3]) == 0
    assert count_reordered([0, 2, 1, 3]) == 1
    assert count_reordered([5, 0, 1, 2, 3, 4]) == 1  # one packet held back behind five
    assert count_reordered([0, 5, 1, 2, 3, 4]) == 1  # … or one sent early past four
    assert count_reordered([3, 2, 1, 0]) == 3
    assert count_reordered([0, 2, 4]) == 0  # gaps from loss are not reordering
    assert count_reordered([0, 1, 1, 2]) == 0  # a duplicate is not reordering


def test_receiver_rate_skips_warmup_and_uses_ip_bytes() -> None:
    # 1500-byte packets every 1.2 ms = 10 Mbit/s, after 0.5 s at twice the spacing
    slow = [int(i * 2.4 * MS) for i in range(200)]
    fast = [slow[-1] + int((i + 1) * 1.2 * MS) for i in range(1000)]
    times = slow + fast
    rate = receiver_rate_mbit(times, [1500] * len(times), warmup_s=0.5)
    assert rate == pytest.approx(10.0, rel=1e-3)
    assert receiver_rate_mbit(times[:5], [1500] * 5, 0.0) is None


def test_counter_rate_ignores_when_the_application_read() -> None:
    # kernel counter of 1500-byte segments at 20 Mbit/s (one per 0.6 ms), sampled irregularly
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 3e9, 400)).astype(np.int64)
    counts = (times // 600_000).tolist()
    counts[-20:] = [counts[-20]] * 20  # the transfer ended: the count stops growing
    rate = counter_rate_mbit(times.tolist(), counts, 1500, warmup_s=1.0)
    assert rate == pytest.approx(20.0, rel=0.01)
    assert counter_rate_mbit([1, 2], [-1, -1], 1500, 0.0) is None


def test_loss_interval_per_model() -> None:
    assert loss_interval(DirectionSpec(), 2000) == (0, 0, "none")
    bern = DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.02))
    assert loss_interval(bern, 2000)[:2] == binomial_interval(2000, 0.02)
    drop = DirectionSpec(loss=DropListLoss(model="drop_list", packets=[0, 5, 5000]))
    assert loss_interval(drop, 2000) == (2, 2, "drop list")
    ge_spec = DirectionSpec(loss=GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.2))
    link = LinkSpec(uplink=ge_spec)
    with pytest.raises(ValueError):
        loss_interval(ge_spec, 2000)
    sims = monte_carlo(link, "uplink", [i * 2 * MS for i in range(2000)], 92, seed=3, runs=100)
    lo, hi, method = loss_interval(ge_spec, 2000, sims)
    mean = 2000 * ge_spec.loss.mean_loss  # type: ignore[union-attr]
    assert method == "model Monte Carlo"
    assert lo < mean < hi
    # bursts make the interval wider than a binomial one with the same mean
    blo, bhi = binomial_interval(2000, ge_spec.loss.mean_loss)  # type: ignore[union-attr]
    assert hi - lo > bhi - blo


def test_mean_loss_per_loss_model() -> None:
    assert DirectionSpec().mean_loss == 0.0
    assert DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.02)).mean_loss == 0.02
    assert DirectionSpec(loss=DropListLoss(model="drop_list", packets=[1, 2])).mean_loss == 0.0
    ge = GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.2, h=0.1, k=0.99)
    bad = 0.01 / 0.21  # stationary share of the bad state
    expected = 0.01 * (1 - bad) + 0.9 * bad
    assert DirectionSpec(loss=ge).mean_loss == pytest.approx(expected, rel=1e-12)


def test_mathis_bound() -> None:
    # √1.5 · 1448 B / (20 ms · √0.01) = 7.094 Mbit/s
    assert mathis_mbit(1448, 20.0, 0.01) == pytest.approx(7.0937, rel=1e-4)
    assert mathis_mbit(1448, 20.0, 0.04) == pytest.approx(7.0937 / 2, rel=1e-4)  # ∝ 1/√p
    assert mathis_mbit(1448, 20.0, 0.01, c=1.83) == pytest.approx(10.599, rel=1e-4)
    assert mathis_mbit(1448, 20.0, 0.0) is None
    assert mathis_mbit(1448, 0.0, 0.01) is None


# --- probe analysis ------------------------------------------------------------------------
def test_analyse_probes_splits_loss_by_direction() -> None:
    send = [0, 2 * MS, 4 * MS, 6 * MS, 8 * MS]  # probes 0..4
    # the echo saw 0, 2, 1, 4 (3 lost uplink; 1 and 2 swapped) and 4 twice (a duplicate)
    echo_seqs = [0, 2, 1, 4, 4]
    echo_rx = [10 * MS, 14 * MS, 14 * MS + 100, 18 * MS, 18 * MS + 50]
    echo_tx = [t + 20_000 for t in echo_rx]
    # replies by echo index: 0, 1, 3, 4 arrive (index 2 lost downlink), 3 arrives twice
    replies = [
        (0, 0, echo_tx[0] + 10 * MS),
        (2, 1, echo_tx[1] + 10 * MS),
        (4, 3, echo_tx[3] + 10 * MS),
        (4, 3, echo_tx[3] + 10 * MS + 5),
        (4, 4, echo_tx[4] + 10 * MS),
    ]
    p = analyse_probes(send, echo_seqs, echo_rx, echo_tx, replies, ip_bytes=92)
    up, down = p.uplink, p.downlink
    assert (up.offered, up.received, up.lost, up.duplicates, up.reordered) == (5, 4, 1, 1, 1)
    assert up.owd_ns == [10 * MS, 10 * MS, 12 * MS + 100, 10 * MS]
    assert (down.offered, down.received, down.lost, down.duplicates) == (5, 4, 1, 1)
    assert down.reordered == 0
    assert down.owd_ns == [10 * MS] * 4
    assert down.schedule_ns == echo_tx
    # RTT per answered probe (first reply): 0, 2, 4
    assert p.rtt_ns == [20 * MS + 20_000] * 3


# --- the flows' two-thread harness and the probes' start-up ---------------------------------
def test_harness_waits_for_the_sender_then_the_receiver_and_hands_back_errors() -> None:
    events: list[str] = []

    def send(stop: threading.Event) -> None:
        time.sleep(0.05)
        events.append("sent")
        raise ConnectionResetError("peer went away")

    def receive(stop: threading.Event) -> None:
        stop.wait(5.0)  # runs until the harness stops it
        events.append("receiver stopped")
        raise OSError("closed")

    started = time.monotonic()
    errors = run_sender_receiver(
        "t",
        send,
        receive,
        send_timeout_s=5.0,
        receive_timeout_s=0.1,
        after_send=lambda: events.append("after send"),
    )
    assert time.monotonic() - started < 2.0  # the receiver was stopped, not waited for 5 s
    assert events == ["sent", "after send", "receiver stopped"]
    assert [type(e) for e in errors] == [ConnectionResetError, OSError]
    assert not [t for t in threading.enumerate() if t.name in ("t-rx", "t-tx")]


def test_probe_modules_import_no_third_party_package() -> None:
    """The echo subprocess starts fast: probes, flows and what they import are stdlib only."""
    code = (
        "import json, sys; before = set(sys.modules); "
        "import lab.calibrate.probes, lab.calibrate.flows; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(out.stdout))
    assert "lab" in loaded
    third_party = loaded - set(sys.stdlib_module_names) - {"lab"}
    assert not third_party, third_party


# --- evaluation with hand-built measurements -------------------------------------------------
def _measurement(
    n: int,
    owd_ms: float,
    lost_up: int = 0,
    flows: list[FlowSummary] | None = None,
    swap_every: int = 0,
) -> Measurement:
    """n probes every 2 ms, `owd_ms` each way (+ a little noise), the first `lost_up` lost."""
    rng = np.random.default_rng(0)
    send = [i * 2 * MS for i in range(n)]
    seqs = list(range(lost_up, n))
    if swap_every:
        for i in range(0, len(seqs) - 1, swap_every):
            seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
    noise = rng.integers(0, 50_000, size=n)
    rx = [send[s] + int(owd_ms * MS) + int(noise[s]) for s in seqs]
    tx = [t + 10_000 for t in rx]
    replies = [(s, i, tx[i] + int(owd_ms * MS)) for i, s in enumerate(seqs)]
    probes = analyse_probes(send, seqs, rx, tx, replies, ip_bytes=92)
    return Measurement(probes=probes, flows=flows or [], seed=1)


def _by(checks: list[Check], name: str, direction: str) -> Check:
    (c,) = [c for c in checks if c.name == name and c.direction == direction]
    return c


def test_matching_measurement_passes_and_wrong_delay_fails() -> None:
    m = _measurement(2000, owd_ms=10.1)
    good = evaluate(_link(delay_ms=10), m, seed=1)
    assert passed(good)
    assert _by(good, "one-way delay p50", "uplink").ok is True
    bad = evaluate(_link(delay_ms=10.7), m, seed=1)
    assert not passed(bad)
    assert _by(bad, "one-way delay p50", "uplink").ok is False
    assert _by(bad, "one-way delay p50", "downlink").ok is False
    assert _by(bad, "loss", "uplink").ok is True  # only what is wrong fails


def test_loss_outside_the_interval_fails_both_ways() -> None:
    link = _link(delay_ms=10, loss=BernoulliLoss(model="bernoulli", rate=0.02))
    assert _by(evaluate(link, _measurement(2000, 10, lost_up=40), 1), "loss", "uplink").ok
    assert not _by(evaluate(link, _measurement(2000, 10, lost_up=5), 1), "loss", "uplink").ok
    assert not _by(evaluate(link, _measurement(2000, 10, lost_up=90), 1), "loss", "uplink").ok
    # configured none: any loss fails
    assert not _by(evaluate(_link(delay_ms=10), _measurement(2000, 10, 1), 1), "loss", "uplink").ok


def test_reordering_when_none_is_configured_fails() -> None:
    m = _measurement(500, owd_ms=5, swap_every=50)
    checks = evaluate(_link(delay_ms=5), m, seed=1)
    c = _by(checks, "reordered", "uplink")
    assert c.ok is False and c.measured.startswith("10/")
    # explicit netem-style reordering: the model's interval, and zero events is too few
    ro = _link(delay_ms=5, reorder=ReorderSpec(probability=0.2, gap=1))
    assert _by(evaluate(ro, _measurement(500, 5), 1, runs=50), "reordered", "uplink").ok is False


def test_jitter_spread_is_compared_with_the_model() -> None:
    link = _link(delay_ms=10, jitter_ms=2)  # uniform ±2 ms: p95−p5 ≈ 3.6 ms
    checks = evaluate(link, _measurement(1000, owd_ms=10), seed=1, runs=20)
    spread = _by(checks, "delay spread p95−p5", "uplink")
    assert spread.ok is False  # the measurement has no jitter at all
    assert float(spread.configured.split()[0]) == pytest.approx(3.6, abs=0.3)


def test_rate_checks() -> None:
    link = _link(delay_ms=10, rate_mbit=10)
    flows = [
        FlowSummary("udp", "uplink", 9.8, offered_mbit=12.0),
        FlowSummary("udp", "downlink", 9.0, offered_mbit=12.0),
        FlowSummary("tcp", "uplink", 9.6, mss=1448, congestion_control="cubic"),
        FlowSummary("tcp", "downlink", None, mss=1448, congestion_control="cubic"),
    ]
    checks = evaluate(link, _measurement(200, 10.1, flows=flows), seed=1)
    assert _by(checks, "rate (UDP)", "uplink").ok is True
    assert _by(checks, "rate (UDP)", "downlink").ok is False  # 10 % short
    assert _by(checks, "rate (TCP)", "uplink").ok is True
    assert _by(checks, "rate (TCP)", "downlink").ok is False  # nothing measured
    # a sender that could not offer more than the rate makes the UDP row inconclusive
    slow = [FlowSummary("udp", "uplink", 9.0, offered_mbit=10.0)]
    c = _by(evaluate(link, _measurement(200, 10.1, flows=slow), 1), "rate (UDP)", "uplink")
    assert c.ok is None and "inconclusive" in c.note
    # under loss TCP is only bounded from above
    lossy = _link(delay_ms=10, rate_mbit=10, loss=BernoulliLoss(model="bernoulli", rate=0.01))
    tcp = [
        FlowSummary("tcp", "uplink", 6.0, mss=1448, congestion_control="cubic"),
        FlowSummary("tcp", "downlink", 11.0, mss=1448, congestion_control="cubic"),
    ]
    checks = evaluate(lossy, _measurement(2000, 10.1, lost_up=20, flows=tcp), seed=1)
    assert _by(checks, "rate (TCP)", "uplink").ok is True
    assert _by(checks, "rate (TCP)", "downlink").ok is False


def test_emulator_problems_fail_the_calibration() -> None:
    m = _measurement(200, 10.1)
    m.emulator_problems = ["uplink: TUN dropped 3 packets (emulator overloaded)"]
    checks = evaluate(_link(delay_ms=10), m, seed=1)
    assert not passed(checks)


# --- real calibrations through the emulator --------------------------------------------------
def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    return None


def _host_lateness(check: Check) -> bool:
    """The emulator's release-lateness row: it measures how busy the host was, not the link
    model, so these tests leave it to `lab calibrate` and benchmarks/bench_emulator.py. TUN drops
    and write errors still fail them."""
    return check.name == "emulator" and "release lateness" in check.measured


@pytest.fixture(scope="module")
def smoke_calibration() -> tuple[LinkSpec, Measurement, int]:
    """One real calibration of scenarios/calibrate-smoke.yaml (10 ms, 2 % loss, 10 Mbit/s)."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    from lab.net import nsenter

    (cell,) = expand_cells(load_scenario(ROOT / "scenarios" / "calibrate-smoke.yaml"))
    seed = cell.seed(0)
    m = measure(cell.link, seed, backend="emulator", probes=2000)
    assert m.topology_prefix
    left = [ns for ns in nsenter.list_namespaces() if ns.startswith(m.topology_prefix)]
    assert not left, f"calibrate left {left}"
    return cell.link, m, seed


@pytest.mark.netns
def test_real_calibration_passes(smoke_calibration: tuple[LinkSpec, Measurement, int]) -> None:
    link, m, seed = smoke_calibration
    checks = evaluate(link, m, seed)
    failed = [c for c in checks if c.ok is False and not _host_lateness(c)]
    assert not failed, failed
    assert m.probes.uplink.offered == 2000
    assert 0 < m.probes.uplink.lost < 100  # 2 % of 2000, within reason
    assert 0 < m.probes.downlink.lost < 100
    names = {(c.name, c.direction) for c in checks if c.ok is True}
    for d in ("uplink", "downlink"):
        assert {("one-way delay p50", d), ("loss", d), ("reordered", d), ("rate (UDP)", d)} <= names
    assert m.emulator is not None and m.emulator["seed"] == seed


@pytest.mark.netns
def test_real_calibration_against_a_tampered_spec_fails(
    smoke_calibration: tuple[LinkSpec, Measurement, int],
) -> None:
    link, m, seed = smoke_calibration
    up = link.uplink.model_copy(
        update={
            "delay_ms": 11.0,
            "rate_mbit": 9.0,
            "loss": BernoulliLoss(model="bernoulli", rate=0.005),
        }
    )
    tampered = LinkSpec(uplink=up, downlink=link.downlink)
    checks = evaluate(tampered, m, seed)
    assert not passed(checks)
    failed = {c.name for c in checks if c.ok is False and c.direction == "uplink"}
    assert {"one-way delay p50", "loss", "rate (UDP)"} <= failed
    assert all(c.ok is not False for c in checks if c.direction == "downlink")


@pytest.mark.netns
def test_cli_calibrate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lab calibrate --json` on a delay-only link (no throughput phase): exit 0, valid JSON."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    from lab.cli import main

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: cal-cli\nseed: 3\nrepeat: 1\nlink: {delay_ms: 5}\nworkloads: [{kind: bulk}]\n"
    )
    rc = main(["calibrate", str(scenario), "--impair", "emulator", "--probes", "300", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["passed"] else 1), out["checks"]
    failed = [c for c in out["checks"] if c["ok"] is False]
    assert all(c["name"] == "emulator" and "release lateness" in c["measured"] for c in failed)
    assert out["backend"] == "emulator"
    assert out["probes"]["uplink"]["offered"] == 300
    assert out["probes"]["uplink"]["owd_ms"]["p50"] == pytest.approx(5.0, abs=0.5)


def test_cli_calibrate_bad_input_exits_2(tmp_path: Path) -> None:
    from lab.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlink: {delay_ms: -1}\nworkloads: [{kind: bulk}]\n")
    assert main(["calibrate", str(bad)]) == 2
    good = ROOT / "scenarios" / "calibrate-smoke.yaml"
    assert main(["calibrate", str(good), "--cell", "c999"]) == 2
