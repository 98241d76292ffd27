"""Loading scenario files: YAML → `Scenario`; every error is one sentence
"FILE:LINE: field: reason"."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.errors import ScenarioError
from lab.scenario.matrix import _axis_targets, _cell_docs, _related
from lab.scenario.models import Scenario
from lab.scenario.workloads import WORKLOAD_KINDS
from lab.scenario.yamlpos import LineMap, YamlError, load_yaml


def _fmt_path(parts: Sequence[Hashable]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _doc_path(doc: Any, loc: Sequence[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
    """Split a pydantic error loc into (path that exists in the document, field path to show).

    Locs contain union-member tags (e.g. "bernoulli", "function-after[…]") that are not in the
    document; they are skipped, except a last element that names a missing or unknown field."""
    found: list[Hashable] = []
    shown: list[Hashable] = []
    node = doc
    for i, el in enumerate(loc):
        in_dict = isinstance(node, dict) and el in node
        if in_dict or (isinstance(node, list) and isinstance(el, int) and 0 <= el < len(node)):
            node = node[el]
            found.append(el)
            shown.append(el)
        elif i == len(loc) - 1 and isinstance(el, str) and not _looks_like_tag(el):
            shown.append(el)
    return found, shown


def _looks_like_tag(el: str) -> bool:
    loss_models = ("none", "bernoulli", "gilbert_elliott", "drop_list")
    return "[" in el or el[:1].isupper() or el in WORKLOAD_KINDS or el in loss_models


def _reason(err: Any) -> str:
    msg: str = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag, disc, expected = ctx.get("tag"), ctx.get("discriminator"), ctx.get("expected_tags")
        msg = f"unknown {disc} {tag!r} (expected one of {expected})"
    elif kind == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif kind not in ("union_tag_invalid", "union_tag_not_found") and "input" in err:
        value = err["input"]
        if isinstance(value, str | int | float | bool) or value is None:
            msg = f"{msg} (got {value!r})"
    msg = msg.replace("\n", " ").strip().rstrip(".")
    return msg[:1].lower() + msg[1:] if not msg[:2].isupper() else msg


def _first_error(e: ValidationError, doc: Any) -> Any:
    """The most specific error: the one that reaches deepest into the document (so that for
    `reorder: {probability: 2}` the ReorderSpec error wins over "should be 'preserve'"); the
    first of equals."""
    errors = e.errors(include_url=False)
    return max(errors, key=lambda err: len(_doc_path(doc, err["loc"])[0]))


def _from_validation(
    e: ValidationError, doc: Any, lines: LineMap, filename: str, prefix: Sequence[Hashable] = ()
) -> ScenarioError:
    err = _first_error(e, doc)
    found, shown = _doc_path(doc, err["loc"])
    field = _fmt_path([*prefix, *shown]) or "scenario"
    return ScenarioError(filename, lines.line([*prefix, *found]), field, _reason(err))


def parse_scenario(text: str, filename: str = "<string>") -> Scenario:
    """Validate scenario YAML text, matrix cells included; raise `ScenarioError` (file:line)."""
    try:
        doc, lines = load_yaml(text, filename)
    except YamlError as e:
        raise ScenarioError(filename, e.line, "", e.reason) from None
    if not isinstance(doc, dict):
        raise ScenarioError(filename, lines.line(()), "scenario", "the file must be a mapping")
    both = [k for k in ("uplink", "downlink") if k in doc]
    if "link" in doc and both:
        raise ScenarioError(
            filename,
            lines.line((both[0],)),
            both[0],
            "give either link or uplink/downlink, not both",
        )
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as e:
        raise _from_validation(e, doc, lines, filename) from None
    for key in scenario.matrix:
        try:
            _axis_targets(doc, key)
        except ValueError as e:
            line = lines.line(("matrix", key))
            raise ScenarioError(filename, line, f"matrix.{key}", str(e)) from None
    for cell_doc, picks in _cell_docs(doc):
        try:
            Scenario.model_validate(cell_doc)
        except ValidationError as e:
            err = _first_error(e, cell_doc)
            found, _ = _doc_path(cell_doc, err["loc"])
            # Blame the matrix value that set this field, if one did; else the field itself.
            for key, j in reversed(picks):
                if any(_related(tuple(found), t) for t in _axis_targets(doc, key)):
                    raise ScenarioError(
                        filename,
                        lines.line(("matrix", key, j)),
                        f"matrix.{key}[{j}]",
                        f"{_fmt_path(found) or 'scenario'}: {_reason(err)}",
                    ) from None
            raise _from_validation(e, cell_doc, lines, filename) from None
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise `ScenarioError` naming FILE:LINE on bad input."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(filename, None, "", f"cannot read the file ({e})") from None
    return parse_scenario(text, filename)


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of the scenario file format (for editor completion and validation)."""
    schema = Scenario.model_json_schema()
    schema["title"] = "lab scenario"
    return schema
