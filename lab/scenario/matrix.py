"""The matrix: axis keys checked against the scenario's fields, cells as the cartesian product."""

from __future__ import annotations

import copy
import itertools
import types
import typing
from collections.abc import Hashable
from typing import Annotated, Any, Union

from pydantic import BaseModel

from lab.link.spec import DirectionSpec
from lab.scenario.models import Cell, Scenario, StackSpec
from lab.scenario.workloads import WORKLOAD_KINDS

_LINK_ROOTS = ("link", "uplink", "downlink")
_NOT_AXES = ("name", "description", "matrix", "workloads", "repeat")


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes inside a field annotation (through unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, Annotated):
        out: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            out.extend(_model_classes(arg))
        return out
    return []


def _check_field_path(root: str, classes: list[type[BaseModel]], parts: list[str]) -> None:
    """Raise ValueError when `parts` is not a chain of fields starting in one of `classes`."""
    walked = [root]
    for part in parts:
        fields = {name: f for c in classes for name, f in c.model_fields.items()}
        if not classes or part not in fields:
            known = ", ".join(sorted(fields)) or "no sub-fields"
            raise ValueError(
                f"addresses no field: {'.'.join(walked)} has no {part!r} (it has: {known})"
            )
        walked.append(part)
        classes = [
            m
            for c in classes
            if part in c.model_fields
            for m in _model_classes(c.model_fields[part].annotation)
        ]


def _axis_targets(doc: dict[str, Any], key: str) -> list[tuple[Hashable, ...]]:
    """Validate an axis key against the scenario's fields; return the document paths it sets."""
    root, *rest = key.split(".")
    if root in _LINK_ROOTS:
        if root != "link" and "link" in doc:
            raise ValueError(
                f"the scenario gives a symmetric link:, so the axis is link.{'.'.join(rest)}"
            )
        if not rest:
            raise ValueError(f"{root!r} alone is not an axis; name one of its fields")
        _check_field_path(root, [DirectionSpec], rest)
        if root == "link" and "link" not in doc:
            return [("uplink", *rest), ("downlink", *rest)]
        return [(root, *rest)]
    if root == "stack":
        if not rest:
            raise ValueError("'stack' alone is not an axis; name one of its fields")
        _check_field_path(root, [StackSpec], rest)
        return [(root, *rest)]
    if root in WORKLOAD_KINDS:
        _check_field_path(root, [WORKLOAD_KINDS[root]], rest)
        if not rest:
            raise ValueError(f"{root!r} alone is not an axis; name one of its fields")
        workloads = doc.get("workloads") or []
        idx = [i for i, w in enumerate(workloads) if isinstance(w, dict) and w.get("kind") == root]
        if not idx:
            raise ValueError(f"addresses no field: the scenario has no workload of kind {root!r}")
        return [("workloads", i, *rest) for i in idx]
    if root in Scenario.model_fields and root not in _NOT_AXES and not rest:
        return [(root,)]
    kinds = ", ".join(WORKLOAD_KINDS)
    raise ValueError(
        f"addresses no field: an axis starts with link, uplink, downlink, stack, seed, "
        f"protocols, server, client, address_family or a workload kind ({kinds})"
    )


def _set_path(doc: dict[str, Any], path: tuple[Hashable, ...], value: Any) -> None:
    node: Any = doc
    for el in path[:-1]:
        if isinstance(node, dict):
            if not isinstance(node.get(el), dict | list):
                node[el] = {}
            node = node[el]
        else:
            node = node[el]
    node[path[-1]] = copy.deepcopy(value)


def _cell_docs(doc: dict[str, Any]) -> list[tuple[dict[str, Any], list[tuple[str, int]]]]:
    """(cell document, [(axis, value index)]) for every cell; the doc's matrix must be valid."""
    matrix: dict[str, list[Any]] = doc.get("matrix") or {}
    axes = list(matrix)
    targets = {k: _axis_targets(doc, k) for k in axes}
    out = []
    for combo in itertools.product(*(range(len(matrix[k])) for k in axes)):
        cell = copy.deepcopy({k: v for k, v in doc.items() if k != "matrix"})
        for k, i in zip(axes, combo, strict=True):
            for path in targets[k]:
                _set_path(cell, path, matrix[k][i])
        out.append((cell, list(zip(axes, combo, strict=True))))
    return out


def _related(a: tuple[Hashable, ...], b: tuple[Hashable, ...]) -> bool:
    """True when one path is a prefix of the other (an error at or around a set field)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _cell_id(i: int, n: int) -> str:
    return f"c{i:0{max(3, len(str(n - 1)))}d}"


def expand_cells(scenario: Scenario) -> list[Cell]:
    """The cells of the matrix (one cell when there is no matrix), first axis varying slowest."""
    doc = scenario.model_dump(mode="json", exclude_none=True)
    cells = _cell_docs(doc)
    out = []
    for i, (cell_doc, picks) in enumerate(cells):
        axes = {k: scenario.matrix[k][j] for k, j in picks}
        out.append(
            Cell(
                id=_cell_id(i, len(cells)),
                index=i,
                axes=axes,
                scenario=Scenario.model_validate(cell_doc),
            )
        )
    return out


def resolved(scenario: Scenario) -> dict[str, Any]:
    """JSON-ready form for run.json: the scenario with every default filled in, the resolved
    link of both directions, and the cells (id and axis values)."""
    out = scenario.model_dump(mode="json")
    out["link_spec"] = scenario.link_spec.model_dump(mode="json")
    out["cells"] = [{"id": c.id, "axes": c.axes} for c in expand_cells(scenario)]
    return out
