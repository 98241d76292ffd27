"""`lab conform --link LINK.yaml`: a file with `link:` (both directions) or `uplink:` /
`downlink:`, written as in a scenario (docs/scenarios.md); errors name FILE:LINE."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from lab.errors import ScenarioError
from lab.link.spec import DirectionSpec, LinkSpec, StrictModel
from lab.scenario.yamlpos import YamlError, load_yaml

MAX_LINK_FILE_BYTES = 64 * 1024


class LinkFile(StrictModel):
    """The link of a conformance run (the scenario's link fields, nothing else)."""

    link: DirectionSpec | None = None
    uplink: DirectionSpec | None = None
    downlink: DirectionSpec | None = None

    @model_validator(mode="after")
    def _one_form(self) -> LinkFile:
        if self.link is not None and (self.uplink is not None or self.downlink is not None):
            raise ValueError("give either link (both directions) or uplink/downlink, not both")
        if self.link is None and self.uplink is None and self.downlink is None:
            raise ValueError("give link, or uplink and/or downlink")
        return self

    @property
    def spec(self) -> LinkSpec:
        if self.link is not None:
            return LinkSpec(uplink=self.link, downlink=self.link)
        return LinkSpec(
            uplink=self.uplink or DirectionSpec(), downlink=self.downlink or DirectionSpec()
        )


def _child(node: Any, key: Hashable) -> tuple[bool, Any]:
    """(True, node[key]) when the document has that child, else (False, None)."""
    if isinstance(node, dict) and key in node:
        return True, node[key]
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return True, node[key]
    return False, None


def _deepest(doc: Any, loc: Sequence[Hashable]) -> list[Hashable]:
    """The path of a pydantic error location's elements that exist in the document."""
    found: list[Hashable] = []
    node = doc
    for el in loc:
        ok, child = _child(node, el)
        if ok:
            node = child
            found.append(el)
    return found


def parse_link(text: str, filename: str = "<string>") -> LinkSpec:
    """The LinkSpec of a link file's text; ScenarioError (FILE:LINE: field: reason) otherwise."""
    try:
        doc, lines = load_yaml(text, filename)
    except YamlError as e:
        raise ScenarioError(filename, e.line, "", e.reason) from None
    if not isinstance(doc, dict):
        raise ScenarioError(filename, 1, "", "the file must be a mapping with link: or uplink:")
    try:
        return LinkFile.model_validate(doc).spec
    except ValidationError as e:
        err = max(e.errors(include_url=False), key=lambda x: len(_deepest(doc, x["loc"])))
        path = _deepest(doc, err["loc"])
        field = ".".join(str(p) for p in path) or "link"
        reason = err["msg"].removeprefix("Value error, ")
        raise ScenarioError(filename, lines.line(path), field, reason) from None


def load_link(path: str | Path) -> LinkSpec:
    """Read and parse a link file (at most 64 KiB)."""
    try:
        data = Path(path).read_bytes()[: MAX_LINK_FILE_BYTES + 1]
    except OSError as e:
        raise ScenarioError(str(path), None, "", f"cannot read the file ({e})") from None
    if len(data) > MAX_LINK_FILE_BYTES:
        raise ScenarioError(str(path), None, "", "larger than 64 KiB (a link file is a few lines)")
    try:
        return parse_link(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise ScenarioError(str(path), None, "", f"not UTF-8 ({e.reason})") from None
