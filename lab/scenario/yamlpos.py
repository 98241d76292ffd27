"""YAML loading that remembers where every value came from (1-based line numbers).

`load_yaml(text, filename)` returns the plain Python data (safe loader: dicts, lists, scalars)
and a `LineMap` from a path of keys/indices, e.g. ``("workloads", 0, "streams")``, to the line of
that key (mapping entries) or item (sequence entries). Syntax errors and duplicate keys raise
`YamlError` with the file's line.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import yaml

Path = tuple[Hashable, ...]


class YamlError(Exception):
    """A YAML file that cannot be read as data; `line` is 1-based."""

    def __init__(self, filename: str, line: int, reason: str) -> None:
        super().__init__(f"{filename}:{line}: {reason}")
        self.filename = filename
        self.line = line
        self.reason = reason


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


def _walk(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int], fn: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Hashable] = set()
        for k_node, v_node in node.value:
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


def load_yaml(text: str, filename: str = "<string>") -> tuple[Any, LineMap]:
    """Parse one YAML document; return (data, line map). Raises `YamlError` with file:line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap({(): 1})
        data = loader.construct_document(node)
        lines: dict[Path, int] = {(): node.start_mark.line + 1}
        _walk(loader, node, (), lines, filename)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = (e.problem or e.context or "invalid YAML").strip()
        raise YamlError(filename, line, f"YAML syntax error: {reason}") from None
    except yaml.YAMLError as e:
        raise YamlError(filename, 1, f"YAML error: {e}") from None
    finally:
        loader.dispose()
    return data, LineMap(lines)
