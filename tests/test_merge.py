"""`lab merge`: the shards of a run merge into exactly the unsharded run (pairs, samples,
schema); incompatible runs are refused naming what differs; missing and duplicate pairs are
reported; report, check, compare and the notebook work on a merged run. Fixture runs (pure
data) and one real sharded smoke run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures.make_run import make_fixture_run

from lab.cli import main
from lab.errors import ResultsError
from lab.evidence.check import check_run
from lab.evidence.compare import compare_runs
from lab.evidence.report import write_report
from lab.results.merge import first_difference, merge_runs, plan_pairs
from lab.results.reader import load
from lab.results.writer import RunWriter
from lab.run.plan import shard_of_pairs

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = REPO / "scenarios" / "thresholds.yaml"
REPS = 3


def write_shards(single: Path, n: int, out: Path, *, machine: str = "node") -> list[Path]:
    """The runs that `lab run --shard i/n` would have written for the fixture run `single`:
    the same metadata plus `plan`, `shard` and `machines`; each shard's pairs and samples."""
    run = load(single)
    meta = run.meta
    pairs = plan_pairs(meta)
    owner = shard_of_pairs([1.0] * len(pairs), n)
    paths = []
    for k in range(n):
        mine = [p for p, o in zip(pairs, owner, strict=True) if o == k]
        label = f"s{k + 1}of{n}"
        writer = RunWriter.create(
            out / f"{meta['run_id']}-{label}",
            scenario=meta["scenario"],
            seed=meta["seed"],
            cells=meta["cells"],
            scenario_file=meta["scenario_file"],
            impairment=meta["impairment"],
            stacks=meta["stacks"],
            environment=meta["environment"],
            git=meta["git_commit"],
            extra={
                "plan": {"pairs": [list(p) for p in pairs], "estimate_s": float(len(pairs))},
                "shard": {"index": k + 1, "count": n, "label": label, "pairs": mine},
                "machines": [{"hostname": f"{machine}-{k}", "cpu_model": "fixture CPU"}],
            },
        )
        keys = list(zip(run.samples["cell"], run.samples["repetition"], strict=True))
        writer.append_samples(run.samples[[(c, int(r)) in set(mine) for c, r in keys]])
        for cell, rep in mine:
            writer.mark_completed(cell, rep)
        writer.finish("complete")
        paths.append(writer.path)
    return paths


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("merge")
    single = make_fixture_run(root / "single", repetitions=REPS)
    shards = write_shards(single, 3, root / "shards")
    merged = root / "merged" / "fixture-merged"
    outcome = merge_runs(shards, merged)
    return {"root": root, "single": single, "shards": shards, "merged": merged, "out": outcome}


def edit_meta(run: Path, dest: Path, change: dict[str, Any]) -> Path:
    """A copy of `run` at `dest` whose run.json has `change` applied ({"a.b": value})."""
    shutil.copytree(run, dest)
    meta = json.loads((dest / "run.json").read_text())
    meta["run_id"] = dest.name
    for path, value in change.items():
        node = meta
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    (dest / "run.json").write_text(json.dumps(meta))
    return dest


# --- merging the shards gives the unsharded run ------------------------------------------
def test_shards_are_disjoint_parts_of_the_run(fixture_runs: dict[str, Any]) -> None:
    parts = [load(p).completed for p in fixture_runs["shards"]]
    assert all(parts) and sum(len(p) for p in parts) == len(set().union(*parts))
    assert set().union(*parts) == load(fixture_runs["single"]).completed


def test_merged_run_equals_the_unsharded_run(fixture_runs: dict[str, Any]) -> None:
    single, merged = load(fixture_runs["single"]), load(fixture_runs["merged"])
    out = fixture_runs["out"]
    assert out.status == "complete" and out.missing == [] and out.duplicates == {}
    assert (out.pairs, out.planned) == (27, 27)
    assert merged.status == "complete" and merged.completed == single.completed
    assert {c["cell"] for c in merged.meta["cells"]} == {c["cell"] for c in single.meta["cells"]}
    assert list(merged.samples.dtypes.items()) == list(single.samples.dtypes.items())
    pd.testing.assert_frame_equal(merged.samples, single.samples)
    pd.testing.assert_frame_equal(merged.summary, single.summary)


def test_merged_run_records_its_sources_and_machines(fixture_runs: dict[str, Any]) -> None:
    meta = load(fixture_runs["merged"]).meta
    assert [m["shard"] for m in meta["merged_from"]] == ["s1of3", "s2of3", "s3of3"]
    assert [m["kept"] for m in meta["merged_from"]] == [9, 9, 9]
    assert [m["hostname"] for m in meta["machines"]] == ["node-0", "node-1", "node-2"]
    assert meta["shard"] is None and meta["run_id"] == "fixture-merged"
    assert len(meta["plan"]["pairs"]) == 27
    # every data file is checksummed: load() verified them; a changed byte is caught
    assert set(meta["sha256"]) == {"samples.parquet", "summary.csv", "errors.json"}


def test_damaged_merged_run_is_refused_by_the_reader(
    fixture_runs: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "m"
    shutil.copytree(fixture_runs["merged"], copy)
    data = bytearray((copy / "summary.csv").read_bytes())
    data[-2] ^= 1
    (copy / "summary.csv").write_bytes(bytes(data))
    with pytest.raises(ResultsError, match=r"summary\.csv: SHA-256 differs"):
        load(copy)


def test_report_check_and_compare_work_on_a_merged_run(
    fixture_runs: dict[str, Any], tmp_path: Path
) -> None:
    single, merged = fixture_runs["single"], fixture_runs["merged"]
    files = write_report(merged, tmp_path / "report")
    assert "goodput_mbit" in files.html.read_text() or "Goodput" in files.html.read_text()
    assert not any("incomplete" in w for w in files.warnings)
    report_m, _ = check_run(merged, THRESHOLDS)
    report_s, _ = check_run(single, THRESHOLDS)
    assert report_m.exit_code == report_s.exit_code
    diffs = compare_runs(single, merged)
    assert diffs and {d.change for d in diffs} <= {"no change", "undecided"}
    assert all(d.median_a == d.median_b for d in diffs)


def test_notebook_runs_on_a_merged_run(
    fixture_runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("LAB_RUN", str(fixture_runs["merged"]))
    NotebookClient(nb, timeout=180, kernel_name="python3").execute(env={**os.environ})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fixture-merged" in text and "status: complete" in text


# --- missing and duplicate pairs -----------------------------------------------------------
def test_missing_pairs_are_reported_and_the_run_can_be_resumed(
    fixture_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = fixture_runs["shards"]
    out = tmp_path / "partial"
    rc = main(["merge", str(shards[0]), str(shards[2]), "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 1
    missing = sorted(load(shards[1]).completed)
    assert f"missing {len(missing)} pair(s)" in printed
    assert f"{missing[0][0]}-{missing[0][1]}" in printed and "lab run --resume" in printed
    merged = load(out)
    assert merged.status == "interrupted" and len(merged.completed) == 18
    # the missing shard merged in later completes it
    again = merge_runs([out, shards[1]], tmp_path / "full")
    assert again.status == "complete" and again.pairs == 27


def test_duplicate_pairs_are_refused_by_default(
    fixture_runs: dict[str, Any], tmp_path: Path
) -> None:
    shards = fixture_runs["shards"]
    twin = edit_meta(shards[0], tmp_path / "twin-s1of3", {})
    with pytest.raises(ResultsError, match=r"9 \(cell, repetition\) pair\(s\) completed by more"):
        merge_runs([*shards, twin], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    out = merge_runs([*shards, twin], tmp_path / "m", keep_first=True)
    assert out.status == "complete" and len(out.duplicates) == 9
    assert all(runs == [shards[0].name, twin.name] for runs in out.duplicates.values())


def test_the_same_run_twice_is_refused(fixture_runs: dict[str, Any], tmp_path: Path) -> None:
    s = fixture_runs["shards"][0]
    with pytest.raises(ResultsError, match="given twice"):
        merge_runs([s, s], tmp_path / "m")


def test_existing_output_is_never_overwritten(fixture_runs: dict[str, Any]) -> None:
    with pytest.raises(ResultsError, match="already exists"):
        merge_runs(fixture_runs["shards"], fixture_runs["merged"])


# --- incompatible runs are refused, naming what differs ------------------------------------
MISMATCHES = [
    ("scenario", {"scenario.name": "other"}, "scenario differs: scenario.name"),
    ("cells", {"cells": []}, "scenario differs: cells"),
    ("repeat", {"scenario.repeat": 9}, "scenario differs: scenario.repeat"),
    ("seed", {"seed": 7}, "seeds differ: seed is 0"),
    ("git", {"git_commit": "abc123"}, "git commit differs: git_commit is 'fixture'"),
    (
        "libraries",
        {"environment.libraries.numpy": "2.0"},
        "library versions differ: environment.libraries.numpy",
    ),
    ("python", {"environment.python": "3.12.0"}, "library versions differ: environment.python"),
    ("backend", {"impairment.backend": "netem"}, "impairment backend differs"),
    (
        "stacks",
        {"stacks.reference.h2.tcp_congestion": "bbr"},
        "stack settings differ: stacks.reference.h2",
    ),
    ("other", {"link_model_reseeded_per_protocol": False}, "impairment backend differs"),
]


@pytest.mark.parametrize(("kind", "change", "message"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_incompatible_runs_are_refused(
    fixture_runs: dict[str, Any], tmp_path: Path, kind: str, change: dict[str, Any], message: str
) -> None:
    s1, s2, s3 = fixture_runs["shards"]
    odd = edit_meta(s2, tmp_path / f"odd-{kind}", change)
    with pytest.raises(ResultsError) as exc:
        merge_runs([s1, odd, s3], tmp_path / "m")
    text = str(exc.value)
    assert text.startswith("cannot merge: ") and message in text
    assert s1.name in text and odd.name in text
    assert not (tmp_path / "m").exists()


def test_an_unknown_field_that_differs_is_named(
    fixture_runs: dict[str, Any], tmp_path: Path
) -> None:
    s1, s2, _ = fixture_runs["shards"]
    odd = edit_meta(s2, tmp_path / "odd", {"quic_engine_override": "qh3"})
    with pytest.raises(ResultsError, match="stack settings differ: quic_engine_override"):
        merge_runs([s1, odd], tmp_path / "m")
    new = edit_meta(s2, tmp_path / "new-field", {"future_setting": 1})
    with pytest.raises(ResultsError, match="future_setting differs"):
        merge_runs([s1, new], tmp_path / "m")


def test_a_pair_run_with_two_seeds_is_refused(fixture_runs: dict[str, Any], tmp_path: Path) -> None:
    s1 = fixture_runs["shards"][0]
    pair = sorted(load(s1).completed)[0]
    tag = f"{pair[0]}-{pair[1]}"
    a = edit_meta(s1, tmp_path / "a", {"cell_runs": {tag: {"seed": 1}}})
    b = edit_meta(s1, tmp_path / "b", {"cell_runs": {tag: {"seed": 2}}})
    with pytest.raises(ResultsError, match=f"seeds differ: pair {tag} has seed 1 in a, 2 in b"):
        merge_runs([a, b], tmp_path / "m", keep_first=True)


def test_machine_differences_are_warnings_not_refusals(
    fixture_runs: dict[str, Any], tmp_path: Path
) -> None:
    s1, s2, s3 = fixture_runs["shards"]
    other = edit_meta(s2, tmp_path / "other", {"environment.kernel": "Linux 6.9 other"})
    out = merge_runs([s1, other, s3], tmp_path / "m")
    assert out.status == "complete"
    assert any(w.startswith("kernel differs between the runs") for w in out.warnings)
    kernel = load(out.path).meta["environment"]["kernel"]
    assert kernel == ["Linux 6.1.0-fixture x86_64", "Linux 6.9 other"]


def test_first_difference_names_the_path() -> None:
    assert first_difference({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}, "x") == ("x.a.b[1]", 2, 3)
    assert first_difference({"a": 1}, {"a": 1}, "x") is None
    assert first_difference(1, 1.0, "x") == ("x", 1, 1.0)  # types matter: 1 is not 1.0
    where, a, b = first_difference({"a": 1}, {}, "x") or ("", None, None)
    assert where == "x.a" and a == 1 and repr(b) == "absent"


# --- a real sharded run ----------------------------------------------------------------------
@pytest.mark.netns
@pytest.mark.slow
def test_real_smoke_run_in_two_shards_merges(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("needs root and /dev/net/tun")
    scenario = REPO / "scenarios" / "smoke.yaml"
    for i in (1, 2):
        argv = ["run", str(scenario), "--repeat", "2", "--shard", f"{i}/2", "--impair", "emulator"]
        p = subprocess.run(
            [sys.executable, "-m", "lab", *argv, "--out", str(tmp_path / "shards"), "--yes"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert p.returncode == 0, p.stdout + p.stderr
    shards = sorted((tmp_path / "shards").iterdir())
    assert [s.name[-5:] for s in shards] == ["s1of2", "s2of2"]
    metas = [load(s).meta for s in shards]
    assert [sorted(map(tuple, m["shard"]["pairs"])) for m in metas] == [
        [("c000", 0)],
        [("c000", 1)],
    ]
    assert all(m["plan"]["pairs"] == [["c000", 0], ["c000", 1]] for m in metas)
    assert all(m["machines"][0]["cpus"] == os.cpu_count() for m in metas)
    assert all(
        isinstance(r["load_avg_1min"], float) for m in metas for r in m["cell_runs"].values()
    )

    out = tmp_path / "merged" / "smoke-merged"
    assert main(["merge", *map(str, shards), "-o", str(out)]) == 0
    merged, parts = load(out), [load(s) for s in shards]
    assert merged.completed == {("c000", 0), ("c000", 1)}
    assert list(merged.samples.dtypes.items()) == list(parts[0].samples.dtypes.items())
    assert len(merged.samples) == sum(len(p.samples) for p in parts)
    keys = ["protocol", "workload", "metric"]
    per_rep = [
        set(map(tuple, g[keys].drop_duplicates().to_numpy()))
        for _, g in merged.samples.groupby("repetition")
    ]
    assert per_rep[0] == per_rep[1]  # every metric of the format in both repetitions
    assert (out / "emulator" / "c000-0").is_dir() and (out / "emulator" / "c000-1").is_dir()
    assert write_report(out).html.exists()
