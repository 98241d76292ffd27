"""YAML loading that remembers where every value came from (1-based line numbers).

`load_yaml(text, filename)` returns the plain Python data (safe loader: dicts, lists, scalars)
and a `LineMap` from a path of keys/indices, e.g. ``("workloads", 0, "streams")``, to the line of
that key (mapping entries) or item (sequence entries). Syntax errors and duplicate keys raise
`YamlError` with the file's line.

Untrusted input is bounded before it can cost time or memory (limits in `lab.scenario.limits`):
control characters are refused with their line, aliases (``*name``, and so ``<<`` merges) are
refused — an alias bomb expands exponentially — and so are nesting deeper than `max_depth`,
more than `max_nodes` nodes, and binary or set values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Sequence
from typing import Any

import yaml

from lab.scenario.limits import MAX_DEPTH, MAX_NODES

Path = tuple[Hashable, ...]

# Characters a scenario may not contain: C0 controls but tab and newline (CR only before LF),
# DEL and C1 controls, YAML's extra line breaks (NEL, LS, PS), bidirectional overrides (text
# that displays differently from how it parses), lone surrogates, BOMs past the start and the
# non-characters U+FFFE/U+FFFF. A superset of what PyYAML's reader refuses.
_BAD_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_BAD_CHARS += "\ud800-\udfff\ufeff\ufffe\uffff"
_BAD_IN_TEXT = re.compile(f"[{_BAD_CHARS}]|\r(?!\n)")
_BAD_IN_VALUE = re.compile(f"[{_BAD_CHARS}\r]")
# fmt: off
_C0_NAMES = (
    "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR",
    "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB",
    "ESC", "FS", "GS", "RS", "US",
)
# fmt: on
_REFUSED_TAGS = {
    "tag:yaml.org,2002:binary": "binary values (!!binary)",
    "tag:yaml.org,2002:set": "sets (!!set)",
    "tag:yaml.org,2002:omap": "ordered maps (!!omap)",
    "tag:yaml.org,2002:pairs": "pairs (!!pairs)",
}


class YamlError(Exception):
    """A YAML file that cannot be read as data; `line` is 1-based, `path` the keys/indices of
    the offending value when known (else empty). str() is "FILE:LINE: reason"."""

    def __init__(self, filename: str, line: int, reason: str, path: Path = ()) -> None:
        super().__init__(f"{filename}:{line}: {reason}")
        self.filename = filename
        self.line = line
        self.reason = reason
        self.path = path


class LineMap:
    """Path of keys/indices → 1-based line (an unknown path uses its longest known prefix)."""

    def __init__(self, lines: dict[Path, int]) -> None:
        self._lines = lines

    def line(self, path: Sequence[Hashable]) -> int:
        """Line of `path`, or of its longest prefix that is known (line 1 for the document)."""
        p = tuple(path)
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return self._lines.get((), 1)

    def __contains__(self, path: object) -> bool:
        return path in self._lines


def char_name(c: str) -> str:
    """'U+0007 (BEL)': a character's code point and name, for error messages."""
    code = ord(c)
    name = _C0_NAMES[code] if code < 0x20 else "DEL" if code == 0x7F else unicodedata.name(c, "")
    return f"U+{code:04X} ({name})" if name else f"U+{code:04X}"


def find_bad_char(text: str) -> tuple[int, int, str] | None:
    """(line, column, character) of the first character a scenario may not contain, 1-based;
    None when there is none. A byte-order mark is allowed as the very first character."""
    m = _BAD_IN_TEXT.search(text, 1 if text.startswith("\ufeff") else 0)
    if m is None:
        return None
    line_start = text.rfind("\n", 0, m.start()) + 1
    return text.count("\n", 0, m.start()) + 1, m.start() - line_start + 1, m.group()[0]


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases and bounding nesting depth and node count."""

    def __init__(self, text: str, filename: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(text)
        self._filename = filename
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._nodes = 0
        self._path: list[Hashable] = []  # key/index of every node being composed; None = a key

    def _refuse(self, event: yaml.Event, reason: str) -> YamlError:
        path = tuple(p for p in self._path if p is not None)
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        return YamlError(self._filename, line, reason, path)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(
                event, f"YAML aliases are not allowed (*{event.anchor}); write the value out"
            )
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise self._refuse(event, f"more than {self._max_nodes:,} YAML nodes in the file")
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection and len(self._path) >= self._max_depth:
            raise self._refuse(event, f"nested deeper than {self._max_depth} levels")
        # a mapping value: its key; a sequence item: its index; else (the root, a mapping key,
        # the value of a complex key) nothing to show
        element: Hashable = None
        if isinstance(index, yaml.ScalarNode):
            element = index.value
        elif isinstance(index, int):
            element = index
        self._path.append(element)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path.pop()
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:  # e.g. an int of 5,000 digits, a bad date
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value ({e})", node.start_mark
            ) from None


def _check_node(node: yaml.Node, path: Path, fn: str) -> None:
    """Refuse binary and set values, and control characters in a scalar (written as escapes)."""
    line = node.start_mark.line + 1
    if node.tag in _REFUSED_TAGS:
        raise YamlError(fn, line, f"{_REFUSED_TAGS[node.tag]} are not allowed", path)
    m = _BAD_IN_VALUE.search(node.value) if isinstance(node, yaml.ScalarNode) else None
    if m is not None:
        raise YamlError(fn, line, f"control character {char_name(m.group())} in the value", path)


def _walk(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int], fn: str
) -> None:
    _check_node(node, path, fn)
    if isinstance(node, yaml.MappingNode):
        seen: set[Hashable] = set()
        for k_node, v_node in node.value:
            _check_node(k_node, path, fn)
            key = loader.construct_object(k_node, deep=True)
            if not isinstance(key, Hashable):
                raise YamlError(fn, k_node.start_mark.line + 1, "a mapping key must be a scalar")
            if key in seen:
                raise YamlError(fn, k_node.start_mark.line + 1, f"duplicate key {key!r}")
            seen.add(key)
            lines[(*path, key)] = k_node.start_mark.line + 1
            _walk(loader, v_node, (*path, key), lines, fn)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(loader, item, (*path, i), lines, fn)


def load_yaml(
    text: str,
    filename: str = "<string>",
    *,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> tuple[Any, LineMap]:
    """Parse one YAML document; return (data, line map). Raises `YamlError` with file:line."""
    bad = find_bad_char(text)
    if bad is not None:
        line, column, c = bad
        raise YamlError(
            filename,
            line,
            f"control character {char_name(c)} at column {column}; "
            "only tab and newline may appear (and CR before a newline)",
        )
    loader = _BoundedLoader(text, filename, max_depth, max_nodes)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap({(): 1})
        lines: dict[Path, int] = {(): node.start_mark.line + 1}
        _walk(loader, node, (), lines, filename)  # before constructing: it checks tags too
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join((e.problem or e.context or "invalid YAML").split())
        kind = (
            "YAML error"
            if isinstance(e, yaml.constructor.ConstructorError)
            else "YAML syntax error"
        )
        raise YamlError(filename, line, f"{kind}: {reason}") from None
    except yaml.YAMLError as e:
        line = _line_of_position(text, getattr(e, "position", None))
        raise YamlError(filename, line, f"YAML error: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()
    return data, LineMap(lines)


def _line_of_position(text: str, position: int | None) -> int:
    return 1 if position is None else text.count("\n", 0, position) + 1
