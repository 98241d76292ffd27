"""The shape of `lab/`: one package per stage, no import cycles, arrows pointing down.

Imports are read with `ast` (function-level imports count too), so a cycle hidden inside a
function is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "lab"

# Layer of each top-level part of lab/: a module may import only parts of a strictly lower
# layer (or its own package). DESIGN.md: cli → run → workloads/http/link/net → results/evidence.
LAYERS: dict[str, int] = {
    "errors": 0,
    "results": 1,
    "net": 2,
    "link": 3,
    "scenario": 4,
    "http": 4,
    "peers": 5,
    "workloads": 5,
    "evidence": 5,
    "run": 6,
    "calibrate": 7,
    "doctor": 7,
    "k8s": 7,
    "conform": 7,  # may start servers in the lab's namespaces through lab.run / lab.net
    "cli": 8,
    "vm": 7,  # runs `lab …` inside a user-mode-linux guest, as a process (the CLI calls it)
    "__main__": 9,
}
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "cli.py", "doctor.py", "errors.py"}


def module_name(path: Path, root: Path = LAB) -> str:
    """`lab/run/agent.py` → `lab.run.agent`; `lab/run/__init__.py` → `lab.run`."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = LAB) -> dict[str, set[str]]:
    """Module → the lab modules it imports anywhere in its body (`from pkg import mod` counts as
    an import of `pkg.mod` when that is a module)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def part_of(module: str) -> str:
    """`lab.run.agent` → `run`; `lab.cli` → `cli`."""
    return module.split(".")[1]


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports from one part of lab/ into a part of the same or a higher layer."""
    bad = []
    for src, deps in graph.items():
        if src == "lab":
            continue
        for dst in deps:
            a, b = part_of(src), part_of(dst)
            if a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{src} → {dst} ({a} layer {LAYERS[a]}, {b} layer {LAYERS[b]})")
    return sorted(bad)


# --- the checkers themselves can fail -------------------------------------------------------
def test_find_cycles_reports_a_cycle_and_only_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "lab"
    (pkg / "x").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x" / "__init__.py").write_text("")
    (pkg / "x" / "a.py").write_text("def f():\n    from lab.x import b\n")
    (pkg / "x" / "b.py").write_text("from lab.x.a import f\n")
    graph = import_graph(pkg)
    assert graph["lab.x.a"] == {"lab.x.b"} and graph["lab.x.b"] == {"lab.x.a"}
    assert find_cycles(graph) == [["lab.x.a", "lab.x.b"]]


def test_upward_imports_are_reported() -> None:
    graph = {"lab.net.topology": {"lab.run.lifecycle"}, "lab.run.runner": {"lab.net.topology"}}
    assert upward_imports(graph) == [
        "lab.net.topology → lab.run.lifecycle (net layer 2, run layer 6)"
    ]


# --- the tree -------------------------------------------------------------------------------
def test_no_import_cycles() -> None:
    assert find_cycles(import_graph()) == []


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    unknown = sorted({part_of(m) for m in graph if m != "lab"} - set(LAYERS))
    assert not unknown, f"give these parts of lab/ a layer in LAYERS: {unknown}"
    assert upward_imports(graph) == []


def test_top_level_keeps_only_the_entry_points() -> None:
    modules = {p.name for p in LAB.glob("*.py")}
    assert modules == TOP_LEVEL_MODULES


@pytest.mark.parametrize("path", sorted(LAB.rglob("*.py")), ids=lambda p: module_name(p))
def test_deferred_imports_say_why(path: Path) -> None:
    """A function-level import saves start-up time or it belongs at the top; each says which.
    (cli.py defers every layer into its handlers, as its docstring says.)"""
    if path.name == "cli.py":
        return
    lines = path.read_text().splitlines()
    silent = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    text = " ".join(lines[sub.lineno - 1 : (sub.end_lineno or sub.lineno)])
                    if "# deferred:" not in text:
                        silent.append(f"{path.name}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    assert not silent, "function-level imports without '# deferred: <reason>':\n" + "\n".join(
        silent
    )
