"""The tc netem argv generated from a LinkSpec, checked against netem's documented semantics."""

from __future__ import annotations

import os
import subprocess

import pytest

from lab.link.netem import (
    UnsupportedByNetem,
    _pct,
    direction_qdiscs,
    netem_commands,
    netem_probe,
    netem_teardown_commands,
)
from lab.link.spec import (
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    LinkSpec,
    QueueSpec,
    ReorderSpec,
)


def netem_opts(spec: DirectionSpec, qp: int | None = 1000, qb: int | None = None) -> list[str]:
    netem, tbf = direction_qdiscs(spec, queue_packets=qp, queue_bytes=qb)
    assert tbf is None
    return netem


def after(opts: list[str], word: str, n: int = 1) -> list[str]:
    i = opts.index(word)
    return opts[i + 1 : i + 1 + n]


def test_percent_formatting() -> None:
    assert _pct(0.01) == "1%"
    assert _pct(0.015) == "1.5%"
    assert _pct(0.0001) == "0.01%"
    assert _pct(1e-9) == "0.0000001%"
    assert _pct(1.0) == "100%"
    assert _pct(0.0) == "0%"
    assert "e" not in _pct(3e-7)


def test_both_directions_on_their_devices_in_the_namespace() -> None:
    up = DirectionSpec(delay_ms=5)
    down = DirectionSpec(delay_ms=30)
    cmds = netem_commands(
        LinkSpec(uplink=up, downlink=down), uplink_dev="rs0", downlink_dev="rc0", netns="labab12"
    )
    assert len(cmds) == 2
    head = ["tc", "-netns", "labab12", "qdisc", "replace", "dev"]
    assert cmds[0][:7] == [*head, "rs0"] and cmds[1][:7] == [*head, "rc0"]
    assert cmds[0][7:11] == ["root", "handle", "1:", "netem"]
    assert after(cmds[0], "delay") == ["5000us"]
    assert after(cmds[1], "delay") == ["30000us"]
    assert netem_commands(LinkSpec(), uplink_dev="a", downlink_dev="b")[0][0:2] == ["tc", "qdisc"]
    assert netem_teardown_commands(uplink_dev="a", downlink_dev="b", netns="n") == [
        ["tc", "-netns", "n", "qdisc", "del", "dev", "a", "root"],
        ["tc", "-netns", "n", "qdisc", "del", "dev", "b", "root"],
    ]


def test_delay_jitter_and_distribution() -> None:
    assert after(netem_opts(DirectionSpec(delay_ms=25.5)), "delay", 2) == ["25500us", "limit"][:1]
    o = netem_opts(DirectionSpec(delay_ms=25, jitter_ms=2, reorder="allow"))
    assert after(o, "delay", 2) == ["25000us", "2000us"]
    assert "distribution" not in o  # uniform = netem's table-less default
    o = netem_opts(DirectionSpec(delay_ms=25, jitter_ms=2, jitter_distribution="normal"))
    assert after(o, "distribution") == ["normal"]
    o = netem_opts(DirectionSpec(delay_ms=25, jitter_ms=2, jitter_distribution="pareto"))
    assert after(o, "distribution") == ["pareto"]
    assert "delay" not in netem_opts(DirectionSpec())


def test_preserve_with_jitter_uses_netem_rate_to_keep_order() -> None:
    # netem reorders jittered packets unless `rate` is set (then each send time builds on the last).
    o = netem_opts(DirectionSpec(delay_ms=10, jitter_ms=3))
    assert after(o, "rate") == ["10000000000bit"]
    o = netem_opts(DirectionSpec(delay_ms=10, jitter_ms=3, rate_mbit=20))
    assert after(o, "rate") == ["20000000bit"]
    # allow: no rate in netem (jitter reorders, as in the model)
    assert "rate" not in netem_opts(DirectionSpec(delay_ms=10, jitter_ms=3, reorder="allow"))
    # no jitter: nothing to keep in order, no artificial rate
    assert "rate" not in netem_opts(DirectionSpec(delay_ms=10))


def test_allow_with_jitter_and_rate_uses_a_tbf_child() -> None:
    spec = DirectionSpec(
        delay_ms=10, jitter_ms=3, reorder="allow", rate_mbit=20, queue=QueueSpec(bytes=30_000)
    )
    netem, tbf = direction_qdiscs(spec, queue_packets=None, queue_bytes=30_000)
    assert "rate" not in netem
    assert tbf == ["tbf", "rate", "20000000bit", "burst", "3000", "limit", "30000"]
    cmds = netem_commands(LinkSpec(uplink=spec, downlink=spec), uplink_dev="u", downlink_dev="d")
    assert len(cmds) == 4
    assert cmds[1][:9] == ["tc", "qdisc", "replace", "dev", "u", "parent", "1:1", "handle", "10:"]


def test_loss_models() -> None:
    o = netem_opts(DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.01)))
    assert after(o, "loss", 2) == ["random", "1%"]
    assert "loss" not in netem_opts(DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0)))
    ge = GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.3, h=0.2, k=0.999)
    # netem: `loss gemodel p r 1-h 1-k`, 1-h = loss in the bad state, 1-k = loss in the good one
    assert after(netem_opts(DirectionSpec(loss=ge)), "loss", 5) == [
        "gemodel", "1%", "30%", "80%", "0.1%"
    ]  # fmt: skip
    with pytest.raises(UnsupportedByNetem, match="drop_list"):
        netem_opts(DirectionSpec(loss=DropListLoss(model="drop_list", packets=[3])))
    assert "loss" not in netem_opts(DirectionSpec(loss=DropListLoss(model="drop_list", packets=[])))


def test_queue_limit_in_packets() -> None:
    # no rate: the model never queue-drops, so netem must not either
    assert after(netem_opts(DirectionSpec(delay_ms=10)), "limit") == ["100000"]
    # rate: queue packets + what is in flight on the delay line (20 Mbit/s × 10 ms = 17 packets)
    spec = DirectionSpec(delay_ms=10, rate_mbit=20, queue=QueueSpec(packets=50))
    assert after(netem_opts(spec, qp=50), "limit") == [str(50 + 17 + 1)]
    # bytes → packets at 1500 B
    spec = DirectionSpec(rate_mbit=20, queue=QueueSpec(bytes=30_001))
    assert after(netem_opts(spec, qp=None, qb=30_001), "limit") == [str(21 + 1)]
    # bdp comes through LinkSpec.queue_limit: 20 Mbit/s × 20 ms × 1.5 = 75,000 B = 50 packets
    spec = DirectionSpec(delay_ms=10, rate_mbit=20, queue=QueueSpec(bdp=1.5))
    cmds = netem_commands(LinkSpec(uplink=spec, downlink=spec), uplink_dev="u", downlink_dev="d")
    assert after(cmds[0], "limit") == [str(50 + 17 + 1)]


def test_duplicate_reorder_and_seed() -> None:
    o = netem_opts(DirectionSpec(delay_ms=10, duplicate=0.02))
    assert after(o, "duplicate") == ["2%"]
    ro = ReorderSpec(probability=0.25, correlation=0.5, gap=5)
    o = netem_opts(DirectionSpec(delay_ms=10, reorder=ro))
    assert after(o, "reorder", 4) == ["25%", "50%", "gap", "5"]
    o = netem_opts(DirectionSpec(delay_ms=10, reorder=ReorderSpec(probability=0.1)))
    assert after(o, "reorder", 3) == ["10%", "gap", "1"]
    with pytest.raises(UnsupportedByNetem, match="delay"):
        netem_opts(DirectionSpec(reorder=ReorderSpec(probability=0.1)))
    assert "seed" not in netem_opts(DirectionSpec(delay_ms=1))
    cmds = netem_commands(
        LinkSpec(), uplink_dev="u", downlink_dev="d", seeds={"uplink": 7, "downlink": 8}
    )
    assert after(cmds[0], "seed") == ["7"] and after(cmds[1], "seed") == ["8"]


def tc_accepts(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `cmd` against a device that does not exist: tc parses every option (and loads the
    distribution table) before it looks the device up, so nothing on the host changes."""
    argv = [("labnodev0" if a in ("u", "d") else a) for a in cmd]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)


@pytest.mark.parametrize(
    "spec",
    [
        DirectionSpec(
            delay_ms=25,
            jitter_ms=2,
            jitter_distribution="normal",
            loss=GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.3, h=0.2, k=0.999),
            rate_mbit=20,
            duplicate=0.001,
            queue=QueueSpec(bdp=1.5),
        ),
        DirectionSpec(
            delay_ms=10,
            jitter_ms=1,
            jitter_distribution="pareto",
            reorder=ReorderSpec(probability=0.05, correlation=0.25, gap=3),
            loss=BernoulliLoss(model="bernoulli", rate=0.000001),
            rate_mbit=7.5,
        ),
        DirectionSpec(delay_ms=3, jitter_ms=1, reorder="allow", rate_mbit=50),
        DirectionSpec(delay_ms=3, jitter_ms=1),
    ],
)
def test_tc_parses_the_generated_argv(spec: DirectionSpec) -> None:
    for cmd in netem_commands(
        LinkSpec(uplink=spec, downlink=spec), uplink_dev="u", downlink_dev="d"
    ):
        r = tc_accepts(cmd)
        assert r.returncode != 0
        assert r.stderr.strip() == 'Cannot find device "labnodev0"', r.stderr


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_probe_answers_and_leaves_no_namespace() -> None:
    def probe_namespaces() -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [ln.split()[0] for ln in out.splitlines() if ln.split()[0].endswith("netem")]

    ok, reason = netem_probe()
    assert probe_namespaces() == []  # other runs' namespaces may come and go; ours is gone
    assert reason
    if os.path.exists("/sys/module/sch_netem"):
        assert ok
    if not ok:
        assert "sch_netem" in reason or "namespace" in reason
