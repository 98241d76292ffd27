"""The claims' run.json readings on hand-built run.json dicts: which cells lose packets, how a
condition reads, and when the two senders' congestion controllers are a confound."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import pytest

from lab.evidence.claims import (
    CLAIMS,
    condition_text,
    controller_confound,
    exposed_confound,
    lossy_cells,
    stream_counts,
)
from lab.evidence.stats import Interval
from lab.evidence.verdicts import Verdict


def _link(loss: dict[str, Any], rate_mbit: float | None = 20.0) -> dict[str, Any]:
    down = {"delay_ms": 25.0, "loss": loss, **({"rate_mbit": rate_mbit} if rate_mbit else {})}
    return {"uplink": {"delay_ms": 25.0, "loss": {"model": "none"}}, "downlink": down}


def _meta(**cells: dict[str, Any]) -> dict[str, Any]:
    return {
        "cells": [{"cell": cid, "axes": c.pop("axes", {}), **c} for cid, c in cells.items()],
        "scenario": {"workloads": [{"kind": "watch", "streams": 16}]},
    }


def _verdict(cells: tuple[str, ...], workload: str = "watch", **kw: Any) -> Verdict:
    return Verdict(
        workload=workload,
        metric="hol_spread",
        unit="fraction",
        condition=kw.pop("condition", {}),
        mode=None,
        h2_mode=None,
        implementation=kw.pop("implementation", "reference"),
        h2_median=1.0,
        h3_median=0.1,
        ratio=Interval(0.1, 0.05, 0.15),
        n_pairs=3,
        outcome="better",
        cells=cells,
    )


def test_every_claim_has_a_measure_and_a_source() -> None:
    assert [c.label for c in CLAIMS] == ["a", "b", "c", "d"]
    assert [c.source for c in CLAIMS] == ["KEP-3156", "KEP-3156", "lab", "lab"]
    hol, zero_rtt = CLAIMS[0], CLAIMS[1]
    assert {m.metric for m in hol.measures} == {"hol_spread", "excess_p99_ms"}
    assert all(m.lossy_only for m in hol.measures)
    assert [(m.h3_mode, m.h2_mode) for m in zero_rtt.measures] == [
        ("zero_rtt", "cold"),
        ("zero_rtt", "resumed"),
    ]


def test_lossy_cells_count_random_and_deterministic_losses() -> None:
    meta = _meta(
        c0={"link": _link({"model": "none"})},
        c1={"link": _link({"model": "bernoulli", "rate": 0.0})},
        c2={"link": _link({"model": "bernoulli", "rate": 0.01})},
        c3={"link": _link({"model": "drop_list", "packets": [3]})},
        c4={"link": _link({"model": "gilbert_elliott", "p": 0.01, "r": 0.5})},
    )
    assert lossy_cells(meta) == {"c2", "c3", "c4"}


def test_condition_reads_link_and_streams_and_joins_pooled_values() -> None:
    meta = _meta(
        c0={"link": _link({"model": "bernoulli", "rate": 0.01}), "axes": {"watch.streams": 4}},
        c1={"link": _link({"model": "bernoulli", "rate": 0.02}), "axes": {"watch.streams": 4}},
        c2={"link": _link({"model": "drop_list", "packets": [0]}, rate_mbit=None)},
    )
    assert condition_text(_verdict(("c0",)), meta) == "loss 1%, RTT 50 ms, 20 Mbit/s, 4 streams"
    pooled = _verdict(("c0", "c1"), condition={"stack.tcp_congestion": "reno"})
    assert condition_text(pooled, meta) == (
        "loss 1%/loss 2%, RTT 50 ms, 20 Mbit/s, 4 streams, stack.tcp_congestion=reno"
    )
    # no axis: the scenario's stream count; no rate: unlimited
    assert condition_text(_verdict(("c2",)), meta) == (
        "drop_list loss, RTT 50 ms, unlimited rate, 16 streams"
    )
    assert stream_counts(meta, "watch", ["c0", "c2"]) == [4, 16]
    assert stream_counts(meta, "bulk", ["c0"]) == []


@pytest.mark.parametrize(
    ("meta", "implementation", "expected"),
    [
        ({"stacks": {"stack": {"tcp_congestion": "cubic", "quic_congestion_control": "cubic"}}},
         None, None),
        ({"stacks": {"stack": {"tcp_congestion": "bbr", "quic_congestion_control": "cubic"}}},
         None, "different congestion controllers: h2 TCP bbr, h3 QUIC cubic"),
        # a cell's own stack wins over the run's
        ({"cells": [{"cell": "c0", "stack": {"tcp_congestion": "reno",
                                            "quic_congestion_control": "reno"}}],
          "stacks": {"stack": {"tcp_congestion": "bbr", "quic_congestion_control": "cubic"}}},
         None, None),
        ({"stacks": {"reference": {"h2": {"tcp_congestion": "cubic"},
                                   "quic": {"congestion_control": "reno"}}}},
         None, "different congestion controllers: h2 TCP cubic, h3 QUIC reno"),
        ({"stacks": {"stack": {"tcp_congestion": "cubic", "quic_congestion_control": "cubic",
                               "quic_engine": "qh3"}}},
         None, "congestion controllers unknown: h2 TCP cubic, h3 QUIC qh3's built-in one"),
        ({"stacks": {"caddy": {"settings": "the implementation's defaults"}},
          "implementation": "caddy"},
         None, "congestion controllers unknown: caddy runs the implementation's defaults"),
        ({"stacks": {}}, "caddy", "congestion controllers unknown: caddy records no controller"),
        ({"stacks": {}}, None, "congestion controllers unknown: h2 TCP ?, h3 QUIC ?"),
    ],
)  # fmt: skip
def test_controller_confound(
    meta: dict[str, Any], implementation: str | None, expected: str | None
) -> None:
    assert controller_confound(meta, "c0", implementation) == expected


def _exposed(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"cell": c, "workload": "watch", "metric": "hol_exposed_mean", "value": v}
            for c, v in values.items()
        ]
        + [{"cell": "c000", "workload": "watch", "metric": "hol_spread", "value": 0.01}]
    )


def test_too_few_exposed_streams_is_a_confound_of_hol_verdicts_only() -> None:
    """≈ 1 stream exposed per loss (median over the verdict's cells) cannot show HOL blocking;
    2 can; another cell's exposure, or a non-HOL metric, does not count."""
    one = _exposed({"c000": 1.0, "c001": 1.4, "c002": 9.0})
    text = exposed_confound(one, _verdict(("c000", "c001")))
    assert text is not None and text.startswith("≈ 1.2 stream(s) exposed per loss")
    assert exposed_confound(_exposed({"c000": 2.0}), _verdict(("c000",))) is None
    assert exposed_confound(one, _verdict(("c002",))) is None
    not_hol = dataclasses.replace(_verdict(("c000",)), metric="excess_p99_ms")
    assert exposed_confound(one, not_hol) is None
    assert exposed_confound(None, _verdict(("c000",))) is None
