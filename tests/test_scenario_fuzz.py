"""Fuzzing the scenario loader: whatever the input, `parse_scenario` returns a `Scenario` or raises
`ScenarioError` ("FILE:LINE: …", one line) — never another exception — in bounded time and memory.

Inputs are the shipped scenarios (scenarios/*.yaml) mutated: values replaced by random scalars
(huge, negative, inf, nan, strings), lists and nested maps; keys deleted or duplicated; control
characters, YAML aliases, deep nesting and big matrices inserted; plus raw bytes. The suite runs
a fixed (derandomized) set; `LAB_FUZZ=long` explores new random examples, many more of them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import tracemalloc
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labrun import run_lab_limited

from lab.errors import ScenarioError
from lab.scenario.load import load_scenario, parse_scenario
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.models import Scenario

ROOT = Path(__file__).resolve().parent.parent
FILENAME = "fuzz.yaml"
CPU_LIMIT_S = 1.0  # CPU seconds per input: an answer within a second
# Hypothesis' deadline is wall time, on a shared box: it catches a hang, CPU_LIMIT_S the rest.
DEADLINE_MS = 5_000
MEMORY_LIMIT_BYTES = 64 * 2**20  # peak Python allocations of one parse
CLI_MEMORY_LIMIT_BYTES = 2 * 2**30  # address space of a `lab validate` process
CLI_CPU_LIMIT_S = 2.0  # CPU seconds of a `lab validate` process, start-up included

settings.register_profile(
    "suite",
    derandomize=True,
    max_examples=300,
    deadline=DEADLINE_MS,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=DEADLINE_MS,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("long" if os.environ.get("LAB_FUZZ") == "long" else "suite")


def _shipped() -> list[tuple[str, Any]]:
    """(text, data) of every shipped file that is a valid scenario (thresholds files are not)."""
    out = []
    for p in sorted((ROOT / "scenarios").glob("*.yaml")):
        text = p.read_text(encoding="utf-8")
        try:
            parse_scenario(text, p.name)
        except ScenarioError:
            continue
        out.append((text, yaml.safe_load(text)))
    return out


SHIPPED = _shipped()


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {str(k) for k in node} | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


KNOWN_KEYS = sorted(set().union(*(_keys(d) for _, d in SHIPPED)) | set(Scenario.model_fields))

# Scalars a scenario value can become: edge numbers, strings (with control characters), names.
INF, NAN = float("inf"), float("nan")
edge_numbers = st.sampled_from(
    [0, -1, 1, 2**31, 2**63, 2**64, 10**18, 10**30, -(10**30), 1e-300, 1e300, -0.0, 0.5, 1.5,
     INF, -INF, NAN]
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    edge_numbers,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), min_size=60, max_size=400),
    st.sampled_from(["reference", "caddy", "nginx", "h2", "h3", "bernoulli", "watch", "bulk"]),
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
control_chars = st.sampled_from(
    [chr(c) for c in range(0x20) if c not in (0x09, 0x0A)]
    + ["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ufeff", "\ufffe", "\ud800"]
)


def _paths(node: Any, prefix: tuple[Hashable, ...] = ()) -> list[tuple[Hashable, ...]]:
    """Every path of keys/indices in a YAML data tree, the root `()` first."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _get(node: Any, path: tuple[Hashable, ...]) -> Any:
    for el in path:
        node = node[el]
    return node


@st.composite
def mutated_tree(draw: st.DrawFn) -> Any:
    """A shipped scenario's data with 1–3 values replaced, deleted or added."""
    doc = copy.deepcopy(draw(st.sampled_from(SHIPPED))[1])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "nest", "matrix"]))
        if not path or op == "add":
            parent = _get(doc, path)
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(KNOWN_KEYS))] = draw(values)
            elif isinstance(parent, list):
                parent.append(draw(values))
            continue
        parent, last = _get(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif op == "nest":  # wrap the value in many lists or maps
            depth = draw(st.integers(10, 300))
            wrapped = parent[last]
            for _ in range(depth):
                wrapped = [wrapped] if draw(st.booleans()) else {"k": wrapped}
            parent[last] = wrapped
        elif isinstance(doc, dict):  # a matrix of many axes with many values
            axes = draw(st.lists(st.sampled_from(["seed", "protocols", "server"]), max_size=3))
            n = draw(st.integers(1, 200))
            doc["matrix"] = {a: list(range(n)) for a in axes} or {"seed": list(range(n))}
    return doc


def _dump(doc: Any, flow: bool | None) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=flow)


SNIPPETS = [
    "&a ",
    "*a",
    "<<: *a\n",
    "x: &a [1, 2]\ny: [*a, *a, *a]\n",
    "[" * 200,
    "{" * 200,
    "- " * 100,
    "!!python/object/apply:os.system ['true']",
    "%YAML 1.1\n---\n",
    "---\n",
    "\t",
    ": ",
    "? ",
    "!!binary AAAA",
    "'",
    '"\\x00"',
    "1e9",
    ".inf",
    "-.inf",
    ".nan",
    "0x7fffffffffffffff",
    "9" * 400,
]


def _alias_bomb(levels: int, fanout: int) -> str:
    lines = [f"b0: &b0 [{', '.join(['x'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """A mutated scenario as YAML text: tree mutations, then line and character edits."""
    if draw(st.booleans()):
        text = _dump(draw(mutated_tree()), draw(st.sampled_from([None, False, True])))
    else:
        text = draw(st.sampled_from(SHIPPED))[0]
    for _ in range(draw(st.integers(0, 3))):
        lines = text.splitlines(keepends=True) or [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["dup_line", "del_line", "char", "snippet", "bomb", "cut"]))
        if op == "dup_line":  # a duplicate key, mostly
            lines.insert(i, lines[i])
        elif op == "del_line":
            del lines[i]
        elif op == "char":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(control_chars) + lines[i][j:]
        elif op == "snippet":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(st.sampled_from(SNIPPETS)) + lines[i][j:]
        elif op == "bomb":
            lines.append(_alias_bomb(draw(st.integers(2, 9)), draw(st.integers(2, 9))))
        else:
            lines = lines[: i + 1]
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        text = "".join(lines)
    return text


def _line_count(text: str) -> int:
    """Lines as YAML counts them (its line breaks: \\r\\n, \\r, \\n, NEL, LS, PS)."""
    return len(re.split("\r\n|[\r\n\x85\u2028\u2029]", text))


def check_one(text: str) -> None:
    """The property: a Scenario (that expands and serialises) or a one-line ScenarioError
    naming the file and a line of it; within the time and memory bounds."""
    tracemalloc.start()
    start = time.process_time()
    try:
        scenario = parse_scenario(text, FILENAME)
    except ScenarioError as e:
        message = str(e)
        assert "\n" not in message, message
        assert e.line is not None, message
        assert message.startswith(f"{FILENAME}:{e.line}: "), message
        assert 1 <= e.line <= _line_count(text), message
    else:
        cells = expand_cells(scenario)
        assert len(cells) >= 1
        json.dumps(resolved(scenario), allow_nan=False)  # run.json must be plain JSON
    finally:
        cpu_s = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT_BYTES, f"peak {peak / 2**20:.0f} MiB"
    assert cpu_s < CPU_LIMIT_S, f"{cpu_s:.2f} s of CPU"


@PROFILE
@given(mutated_text())
def test_mutated_scenarios_give_a_scenario_or_one_line_error(text: str) -> None:
    check_one(text)


@PROFILE
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(["[", "]", "{", "}", ":", "-", " ", "\n", "&a ", "*a", "a", "1", "'"])
        ).map("".join),
    )
)
def test_random_text_gives_a_scenario_or_one_line_error(text: str) -> None:
    check_one(text)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the files of every example (module scope: hypothesis reruns tests)."""
    return tmp_path_factory.mktemp("fuzz")


@settings(PROFILE, max_examples=100)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.sampled_from(SHIPPED), st.binary(min_size=1, max_size=4)).map(
            lambda t: t[0][0].encode()[:200] + t[1] + t[0][0].encode()[200:]
        ),
    )
)
def test_raw_bytes_give_a_scenario_or_one_line_error(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / FILENAME
    path.write_bytes(data)
    try:
        load_scenario(path)
    except ScenarioError as e:
        message = str(e)
        assert "\n" not in message
        assert e.line is not None and message.startswith(f"{path}:{e.line}: "), message


@settings(PROFILE, max_examples=6, deadline=None)
@given(mutated_text())
def test_cli_validate_on_mutated_scenarios(fuzz_dir: Path, text: str) -> None:
    """`lab validate` in a memory-limited process: exit 0, or 2 with one stderr line FILE:LINE:,
    within ~2 s of CPU (start-up included)."""
    path = fuzz_dir / "cli.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    r, cpu_s = run_lab_limited("validate", str(path), memory_bytes=CLI_MEMORY_LIMIT_BYTES)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 2), r.stderr
    if r.returncode == 2:
        assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert re.match(rf"{re.escape(str(path))}:\d+: ", r.stderr), r.stderr
    assert cpu_s < CLI_CPU_LIMIT_S, f"{cpu_s:.2f} s of CPU"
