"""Scenario files: loading, file:line errors, matrix expansion, `lab validate` and `lab schema`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main
from lab.errors import ScenarioError
from lab.link.spec import BernoulliLoss, GilbertElliottLoss
from lab.scenario.load import load_scenario, parse_scenario, scenario_json_schema
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.workloads import WatchParams

ROOT = Path(__file__).resolve().parent.parent

FULL = """\
name: lossy
description: the headline
seed: 42
repeat: 3
link: {delay_ms: 25, jitter_ms: 2, jitter_distribution: normal, reorder: preserve,
       loss: {model: bernoulli, rate: 0.01}, rate_mbit: 20, queue: {bdp: 1.5}}
protocols: [h2, h3]
server: reference
workloads:
  - {kind: watch, streams: 16, interval_ms: 20, duration_s: 10}
  - {kind: handshake, modes: [cold, resumed, zero_rtt], connections: 20}
  - {kind: bulk, bytes: 10000000}
  - {kind: multiplex, objects: 50, object_bytes: 20000}
  - {kind: rpc_under_load, interval_ms: 20, rpc_bytes: 1000, bulk_bytes: 5000000}
  - {kind: k8s_mix, gets: 200, list_pages: 5, list_limit: 100, watches: 10, duration_s: 10}
matrix:
  link.loss.rate: [0.0, 0.01, 0.02]
  watch.streams: [1, 4, 16, 64]
"""

# A block-style file: the bad values below replace line 5 ("  duplicate: 0.0").
BLOCK = """\
name: bad
seed: 1
link:
  jitter_ms: 1
  duplicate: 0.0
workloads:
  - kind: bulk
    bytes: 1000
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(write(tmp_path, text))
    return exc.value


def test_full_example_loads_and_expands(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, FULL))
    assert s.name == "lossy" and s.seed == 42 and s.repeat == 3
    link = s.link_spec
    assert link.uplink == link.downlink
    assert link.uplink.loss == BernoulliLoss(model="bernoulli", rate=0.01)
    assert link.base_rtt_ms == 50
    assert [w.kind for w in s.workloads] == [
        "watch", "handshake", "bulk", "multiplex", "rpc_under_load", "k8s_mix"
    ]  # fmt: skip
    cells = expand_cells(s)
    assert len(cells) == 12
    assert [c.id for c in cells[:3]] == ["c000", "c001", "c002"]
    c = cells[5]  # first axis slowest: loss index 1, streams index 1
    assert c.axes == {"link.loss.rate": 0.01, "watch.streams": 4}
    assert c.link.uplink.loss.rate == 0.01 and c.link.downlink.loss.rate == 0.01  # type: ignore[union-attr]
    assert isinstance(c.workloads[0], WatchParams) and c.workloads[0].streams == 4
    assert c.workloads[0].stall_threshold_rtt == 0.5
    assert cells[0].link.uplink.loss.rate == 0.0  # type: ignore[union-attr]
    assert c.seed(0) != c.seed(1) and c.seed(0) != cells[4].seed(0)
    assert c.seed(0) == expand_cells(s)[5].seed(0)


def test_resolved_is_json_ready(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, FULL))
    r = json.loads(json.dumps(resolved(s)))
    assert r["link_spec"]["uplink"]["delay_ms"] == 25
    assert r["workloads"][0]["stall_threshold_rtt"] == 0.5
    assert len(r["cells"]) == 12 and r["cells"][0] == {
        "id": "c000", "axes": {"link.loss.rate": 0.0, "watch.streams": 1}
    }  # fmt: skip


def test_asymmetric_link_and_link_axis_applies_to_both(tmp_path: Path) -> None:
    text = """\
name: asym
uplink: {delay_ms: 5}
downlink: {delay_ms: 30, loss: {model: gilbert_elliott, p: 0.01, r: 0.3}}
workloads: [{kind: bulk}]
matrix:
  link.rate_mbit: [5, 10]
  downlink.loss.p: [0.01, 0.02]
"""
    cells = expand_cells(load_scenario(write(tmp_path, text)))
    assert len(cells) == 4
    last = cells[-1]
    assert last.link.uplink.rate_mbit == 10 and last.link.downlink.rate_mbit == 10
    assert last.link.uplink.delay_ms == 5 and last.link.base_rtt_ms == 35
    assert isinstance(last.link.downlink.loss, GilbertElliottLoss)
    assert last.link.downlink.loss.p == 0.02


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ("  delay_ms: -5", "link.delay_ms", "greater than or equal to 0"),
        ("  rate_mbit: 0", "link.rate_mbit", "greater than 0"),
        ("  loss: {model: bernoulli, rate: 1.5}", "link.loss.rate", "less than or equal to 1"),
        ("  loss: {model: lossy, rate: 0.1}", "link.loss", "unknown 'model' 'lossy'"),
        ("  colour: blue", "link.colour", "unknown field"),
        ("  jitter_distribution: cauchy", "link.jitter_distribution", "cauchy"),
        ("  queue: {bdp: 1, packets: 5}", "link.queue", "exactly one of packets, bytes or bdp"),
    ],
)
def test_bad_link_values_name_the_line(tmp_path: Path, bad: str, field: str, words: str) -> None:
    lines = BLOCK.splitlines()
    lines[4] = bad
    err = error_of(tmp_path, "\n".join(lines) + "\n")
    assert err.line == 5
    assert err.field == field
    assert words in err.reason
    text = str(err)
    assert text.startswith(f"{tmp_path / 's.yaml'}:5: {field}: ")
    assert "\n" not in text


def test_unknown_top_level_and_workload_fields(tmp_path: Path) -> None:
    err = error_of(tmp_path, BLOCK + "colour: blue\n")
    assert (err.line, err.field, err.reason) == (9, "colour", "unknown field")
    err = error_of(tmp_path, BLOCK.replace("    bytes: 1000", "    bytes: 1000\n    byts: 3"))
    assert (err.line, err.field, err.reason) == (9, "workloads[0].byts", "unknown field")
    err = error_of(tmp_path, BLOCK.replace("kind: bulk", "kind: bulkk"))
    assert (err.line, err.field) == (7, "workloads[0]")
    assert "bulkk" in err.reason


def test_missing_fields(tmp_path: Path) -> None:
    err = error_of(tmp_path, BLOCK.replace("name: bad\n", ""))
    assert (err.field, err.reason) == ("name", "required field is missing")
    lines = BLOCK.splitlines()
    lines[4] = "  loss:\n    model: bernoulli"
    err = error_of(tmp_path, "\n".join(lines) + "\n")
    assert (err.line, err.field, err.reason) == (5, "link.loss.rate", "required field is missing")


def test_link_and_uplink_together_is_an_error(tmp_path: Path) -> None:
    err = error_of(tmp_path, BLOCK + "uplink: {delay_ms: 3}\n")
    assert (err.line, err.field) == (9, "uplink")


def test_matrix_key_that_addresses_no_field(tmp_path: Path) -> None:
    err = error_of(tmp_path, BLOCK + "matrix:\n  link.loss.rat: [0.1]\n")
    assert (err.line, err.field) == (10, "matrix.link.loss.rat")
    assert "addresses no field" in err.reason and "'rat'" in err.reason
    err = error_of(tmp_path, BLOCK + "matrix:\n  seed: [1]\n  watch.streams: [1, 2]\n")
    assert (err.line, err.field) == (11, "matrix.watch.streams")
    assert "no workload of kind 'watch'" in err.reason
    err = error_of(tmp_path, BLOCK + "matrix:\n  colour.red: [1]\n")
    assert (err.line, err.field) == (10, "matrix.colour.red")


def test_bad_matrix_value_names_its_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, BLOCK + "matrix:\n  link.duplicate:\n    - 0.1\n    - 1.5\n")
    assert err.line == 12
    assert err.field == "matrix.link.duplicate[1]"
    assert "link.duplicate" in err.reason and "less than or equal to 1" in err.reason


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: x\nlink: {delay_ms: 3\nworkloads: []\n")
    assert err.line is not None and err.line >= 2
    assert "YAML syntax error" in str(err)
    err = error_of(tmp_path, "name: x\nname: y\n")
    assert (err.line, err.reason) == (2, "duplicate key 'name'")
    err = error_of(tmp_path, "- just\n- a list\n")
    assert err.line == 1 and "mapping" in err.reason


def test_parse_scenario_from_text() -> None:
    s = parse_scenario("name: t\nworkloads: [{kind: handshake}]\n")
    assert s.workloads[0].modes == ["cold", "resumed", "zero_rtt"]  # type: ignore[union-attr]
    assert s.link_spec.base_rtt_ms == 0 and s.protocols == ["h2", "h3"] and s.repeat == 3


def test_shipped_smoke_scenario_is_small() -> None:
    s = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    assert s.repeat == 1 and len(expand_cells(s)) == 1


# --- CLI ----------------------------------------------------------------------------------
def test_cli_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, FULL)
    assert main(["validate", str(p)]) == 0
    assert capsys.readouterr().out.strip() == f"{p}: ok — 12 cells × 3 repetitions"


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ("  delay_ms: -5", 5),
        ("  loss: {model: bernoulli, rate: 2}", 5),
        ("  loss: {model: unknown}", 5),
        ("  rate_mbit: 0", 5),
        ("  nonsense: 1", 5),
    ],
)
def test_cli_validate_bad_value_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, line: int
) -> None:
    lines = BLOCK.splitlines()
    lines[4] = bad
    p = write(tmp_path, "\n".join(lines) + "\n")
    before = sorted(tmp_path.iterdir())
    assert main(["validate", str(p)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{p}:{line}: ")
    assert err.count("\n") == 1
    assert sorted(tmp_path.iterdir()) == before  # creates nothing


def test_cli_validate_unknown_matrix_key_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, BLOCK + "matrix:\n  bulk.size: [1, 2]\n")
    assert main(["validate", str(p)]) == 2
    assert capsys.readouterr().err.startswith(f"{p}:10: matrix.bulk.size: addresses no field")


def test_cli_validate_missing_file_exit_2(tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2


def test_cli_validate_subprocess(tmp_path: Path) -> None:
    p = write(tmp_path, BLOCK.replace("  duplicate: 0.0", "  rate_mbit: -1"))
    r = subprocess.run(
        [sys.executable, "-m", "lab", "validate", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith(f"{p}:5: link.rate_mbit: ")


def test_cli_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads(json.dumps(scenario_json_schema()))
    assert {"name", "link", "uplink", "workloads", "matrix"} <= set(schema["properties"])
    assert "DirectionSpec" in schema["$defs"] and "WatchParams" in schema["$defs"]
    assert schema["required"] == ["name", "workloads"]


def test_matrix_mapping_values_and_top_level_axes() -> None:
    text = """\
name: t
link: {delay_ms: 10, rate_mbit: 5}
workloads: [{kind: bulk}, {kind: watch}, {kind: watch, streams: 2}]
matrix:
  link.loss: [{model: bernoulli, rate: 0.01}, {model: gilbert_elliott, p: 0.003, r: 0.3}]
  seed: [1, 2]
  protocols: [[h2], [h3]]
  watch.streams: [8]
"""
    cells = expand_cells(parse_scenario(text))
    assert len(cells) == 8
    last = cells[-1]
    assert isinstance(last.link.downlink.loss, GilbertElliottLoss)
    assert last.scenario.seed == 2 and last.scenario.protocols == ["h3"]
    assert [getattr(w, "streams", None) for w in last.workloads] == [None, 8, 8]  # every watch
    assert last.scenario.matrix == {}


def test_matrix_value_breaking_a_model_rule_is_blamed() -> None:
    text = (
        "name: t\nlink: {delay_ms: 10}\nworkloads: [{kind: bulk}]\nmatrix:\n  link.queue.bdp: [1]\n"
    )
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(text, "f.yaml")
    assert (exc.value.line, exc.value.field) == (5, "matrix.link.queue.bdp[0]")
    assert "needs rate_mbit" in exc.value.reason
