"""Scenario files: YAML → typed, validated models. Pure data, no I/O beyond reading the file.

Units are in field names (`delay_ms`, `rate_mbit`). A link is given per direction:
uplink = client → server, downlink = server → client; `link:` is the symmetric shorthand.

`load_scenario(path)` reads and validates a file; any bad value raises `ScenarioError`, whose text
is one sentence "FILE:LINE: field.path: reason". `expand_cells(scenario)` turns the matrix into
cells (cartesian product of the axes; repetitions are the runner's job). docs/scenarios.md is the
user-facing description of the format.
"""

from __future__ import annotations

import copy
import itertools
import types
import typing
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.yamlpos import LineMap, YamlError, load_yaml

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- loss models --------------------------------------------------------------------------
class NoLoss(_Strict):
    """No random loss."""

    model: Literal["none"] = "none"


class BernoulliLoss(_Strict):
    """Independent loss: each packet is dropped with probability `rate`."""

    model: Literal["bernoulli"]
    rate: Probability


class GilbertElliottLoss(_Strict):
    """Two-state burst loss with netem's `loss gemodel p r 1-h 1-k` meaning.

    p: P(good → bad) per packet; r: P(bad → good) per packet;
    h: P(packet delivered | bad state); k: P(packet delivered | good state).
    Mean loss = (1-k)·r/(p+r) + (1-h)·p/(p+r).
    """

    model: Literal["gilbert_elliott"]
    p: Probability
    r: Probability = 1.0
    h: Probability = 0.0
    k: Probability = 1.0

    @model_validator(mode="after")
    def _reachable(self) -> GilbertElliottLoss:
        if self.p + self.r == 0:
            raise ValueError("p and r cannot both be 0")
        return self

    @property
    def mean_loss(self) -> float:
        """Stationary loss probability."""
        bad = self.p / (self.p + self.r)
        return (1 - self.k) * (1 - bad) + (1 - self.h) * bad


class DropListLoss(_Strict):
    """Drop exactly these packets, by 0-based index of the packets entering this direction."""

    model: Literal["drop_list"]
    packets: list[Annotated[int, Field(ge=0)]]


LossSpec = Annotated[
    NoLoss | BernoulliLoss | GilbertElliottLoss | DropListLoss, Field(discriminator="model")
]


# --- queue --------------------------------------------------------------------------------
class QueueSpec(_Strict):
    """Drop-tail queue limit in front of the rate limiter: exactly one of the three."""

    packets: Annotated[int, Field(gt=0)] | None = None
    bytes: Annotated[int, Field(gt=0)] | None = None
    bdp: Annotated[float, Field(gt=0)] | None = None  # multiple of rate × base RTT

    @model_validator(mode="after")
    def _exactly_one(self) -> QueueSpec:
        given = [k for k in ("packets", "bytes", "bdp") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("queue takes exactly one of packets, bytes or bdp")
        return self


# --- reordering ---------------------------------------------------------------------------
class ReorderSpec(_Strict):
    """netem's `reorder P [CORR] gap G`: with gap G, every G-th packet is sent without delay
    with probability `probability` (so it overtakes the delayed ones); gap 1 = any packet."""

    probability: Probability
    gap: Annotated[int, Field(ge=1)] = 1
    correlation: Probability = 0.0


# --- one direction ------------------------------------------------------------------------
class DirectionSpec(_Strict):
    """The impairment of one direction of the link."""

    delay_ms: Annotated[float, Field(ge=0)] = 0.0  # one way
    jitter_ms: Annotated[float, Field(ge=0)] = 0.0
    jitter_distribution: Literal["uniform", "normal", "pareto"] = "uniform"
    # "preserve": jitter never reorders (a packet never leaves before the one ahead of it);
    # "allow": jitter may reorder; a mapping: explicit netem-style reordering (implies allow).
    reorder: Literal["preserve", "allow"] | ReorderSpec = "preserve"
    loss: LossSpec = NoLoss()
    rate_mbit: Annotated[float, Field(gt=0)] | None = None  # None = unlimited
    queue: QueueSpec | None = None  # None = 1000 packets (netem's default limit)
    duplicate: Probability = 0.0

    @model_validator(mode="after")
    def _bdp_needs_rate(self) -> DirectionSpec:
        if self.queue is not None and self.queue.bdp is not None and self.rate_mbit is None:
            raise ValueError("queue: {bdp: …} needs rate_mbit (the BDP is rate × base RTT)")
        return self

    @property
    def reorder_allowed(self) -> bool:
        """True when packets may leave in a different order than they arrived."""
        return self.reorder != "preserve"


DEFAULT_QUEUE_PACKETS = 1000


class LinkSpec(_Strict):
    """Both directions of the link between client and server."""

    uplink: DirectionSpec = DirectionSpec()
    downlink: DirectionSpec = DirectionSpec()

    @property
    def base_rtt_ms(self) -> float:
        """Configured two-way propagation delay: uplink delay + downlink delay."""
        return self.uplink.delay_ms + self.downlink.delay_ms

    def queue_limit(
        self, direction: Literal["uplink", "downlink"]
    ) -> tuple[int | None, int | None]:
        """(packet limit, byte limit) of that direction's queue; one of them is None."""
        spec: DirectionSpec = getattr(self, direction)
        q = spec.queue
        if q is None:
            return DEFAULT_QUEUE_PACKETS, None
        if q.packets is not None:
            return q.packets, None
        if q.bytes is not None:
            return None, q.bytes
        assert q.bdp is not None and spec.rate_mbit is not None
        bdp_bytes = spec.rate_mbit * 1e6 / 8 * self.base_rtt_ms / 1e3
        return None, max(int(q.bdp * bdp_bytes), 1500)


# --- workloads ----------------------------------------------------------------------------
# Parameters only (pure data); the workload modules in lab/workloads/ import these.
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]

HandshakeMode = Literal["cold", "resumed", "zero_rtt"]


class WatchParams(_Strict):
    """N watch streams on one connection; the server sends an event on each every interval."""

    kind: Literal["watch"]
    streams: PositiveInt = 16
    interval_ms: PositiveFloat = 20.0
    duration_s: PositiveFloat = 10.0
    stall_threshold_rtt: PositiveFloat = 0.5  # stalled when excess > this × base RTT
    # Start stream i at i × interval / N so that events of different streams never share a
    # packet: one lost packet then carries one stream's event, whatever the stack's packing.
    stagger: bool = True


class HandshakeParams(_Strict):
    """New connections per mode, each fetching one small response; measures TTFB."""

    kind: Literal["handshake"]
    modes: Annotated[list[HandshakeMode], Field(min_length=1)] = ["cold", "resumed", "zero_rtt"]
    connections: PositiveInt = 20
    response_bytes: NonNegativeInt = 100

    @model_validator(mode="after")
    def _unique_modes(self) -> HandshakeParams:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes must not repeat")
        return self


class BulkParams(_Strict):
    """One large download."""

    kind: Literal["bulk"]
    bytes: PositiveInt = 10_000_000


class MultiplexParams(_Strict):
    """`objects` responses of `object_bytes` each, requested in parallel on one connection."""

    kind: Literal["multiplex"]
    objects: PositiveInt = 50
    object_bytes: NonNegativeInt = 20_000


class RpcUnderLoadParams(_Strict):
    """A small GET every `interval_ms` beside a bulk download on the same connection."""

    kind: Literal["rpc_under_load"]
    interval_ms: PositiveFloat = 20.0
    rpc_bytes: NonNegativeInt = 1_000
    bulk_bytes: PositiveInt = 5_000_000


class K8sMixParams(_Strict):
    """An apiserver-like mix on one connection: small GETs, paginated LISTs and watches."""

    kind: Literal["k8s_mix"]
    gets: NonNegativeInt = 200  # GETs of one object each
    get_bytes: NonNegativeInt = 2_000  # size of one object
    list_pages: NonNegativeInt = 5  # LIST requests, one page each (continue token)
    list_limit: PositiveInt = 100  # objects per LIST page
    watches: NonNegativeInt = 10  # concurrent watch streams
    watch_interval_ms: PositiveFloat = 100.0  # events per watch stream
    duration_s: PositiveFloat = 10.0
    max_concurrent_streams: PositiveInt = 100  # the apiserver's default stream cap


Workload = Annotated[
    WatchParams
    | HandshakeParams
    | BulkParams
    | MultiplexParams
    | RpcUnderLoadParams
    | K8sMixParams,
    Field(discriminator="kind"),
]

WORKLOAD_KINDS: dict[str, type[BaseModel]] = {
    "watch": WatchParams,
    "handshake": HandshakeParams,
    "bulk": BulkParams,
    "multiplex": MultiplexParams,
    "rpc_under_load": RpcUnderLoadParams,
    "k8s_mix": K8sMixParams,
}

Protocol = Literal["h2", "h3"]


# --- stack settings -----------------------------------------------------------------------
class StackSpec(_Strict):
    """Settings of the reference server and of the lab's clients (both ends alike).

    The defaults are today's behaviour. `lab run --quic-engine` overrides `quic_engine`.
    External servers (caddy) keep their own defaults; only the lab's clients follow these.
    """

    tcp_congestion: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")] = "cubic"  # TCP_CONGESTION
    quic_congestion_control: Literal["reno", "cubic"] = "cubic"
    # TCP_NOTSENT_LOWAT of h2 sockets; None = the kernel's default (unbounded, as Go's net/http2)
    tcp_notsent_lowat_bytes: NonNegativeInt | None = None
    max_concurrent_streams: PositiveInt = 100  # h2 SETTINGS and QUIC max streams
    quic_engine: Literal["aioquic", "qh3"] = "aioquic"


# --- the scenario -------------------------------------------------------------------------
class Scenario(_Strict):
    """A scenario file: the link, the server, the workloads and the matrix of cells."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    seed: NonNegativeInt = 0  # every random draw of the run derives from it
    repeat: PositiveInt = 3  # repetitions of every cell
    link: DirectionSpec | None = None  # both directions alike; or uplink/downlink
    uplink: DirectionSpec | None = None  # client → server
    downlink: DirectionSpec | None = None  # server → client
    protocols: Annotated[list[Protocol], Field(min_length=1)] = ["h2", "h3"]
    server: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "reference"
    workloads: Annotated[list[Workload], Field(min_length=1)]
    stack: StackSpec = StackSpec()  # stack settings (congestion control, TCP_NOTSENT_LOWAT, …)
    # axis (dotted field path) → values; cells are the cartesian product, first axis slowest
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}

    @model_validator(mode="after")
    def _one_link_form(self) -> Scenario:
        if self.link is not None and (self.uplink is not None or self.downlink is not None):
            raise ValueError("give either link (both directions) or uplink/downlink, not both")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError("protocols must not repeat")
        return self

    @property
    def link_spec(self) -> LinkSpec:
        """The resolved link: `link` for both directions, or uplink/downlink (missing = none)."""
        if self.link is not None:
            return LinkSpec(uplink=self.link, downlink=self.link)
        return LinkSpec(
            uplink=self.uplink or DirectionSpec(), downlink=self.downlink or DirectionSpec()
        )

    def resolved(self) -> dict[str, Any]:
        """JSON-ready form for run.json: the scenario with every default filled in, the resolved
        link of both directions, and the cells (id and axis values)."""
        out = self.model_dump(mode="json")
        out["link_spec"] = self.link_spec.model_dump(mode="json")
        out["cells"] = [{"id": c.id, "axes": c.axes} for c in expand_cells(self)]
        return out


class Cell(BaseModel):
    """One point of the matrix: its axis values and the scenario they resolve to."""

    model_config = ConfigDict(frozen=True)

    id: str  # "c000", "c001", … in expansion order; stable for a given scenario file
    index: int
    axes: dict[str, Any]  # axis → value, e.g. {"link.loss.rate": 0.01}
    scenario: Scenario  # the scenario with this cell's values applied (and no matrix)

    @property
    def link(self) -> LinkSpec:
        """The cell's resolved link, both directions."""
        return self.scenario.link_spec

    @property
    def workloads(self) -> list[Workload]:
        """The cell's workloads with the axis values applied."""
        return self.scenario.workloads

    def seed(self, repetition: int) -> int:
        """A 64-bit seed for this cell and repetition, derived from the scenario's seed."""
        ss = np.random.SeedSequence([self.scenario.seed, self.index, repetition])
        return int(ss.generate_state(1, np.uint64)[0])


# --- errors -------------------------------------------------------------------------------
class ScenarioError(ValueError):
    """An invalid scenario; str() is one sentence "FILE:LINE: field.path: reason"."""

    def __init__(self, filename: str, line: int | None, field: str, reason: str) -> None:
        self.filename = filename
        self.line = line
        self.field = field
        self.reason = reason
        where = filename if line is None else f"{filename}:{line}"
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


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


# --- matrix -------------------------------------------------------------------------------
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
        f"protocols, server or a workload kind ({kinds})"
    )


def _set_path(doc: dict[str, Any], path: tuple[Hashable, ...], value: Any) -> None:
    node: Any = doc
    for el in path[:-1]:
        if isinstance(node, dict):
            if not isinstance(node.get(el), dict | list):
                node[el] = {}
            node = node[el]
        else:
            node = node[el]  # type: ignore[index]
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


# --- loading ------------------------------------------------------------------------------
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
