"""Loading scenario files: YAML → `Scenario`; every error is one sentence
"FILE:LINE: field: reason"."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.errors import ScenarioError
from lab.link.spec import LOSS_MODELS
from lab.scenario.limits import MAX_FILE_BYTES, MAX_PAIRS
from lab.scenario.matrix import _axis_targets, _cell_docs, _related
from lab.scenario.models import Scenario
from lab.scenario.workloads import WORKLOAD_KINDS
from lab.scenario.yamlpos import LineMap, YamlError, load_yaml

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_SHOWN_CHARS = 60  # of a value or key quoted in an error message
_TOO_BIG = (
    f"the file is larger than the limit of {MAX_FILE_BYTES // 1024} KiB (a scenario is a few kB)"
)


def _short(value: Any) -> str:
    """repr() of a value for an error message: one line, at most ~60 characters."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 1] + "…"


def _fmt_path(parts: Sequence[Hashable]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]"
        else:
            name = str(p) if isinstance(p, str) and _PLAIN_KEY.match(p) else _short(p)
            out += f".{name}" if out else name
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
    return "[" in el or el[:1].isupper() or el in WORKLOAD_KINDS or el in LOSS_MODELS


def _reason(err: Any) -> str:
    msg: str = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag, disc, expected = ctx.get("tag"), ctx.get("discriminator"), ctx.get("expected_tags")
        msg = f"unknown {disc} {_short(tag)} (expected one of {expected})"
    elif kind == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif kind not in ("union_tag_invalid", "union_tag_not_found") and "input" in err:
        value = err["input"]
        if isinstance(value, str | int | float | bool) or value is None:
            msg = f"{msg} (got {_short(value)})"
    msg = " ".join(msg.split()).rstrip(".")
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


def parse_scenario(
    text: str, filename: str = "<string>", *, max_pairs: int = MAX_PAIRS, repeat: int | None = None
) -> Scenario:
    """Validate scenario YAML text, matrix cells included; raise `ScenarioError` (file:line).

    `max_pairs` bounds cells × repetitions (checked before the matrix is expanded); `repeat`,
    when given, is the repetition count the run will use instead of the file's (`--repeat`)."""
    if len(text) > MAX_FILE_BYTES:
        line = text.count("\n", 0, MAX_FILE_BYTES) + 1
        raise ScenarioError(filename, line, "", _TOO_BIG)
    try:
        doc, lines = load_yaml(text, filename)
    except YamlError as e:
        raise ScenarioError(filename, e.line, _fmt_path(e.path), e.reason) from None
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
            raise ScenarioError(filename, line, _fmt_path(("matrix", key)), str(e)) from None
    _check_pairs(scenario, repeat or scenario.repeat, max_pairs, lines, filename)
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
                        _fmt_path(("matrix", key, j)),
                        f"{_fmt_path(found) or 'scenario'}: {_reason(err)}",
                    ) from None
            raise _from_validation(e, cell_doc, lines, filename) from None
    return scenario


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _check_pairs(
    scenario: Scenario, repeat: int, max_pairs: int, lines: LineMap, filename: str
) -> None:
    """Refuse a run of more than `max_pairs` cell repetitions, counted without expanding."""
    cells = math.prod(len(values) for values in scenario.matrix.values())
    if cells * repeat > max_pairs:
        raise ScenarioError(
            filename,
            lines.line(("matrix",) if scenario.matrix else ("repeat",)),
            "matrix",
            f"{_count(cells, 'cell')} × {_count(repeat, 'repetition')} = "
            f"{_count(cells * repeat, 'cell repetition')}, more than the limit of "
            f"{max_pairs:,} (lab run --max-pairs N raises it)",
        )


def load_scenario(
    path: str | Path, *, max_pairs: int = MAX_PAIRS, repeat: int | None = None
) -> Scenario:
    """Read and validate a scenario file; raise `ScenarioError` naming FILE:LINE on bad input.
    `max_pairs` and `repeat` as for `parse_scenario`."""
    filename = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # never more: the file may be endless
    except OSError as e:
        raise ScenarioError(filename, None, "", f"cannot read the file ({e})") from None
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise ScenarioError(filename, line, "", _TOO_BIG)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ScenarioError(
            filename, line, "", f"not UTF-8: byte 0x{data[e.start]:02x} at column {column}"
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open()
    return parse_scenario(text, filename, max_pairs=max_pairs, repeat=repeat)


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of the scenario file format (for editor completion and validation)."""
    schema = Scenario.model_json_schema()
    schema["title"] = "lab scenario"
    return schema
