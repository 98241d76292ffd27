"""Scenario files: loading, file:line errors, matrix expansion, `lab validate` and `lab schema`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labrun import lab_argv, run_lab_limited

from lab.cli import main
from lab.errors import ScenarioError
from lab.link.spec import BernoulliLoss, GilbertElliottLoss
from lab.scenario.limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_PAIRS
from lab.scenario.load import load_scenario, parse_scenario, scenario_json_schema
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.models import KNOWN_CLIENTS, KNOWN_SERVERS
from lab.scenario.workloads import WatchParams

ROOT = Path(__file__).resolve().parent.parent
CLI_CPU_LIMIT_S = 2.0  # of one `lab validate` / `lab run` process, start-up included

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
        ("  rate_mbit: 0", "link.rate_mbit", "greater than or equal to 0.01"),
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
        lab_argv("validate", str(p)),
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


# --- hostile input: one line FILE:LINE: …, at once, creating nothing ------------------------
WL = "workloads: [{kind: bulk}]\n"


def _alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    lines = [f"b0: &b0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def _matrix_of(cells_per_axis: int, axes: list[str]) -> str:
    values = ", ".join(str(v) for v in range(1, cells_per_axis + 1))
    return "matrix:\n" + "".join(f"  {a}: [{values}]\n" for a in axes)


# case → (file text, line of the error, words of the error)
HOSTILE: dict[str, tuple[str, int, str]] = {
    "nul": ("name: t\n" + "description: a\x00b\n" + WL, 2, "U+0000 (NUL) at column 15"),
    "escape": ("name: t\n" + WL + "seed: 1\x1b[2J\n", 3, "U+001B (ESC)"),
    "escaped_nul": ('name: t\ndescription: "a\\0b"\n' + WL, 2, "description: control character"),
    "deep_nesting": ("name: t\n" + WL + "description: " + "[" * 50_000 + "]" * 50_000, 3, "deeper"),
    "alias_bomb": ("name: t\n" + WL + _alias_bomb(), 4, "YAML aliases are not allowed"),
    "merge_key": ("name: t\nx: &l {delay_ms: 5}\nlink: {<<: *l}\n" + WL, 3, "YAML aliases"),
    "matrix_1e6": (
        "name: t\nlink: {delay_ms: 1}\nworkloads: [{kind: watch}]\n"
        + _matrix_of(10, ["seed", "link.delay_ms", "link.jitter_ms", "watch.streams"])
        + _matrix_of(10, ["link.duplicate", "stack.max_concurrent_streams"])[len("matrix:\n") :],
        4,
        "1,000,000 cells × 3 repetitions",
    ),
    "repeat_1e30": ("name: t\nrepeat: 1e30\n" + WL, 2, "repeat: "),
    "repeat_float_1e30": ("name: t\nrepeat: 1.0e+30\n" + WL, 2, "repeat: "),
    "repeat_1e12": ("name: t\nrepeat: 1000000000000\n" + WL, 2, "less than or equal to 1000"),
    "delay_inf": ("name: t\nlink: {delay_ms: .inf}\n" + WL, 2, "link.delay_ms: input should"),
    "delay_1e12": ("name: t\nlink:\n  delay_ms: 1.0e+12\n" + WL, 3, "less than or equal to 10000"),
    "rate_inf": ("name: t\nlink: {rate_mbit: .inf}\n" + WL, 2, "finite number (got inf)"),
    "rate_1e-300": ("name: t\nlink: {rate_mbit: 1.0e-300}\n" + WL, 2, "or equal to 0.01"),
    "streams_1e9": ("name: t\nworkloads: [{kind: watch, streams: 1000000000}]\n", 2, "streams"),
    "streams_float_1e9": ("name: t\nworkloads: [{kind: watch, streams: 1.0e+9}]\n", 2, "10000"),
    "duration_inf": ("name: t\nworkloads:\n  - kind: watch\n    duration_s: .inf\n", 4, "finite"),
    "bytes_1e18": ("name: t\nworkloads: [{kind: bulk, bytes: 1000000000000000000}]\n", 2, "bytes"),
    "long_name": ("name: " + "n" * 300 + "\n" + WL, 1, "name: string should have at most 64"),
    "unknown_server": (
        "name: t\nserver: nginx\n" + WL, 2, "'reference', 'caddy' or 'go' (got 'nginx')"
    ),
}  # fmt: skip


# One of each kind for the CLI (a process start costs ~0.5 s of CPU; the rest run in-process).
CLI_CASES = [
    "nul", "deep_nesting", "alias_bomb", "matrix_1e6", "repeat_float_1e30", "delay_inf",
    "delay_1e12", "rate_inf", "rate_1e-300", "streams_1e9", "duration_inf", "bytes_1e18",
    "long_name", "unknown_server",
]  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_one_error_at_its_line(tmp_path: Path, case: str) -> None:
    text, line, words = HOSTILE[case]
    path = write(tmp_path, text)
    start = time.process_time()
    err = error_of(tmp_path, text)
    assert time.process_time() - start < 1.0
    assert err.line == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: ") and "\n" not in str(err)


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_hostile_input_at_once_creating_nothing(tmp_path: Path, case: str) -> None:
    """`lab validate` and `lab run`: exit 2, one stderr line FILE:LINE:, no traceback, nothing
    in --out, within ~2 s of CPU each, interpreter start-up included (CPU, not wall time: the
    test box is shared)."""
    text, line, _ = HOSTILE[case]
    path = write(tmp_path, text)
    out = tmp_path / "results"
    for argv in (["validate", str(path)], ["run", str(path), "--yes", "--out", str(out)]):
        r, cpu_s = run_lab_limited(*argv)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"{path}:{line}: "), r.stderr
        assert r.stdout == ""
        assert cpu_s < CLI_CPU_LIMIT_S, f"{argv[0]}: {cpu_s:.2f} s of CPU"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_known_servers_match_the_registry() -> None:
    """The scenario layer may not import peers; its list of server names must not drift."""
    from lab.peers.registry import IMPLEMENTATIONS

    assert sorted(KNOWN_SERVERS) == sorted(IMPLEMENTATIONS)
    for name in KNOWN_SERVERS:
        assert parse_scenario(f"name: t\nserver: {name}\n{WL}").server == name


def test_client_and_address_family_default_to_the_lab_client_over_ipv4() -> None:
    sc = parse_scenario(f"name: t\n{WL}")
    assert (sc.server, sc.client, sc.address_family) == ("reference", "lab", "ipv4")
    assert KNOWN_CLIENTS == ("lab", "go")
    both = parse_scenario(f"name: t\nserver: go\nclient: go\naddress_family: ipv6\n{WL}")
    assert (both.server, both.client, both.address_family) == ("go", "go", "ipv6")


def test_server_client_and_address_family_are_matrix_axes() -> None:
    """`matrix: {server: [...], client: [...]}` is the cross-product, first axis slowest."""
    text = (
        f"name: t\n{WL}matrix:\n  server: [reference, go, caddy]\n  client: [lab, go]\n"
        "  address_family: [ipv4, ipv6]\n"
    )
    cells = expand_cells(parse_scenario(text))
    got = [(c.scenario.server, c.scenario.client, c.scenario.address_family) for c in cells]
    assert len(got) == 12 == len(set(got))
    assert got[:3] == [("reference", "lab", "ipv4"), ("reference", "lab", "ipv6"),
                       ("reference", "go", "ipv4")]  # fmt: skip
    assert cells[-1].axes == {"server": "caddy", "client": "go", "address_family": "ipv6"}


@pytest.mark.parametrize(
    ("axis", "good", "bad", "words"),
    [
        ("client", "go", "curl", "'lab' or 'go'"),
        ("address_family", "ipv6", "ipv5", "'ipv4' or 'ipv6'"),
        ("server", "go", "nginx", "'reference', 'caddy' or 'go'"),
    ],
)
def test_bad_server_client_or_family_names_its_line(
    tmp_path: Path, axis: str, good: str, bad: str, words: str
) -> None:
    err = error_of(tmp_path, BLOCK + f"matrix:\n  {axis}:\n    - {good}\n    - {bad}\n")
    assert (err.line, err.field) == (12, f"matrix.{axis}[1]")
    assert words in err.reason, err.reason
    err = error_of(tmp_path, BLOCK + f"{axis}: {bad}\n")
    assert (err.line, err.field) == (9, axis) and words in err.reason, err.reason


def test_file_size_is_bounded_and_never_read_further(tmp_path: Path) -> None:
    big = write(tmp_path, "name: t\n" + WL + "# " + "x" * MAX_FILE_BYTES + "\n")
    err = error_of(tmp_path, big.read_text())
    assert err.line == 3 and "larger than the limit of 256 KiB" in err.reason
    start = time.process_time()
    with pytest.raises(ScenarioError) as exc:
        load_scenario("/dev/zero")  # endless: only the limit is read
    assert time.process_time() - start < 1.0
    assert exc.value.line == 1 and "larger than the limit" in exc.value.reason


def test_node_count_is_bounded(tmp_path: Path) -> None:
    text = "name: t\n" + WL + "matrix:\n  seed: [" + ", ".join(["1"] * MAX_NODES) + "]\n"
    err = error_of(tmp_path, text)
    assert err.line == 4 and f"more than {MAX_NODES:,} YAML nodes" in err.reason
    assert err.field == "matrix.seed"


def test_nesting_below_the_bound_is_fine_and_names_the_field() -> None:
    ok = "name: t\n" + WL + "description: " + "[" * 5 + "]" * 5 + "\n"
    with pytest.raises(ScenarioError) as exc:  # valid YAML, a list is not a description
        parse_scenario(ok, "f.yaml")
    assert exc.value.field == "description" and "string" in exc.value.reason
    deep = "name: t\n" + WL + "link:\n  loss: " + "{k: " * 30 + "1" + "}" * 30 + "\n"
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(deep, "f.yaml")
    assert exc.value.line == 4 and exc.value.field.startswith("link.loss.k.k")
    assert f"nested deeper than {MAX_DEPTH} levels" in exc.value.reason


def test_encoding_line_endings_and_byte_order_mark(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_bytes(b"name: t\r\n" + WL.encode() + b"description: caf\xc3\xa9\r\n")
    assert load_scenario(p).description == "café"  # CRLF, as before
    p.write_bytes(b"name: t\rseed: 4\r" + WL.encode())
    assert load_scenario(p).seed == 4  # old Mac line ends: universal newlines, as before
    p.write_bytes("\ufeffname: t\n".encode() + WL.encode())
    assert load_scenario(p).name == "t"  # a BOM at the start is fine
    p.write_bytes(b"name: t\n" + WL.encode() + b"description: caf\xe9\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert str(exc.value) == f"{p}:3: not UTF-8: byte 0xe9 at column 17"
    p.write_bytes(b"name: t\n\xef\xbb\xbf" + WL.encode())
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert exc.value.line == 2 and "U+FEFF" in exc.value.reason


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("!!binary AAAA", "binary values (!!binary) are not allowed"),
        ("!!set {a: null}", "sets (!!set) are not allowed"),
        ('"a\\u202Eb"', "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ('"a\\rb"', "U+000D (CR)"),
        ("!!int " + "9" * 5000, "cannot read the value"),
        ("!!timestamp 2024-13-45", "cannot read the value"),
    ],
)
def test_refused_yaml_values_name_their_line(value: str, words: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(f"name: t\n{WL}description: {value}\n", "f.yaml")
    assert exc.value.line == 3 and words in exc.value.reason, str(exc.value)


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(f"name: t\n{WL}seed: {'x' * 5000}\n", "f.yaml")
    assert exc.value.field == "seed" and len(str(exc.value)) < 200
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(f"name: t\n{WL}{'k' * 500}: 1\n", "f.yaml")
    assert exc.value.reason == "unknown field" and len(exc.value.field) <= 60


def test_cell_repetitions_are_bounded_before_expansion() -> None:
    text = "name: t\nrepeat: 2\n" + WL + "matrix:\n  seed: [1, 2]\n  link.delay_ms: [1, 2]\n"
    assert parse_scenario(text, "f.yaml", max_pairs=8).repeat == 2  # 4 cells × 2 = 8
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(text, "f.yaml", max_pairs=7)
    assert (exc.value.line, exc.value.field) == (4, "matrix")
    assert "4 cells × 2 repetitions = 8 cell repetitions, more than the limit of 7" in str(
        exc.value
    )
    with pytest.raises(ScenarioError) as exc:  # lab run --repeat 3 counts 3 repetitions
        parse_scenario(text, "f.yaml", max_pairs=8, repeat=3)
    assert "4 cells × 3 repetitions" in exc.value.reason
    axes = "".join(
        f"  {a}: [{', '.join(map(str, range(1, 101)))}]\n" for a in ("seed", "link.delay_ms")
    )
    start = time.process_time()
    with pytest.raises(ScenarioError):  # 20,000 cells, refused without building one
        parse_scenario("name: t\n" + WL + "matrix:\n" + axes + "  link.jitter_ms: [1, 2]\n")
    assert time.process_time() - start < 0.5


def test_cli_max_pairs_and_repeat_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(map(str, range(MAX_PAIRS // 3 + 1)))  # one cell more than the limit
    big = write(tmp_path, f"name: t\nrepeat: 3\n{WL}matrix:\n  seed: [{values}]\n", "big.yaml")
    assert main(["validate", str(big)]) == 2
    assert capsys.readouterr().err.startswith(f"{big}:4: matrix: 3,334 cells × 3 repetitions")
    p = write(tmp_path, f"name: t\nrepeat: 1\n{WL}matrix:\n  seed: [1, 2, 3, 4]\n")
    assert main(["validate", str(p), "--max-pairs", "3"]) == 2
    assert "4 cells × 1 repetition = 4 cell repetitions" in capsys.readouterr().err
    assert main(["validate", str(p), "--max-pairs", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"{p}: ok — 4 cells × 1 repetition")
    assert main(["validate", str(p), "--max-pairs", "0"]) == 2
    assert "--max-pairs must be ≥ 1" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["run", str(p), "--yes", "--out", str(out), "--repeat", "1001"]) == 2
    assert "--repeat must be between 1 and 1,000" in capsys.readouterr().err
    assert (
        main(["run", str(p), "--yes", "--out", str(out), "--max-pairs", "4", "--repeat", "2"]) == 2
    )
    assert capsys.readouterr().err.startswith(f"{p}:4: matrix: 4 cells × 2 repetitions")
    assert main(["run", str(big), "--yes", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"{big}:4: matrix: 3,334 cells")
    assert not out.exists()
    assert f"{MAX_PAIRS:,}" in _help("run") and f"{MAX_PAIRS:,}" in _help("validate")


def _help(command: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "lab", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return " ".join(r.stdout.split())
