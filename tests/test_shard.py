"""`lab run --shard I/N`: shards are disjoint and cover the plan for any N, balanced by the
plan's time estimates; the run id, run.json (`shard`, `plan`, `machines`) and `--resume` keep
to the shard; the machine parsers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.cli import main
from lab.results.meta import read_meta
from lab.run import runner
from lab.run.machine import cpu_limit, cpu_model, machine_info, mem_total_mib
from lab.run.plan import (
    Shard,
    estimate_cell_s,
    parse_shard,
    plan,
    shard_of_pairs,
    shard_pairs,
)
from lab.scenario.matrix import expand_cells
from lab.scenario.models import Scenario

REPO = Path(__file__).resolve().parents[1]


def sweep(repeat: int = 3) -> Scenario:
    """A small matrix whose cells have different estimates (loss, delay and streams vary)."""
    return Scenario.model_validate(
        {
            "name": "sweep",
            "seed": 3,
            "repeat": repeat,
            "link": {"delay_ms": 10, "rate_mbit": 20, "loss": {"model": "bernoulli", "rate": 0}},
            "workloads": [
                {"kind": "watch", "streams": 4, "interval_ms": 20, "duration_s": 2},
                {"kind": "bulk", "bytes": 1_000_000},
            ],
            "matrix": {
                "link.loss.rate": [0.001, 0.01, 0.03],
                "link.delay_ms": [5, 25],
                "watch.duration_s": [1, 4],
            },
        }
    )


# --- the partition -------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    estimates=st.lists(st.floats(0.0, 1e4, allow_nan=False), max_size=200),
    count=st.integers(1, 64),
)
def test_partition_is_disjoint_complete_and_balanced(estimates: list[float], count: int) -> None:
    owner = shard_of_pairs(estimates, count)
    assert len(owner) == len(estimates) and all(0 <= k < count for k in owner)
    loads = [sum(e for e, k in zip(estimates, owner, strict=True) if k == s) for s in range(count)]
    assert max(loads) - min(loads) <= max(estimates, default=0.0) + 1e-6
    assert shard_of_pairs(estimates, count) == owner  # deterministic


_SWEEP_PAIRS = plan(expand_cells(sweep()), 3)


@settings(max_examples=60, deadline=None)
@given(count=st.integers(1, 40))
def test_shards_of_a_plan_cover_it_once_in_run_order(count: int) -> None:
    pairs = _SWEEP_PAIRS
    shards = [shard_pairs(pairs, Shard(i, count)) for i in range(1, count + 1)]
    ids = [[(c.id, r) for c, r in s] for s in shards]
    flat = [p for s in ids for p in s]
    assert sorted(flat) == sorted((c.id, r) for c, r in pairs) and len(flat) == len(set(flat))
    order = {(c.id, r): i for i, (c, r) in enumerate(pairs)}
    assert all([order[p] for p in s] == sorted(order[p] for p in s) for s in ids)
    loads = [sum(estimate_cell_s(c) for c, _ in s) for s in shards]
    longest = max(estimate_cell_s(c) for c, _ in pairs)
    assert max(loads) - min(loads) <= longest + 1e-9


def test_estimates_differ_so_balance_is_not_trivial() -> None:
    estimates = {round(estimate_cell_s(c), 3) for c, _ in _SWEEP_PAIRS}
    assert len(estimates) >= 4
    # by count alone shard 1 of 2 would get 18 pairs either way; by time it gets the balance
    a, b = (shard_pairs(_SWEEP_PAIRS, Shard(i, 2)) for i in (1, 2))
    ta, tb = (sum(estimate_cell_s(c) for c, _ in s) for s in (a, b))
    assert abs(ta - tb) <= max(estimates)


@pytest.mark.parametrize(
    ("text", "shard"), [("1/3", Shard(1, 3)), (" 3 / 3 ", Shard(3, 3)), ("1/1", Shard(1, 1))]
)
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == f"{shard.index}/{shard.count}" and shard.label.startswith("s")


@pytest.mark.parametrize(
    ("text", "why"),
    [("0/3", "I must be between 1 and N"), ("4/3", "I must be"), ("1/0", "N must be"),
     ("1-3", "expected I/N"), ("a/b", "expected I/N"), ("1/100001", "N must be")],
)  # fmt: skip
def test_parse_shard_rejects(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_shard(text)


def test_cli_rejects_a_bad_shard_and_a_shard_with_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = str(REPO / "scenarios" / "smoke.yaml")
    assert main(["run", smoke, "--shard", "0/2", "--yes", "--out", str(tmp_path)]) == 2
    assert "I must be between 1 and N" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--shard", "1/2"]) == 2
    assert "give no --shard" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- the run directory of a shard ----------------------------------------------------------
def test_prepare_records_the_shard_the_plan_and_the_machine(tmp_path: Path) -> None:
    scenario = sweep(repeat=2)
    opts = runner.RunOptions(backend="emulator", out_dir=tmp_path, shard=Shard(2, 5))
    prep = runner.prepare(scenario, "sweep.yaml", opts)
    assert re.fullmatch(r"\d{8}-\d{6}-sweep-[0-9a-f]{4}-s2of5", prep.writer.path.name)
    whole = plan(expand_cells(scenario), 2)
    mine = shard_pairs(whole, Shard(2, 5))
    assert (
        [(c.id, r) for c, r in prep.pairs]
        == [(c.id, r) for c, r in mine]
        == [(c.id, r) for c, r in prep.todo]
    )
    meta = read_meta(prep.writer.path)
    assert meta["plan"]["pairs"] == [[c.id, r] for c, r in whole]
    assert meta["shard"]["index"] == 2 and meta["shard"]["count"] == 5
    assert meta["shard"]["label"] == "s2of5"
    assert meta["shard"]["pairs"] == [[c.id, r] for c, r in mine]
    assert meta["shard"]["estimate_s"] < meta["plan"]["estimate_s"]
    (machine,) = meta["machines"]
    assert machine["cpus"] == machine_info()["cpus"] and machine["completed_before"] == 0
    assert len(machine["load_avg_start"]) == 3 and machine["cpu_model"]

    # --resume keeps to the shard's own pairs, and records the machine of the resume
    prep.writer.finish("interrupted")
    again = runner.prepare_resume(prep.writer.path)
    assert [(c.id, r) for c, r in again.pairs] == [(c.id, r) for c, r in mine]
    assert len(read_meta(prep.writer.path)["machines"]) == 2


def test_an_unsharded_run_has_the_plan_and_no_shard(tmp_path: Path) -> None:
    scenario = sweep(repeat=1)
    prep = runner.prepare(scenario, None, runner.RunOptions(backend="emulator", out_dir=tmp_path))
    meta = read_meta(prep.writer.path)
    assert meta["shard"] is None and "-s" not in prep.writer.path.name.split("sweep")[-1]
    assert len(meta["plan"]["pairs"]) == len(prep.pairs) == 12
    _, _, est = runner.describe(scenario, runner.RunOptions())
    _, _, est_1 = runner.describe(scenario, runner.RunOptions(shard=Shard(1, 4)))
    assert est_1 < est


# --- machine info --------------------------------------------------------------------------
def test_machine_parsers() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) X\n"
    assert cpu_model(cpuinfo + "processor\t: 1\nmodel name\t: other\n") == "Intel(R) Xeon(R) X"
    assert cpu_model("processor : 0\nCPU part : 0xd0c\n") == "0xd0c"
    assert cpu_model("") is None
    assert cpu_limit("200000 100000\n") == 2.0 and cpu_limit("150000 100000") == 1.5
    assert cpu_limit("max 100000") is None and cpu_limit("") is None
    assert mem_total_mib("MemTotal:       24684000 kB\nMemFree: 1 kB\n") == 24105
    assert mem_total_mib("nothing") is None


def test_machine_info_reads_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_NODE_NAME", "node-7")
    info = machine_info()
    assert info["node"] == "node-7" and info["cpus"] >= 1
    assert 1 <= info["cpus_usable"] <= info["cpus"] and info["mem_total_mib"] > 0
