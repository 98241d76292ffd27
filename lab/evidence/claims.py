"""The KEP's claims, answered first: for each claim the verdicts that speak to it, the condition
they were measured in, and every confound that applies.

Claims (KEP-3156's, then what the lab adds):
(a) no head-of-line blocking under loss — watch: `hol_spread` and `excess_p99_ms`, cells with loss;
(b) 0-RTT starts faster — handshake: `ttfb_rtt` of h3 0-RTT (proven early data) against h2 cold
    and against h2 resumed;
(c) small requests beside a download — rpc_under_load: `rpc_p95_ms`;
(d) throughput — bulk and multiplex: `goodput_mbit`.

Confounds: the verdict's flags (a flag metric such as `cpu_bound` or `congestion_limited` set in
one of its repetitions, too few repetitions, ...), the two senders' congestion controllers —
as the run measured them (run.json `cell_runs[].transport`: h2's TCP per connection via
inet_diag, h3's QUIC as its implementation states it), else as run.json's stack settings state
them (different, or unknown for an implementation that runs its own defaults) — and a single
watch stream (no other stream to block). Pure: samples and run.json in, rows out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lab.evidence.significance import link_columns
from lab.evidence.verdicts import Verdict, verdicts

KEP = "KEP-3156"
LAB = "lab"
REFERENCE = "reference"
_LINK_AXES = ("link.", "uplink.", "downlink.")


@dataclass(frozen=True)
class Measure:
    """One metric that speaks to a claim: verdicts of `workload` × `metric`, optionally only
    of the h3 mode `h3_mode` compared with the h2 mode `h2_mode`, only in cells with loss."""

    workload: str
    metric: str
    h3_mode: str | None = None
    h2_mode: str | None = None
    lossy_only: bool = False

    def text(self) -> str:
        """e.g. "ttfb_rtt: h3 zero_rtt vs h2 cold", "hol_spread"."""
        if self.h3_mode is None:
            return self.metric
        return f"{self.metric}: h3 {self.h3_mode} vs h2 {self.h2_mode or self.h3_mode}"


@dataclass(frozen=True)
class Claim:
    """A claim and the measures that decide it; `source` is KEP or LAB."""

    label: str
    text: str
    source: str
    measures: tuple[Measure, ...]

    def title(self) -> str:
        """e.g. "(a) no head-of-line blocking under loss [KEP-3156]"."""
        return f"({self.label}) {self.text} [{self.source}]"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "a",
        "no head-of-line blocking under loss",
        KEP,
        (
            Measure("watch", "hol_spread", lossy_only=True),
            Measure("watch", "excess_p99_ms", lossy_only=True),
        ),
    ),
    Claim(
        "b",
        "0-RTT starts faster",
        KEP,
        (
            Measure("handshake", "ttfb_rtt", h3_mode="zero_rtt", h2_mode="cold"),
            Measure("handshake", "ttfb_rtt", h3_mode="zero_rtt", h2_mode="resumed"),
        ),
    ),
    Claim(
        "c",
        "small requests beside a download",
        LAB,
        (Measure("rpc_under_load", "rpc_p95_ms"),),
    ),
    Claim(
        "d",
        "throughput",
        LAB,
        (Measure("bulk", "goodput_mbit"), Measure("multiplex", "goodput_mbit")),
    ),
)


@dataclass(frozen=True)
class ClaimRow:
    """One verdict on a claim (or, with `verdict` None, why the run cannot speak to it)."""

    claim: Claim
    measure: Measure
    condition: str  # e.g. "loss 1%, RTT 50 ms, 20 Mbit/s, 16 streams"
    verdict: Verdict | None
    confounds: tuple[str, ...] = ()
    missing: str = ""  # why there is no verdict


# --- run.json: the cells' links, streams and congestion controllers -----------------------
def _cells(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c["cell"]): c for c in meta.get("cells") or [] if "cell" in c}


def _directions(link: dict[str, Any]) -> list[dict[str, Any]]:
    if "uplink" in link or "downlink" in link:
        return [link.get("uplink") or {}, link.get("downlink") or {}]
    return [link]  # symmetric shorthand


def _downlink(link: dict[str, Any]) -> dict[str, Any]:
    return _directions(link)[-1]


def _loss_model(direction: dict[str, Any]) -> str:
    loss = direction.get("loss") or {}
    return str(loss.get("model", "none")) if isinstance(loss, dict) else "none"


def _rate(direction: dict[str, Any]) -> float:
    loss = direction.get("loss") or {}
    return float(loss.get("rate", 0.0) or 0.0) if isinstance(loss, dict) else 0.0


def _loses(direction: dict[str, Any]) -> bool:
    """True for a Bernoulli rate above 0 or a deterministic model (drop list, isolated losses);
    Gilbert-Elliott counts through its mean loss (link_columns)."""
    model = _loss_model(direction)
    if model == "bernoulli":
        return _rate(direction) > 0
    return model not in ("none", "gilbert_elliott")


def lossy_cells(meta: dict[str, Any]) -> set[str]:
    """Cells whose link loses packets: a downlink mean loss above 0, or a direction with a
    Bernoulli rate above 0 or a deterministic loss model."""
    geometry = link_columns(meta)
    rates = dict(zip(geometry["cell"], geometry["loss_rate"], strict=True))
    return {
        cell
        for cell, c in _cells(meta).items()
        if rates.get(cell, 0.0) > 0 or any(_loses(d) for d in _directions(c.get("link") or {}))
    }


def _workload_param(meta: dict[str, Any], workload: str, param: str) -> Any:
    for w in (meta.get("scenario") or {}).get("workloads") or []:
        if isinstance(w, dict) and w.get("kind") == workload and param in w:
            return w[param]
    return None


_COUNTS = {"watch": ("streams", "stream"), "multiplex": ("objects", "object")}


def stream_counts(meta: dict[str, Any], workload: str, cells: Iterable[str]) -> list[int]:
    """The distinct concurrent-stream counts of `workload` (watch streams, multiplex objects)
    in `cells`: the matrix axis when the cell has it, else the scenario's value; [] for a
    workload without one."""
    if workload not in _COUNTS:
        return []
    param = _COUNTS[workload][0]
    by_id = _cells(meta)
    default = _workload_param(meta, workload, param)
    out = set()
    for cell in cells:
        axes = (by_id.get(cell) or {}).get("axes") or {}
        value = axes.get(f"{workload}.{param}", default)
        if value is not None:
            out.add(int(value))
    return sorted(out)


def _stack_of(meta: dict[str, Any], cell: str) -> dict[str, Any]:
    """The `stack:` values a cell ran with (run.json cells[].stack, stacks.per_cell, stacks.stack),
    else those of stacks.reference in the reference server's own names; {} when unknown."""
    stacks = meta.get("stacks") or {}
    for stack in (
        (_cells(meta).get(cell) or {}).get("stack"),
        (stacks.get("per_cell") or {}).get(cell),
        stacks.get("stack"),
    ):
        if isinstance(stack, dict) and stack:
            return stack
    ref = stacks.get(REFERENCE) or {}
    h2, quic = ref.get("h2") or {}, ref.get("quic") or {}
    out = {
        "tcp_congestion": h2.get("tcp_congestion"),
        "quic_congestion_control": quic.get("congestion_control"),
        "quic_engine": quic.get("engine"),
    }
    return {k: v for k, v in out.items() if v is not None}


def measured_senders(meta: dict[str, Any], cell: str) -> dict[str, set[str | None]]:
    """protocol → the controllers of `cell`'s server → client sender over its repetitions, as
    run.json `cell_runs[<cell>-<rep>].transport.<protocol>.sender` records them (None: not
    measured, e.g. no h2 connection seen); {} for runs that did not record them."""
    out: dict[str, set[str | None]] = {}
    for key, record in (meta.get("cell_runs") or {}).items():
        if str(key).rsplit("-", 1)[0] != cell or not isinstance(record, dict):
            continue
        for protocol, transport in (record.get("transport") or {}).items():
            if isinstance(transport, dict) and "sender" in transport:
                out.setdefault(str(protocol), set()).add(transport["sender"])
    return out


def _names(controllers: set[str | None]) -> str:
    return "/".join(sorted(c or "?" for c in controllers))


def measured_confound(meta: dict[str, Any], cell: str) -> str | None:
    """The measured senders' confound of `cell`: "different congestion controllers: …" when
    h2's and h3's differ, "… unknown: …" when one was not measured, None when they match or the
    run has no measurement of both protocols (see `controller_confound`)."""
    senders = measured_senders(meta, cell)
    if "h2" not in senders or "h3" not in senders:
        return None
    h2, h3 = senders["h2"], senders["h3"]
    text = f"h2 TCP {_names(h2)} (measured), h3 QUIC {_names(h3)}"
    if None in h2 or None in h3:
        return f"congestion controllers unknown: {text}"
    if {str(c).lower() for c in h2} != {str(c).lower() for c in h3}:
        return f"different congestion controllers: {text}"
    return None


def controller_mismatches(meta: dict[str, Any]) -> dict[str, str]:
    """cell → its confound, for every cell whose measured h2 and h3 senders used different
    congestion controllers (what `lab check` and the report flag)."""
    out = {}
    for cell in _cells(meta):
        text = measured_confound(meta, cell)
        if text and text.startswith("different"):
            out[cell] = text
    return out


def controller_confound(meta: dict[str, Any], cell: str, implementation: str | None) -> str | None:
    """Why the two senders of `cell` may not have used the same congestion controller, or None
    when run.json says both used the same. What the run measured decides when it measured both
    protocols; otherwise the stack settings: different controllers (h2's TCP vs h3's QUIC), or
    unknown (an implementation that runs its own defaults, qh3's built-in controller, nothing
    recorded)."""
    if {"h2", "h3"} <= set(measured_senders(meta, cell)):
        return measured_confound(meta, cell)
    server = implementation or meta.get("implementation") or REFERENCE
    if server != REFERENCE:
        settings = ((meta.get("stacks") or {}).get(server) or {}).get("settings")
        how = f"runs {settings}" if settings else "records no controller"
        return f"congestion controllers unknown: {server} {how}"
    stack = _stack_of(meta, cell)
    tcp, quic = stack.get("tcp_congestion"), stack.get("quic_congestion_control")
    if stack.get("quic_engine") == "qh3":
        return f"congestion controllers unknown: h2 TCP {tcp or '?'}, h3 QUIC qh3's built-in one"
    if not tcp or not quic:
        return f"congestion controllers unknown: h2 TCP {tcp or '?'}, h3 QUIC {quic or '?'}"
    if str(tcp).lower() != str(quic).lower():
        return f"different congestion controllers: h2 TCP {tcp}, h3 QUIC {quic}"
    return None


FEW_EXPOSED_STREAMS = 1.5  # streams exposed per loss at or below which no HOL can show


def exposed_confound(samples: pd.DataFrame | None, v: Verdict) -> str | None:
    """For a loss-anchored HOL verdict (hol_*): "≈ N streams exposed per loss" when the median
    `hol_exposed_mean` over its cells and both protocols is ≤ FEW_EXPOSED_STREAMS — then a loss
    finds no other stream with data in flight to block, and h2 and h3 read alike by
    construction (e.g. 4 streams at a 200 ms interval: one event within the recovery window)."""
    if samples is None or not v.metric.startswith("hol_"):
        return None
    rows = samples[
        (samples["workload"] == v.workload)
        & (samples["metric"] == "hol_exposed_mean")
        & samples["cell"].isin(v.cells)
    ]
    if rows.empty:
        return None
    exposed = float(rows["value"].median())
    if exposed > FEW_EXPOSED_STREAMS:
        return None
    return f"≈ {exposed:.2g} stream(s) exposed per loss: no other stream to block"


def confounds(
    v: Verdict, meta: dict[str, Any], samples: pd.DataFrame | None = None
) -> tuple[str, ...]:
    """Everything that may make `v` measure something other than the protocol: its flags, the
    congestion controllers of its cells, a single watch stream, too few streams exposed per
    loss (with `samples`)."""
    out = list(v.flags)
    for cell in v.cells:
        text = controller_confound(meta, cell, v.implementation)
        if text and text not in out:
            out.append(text)
    if v.workload == "watch" and stream_counts(meta, "watch", v.cells) == [1]:
        out.append("1 stream: no other stream to block")
    elif (few := exposed_confound(samples, v)) is not None:
        out.append(few)
    return tuple(out)


# --- conditions ----------------------------------------------------------------------------
def _joined(values: Iterable[str]) -> str:
    return "/".join(dict.fromkeys(values))


def _loss_text(link: dict[str, Any], downlink_rate: float) -> str:
    """e.g. "loss 1%" (the downlink's mean), "drop_list loss", "uplink bernoulli loss"."""
    down = _downlink(link)
    model = _loss_model(down)
    if downlink_rate > 0 and model in ("bernoulli", "gilbert_elliott"):
        return f"loss {downlink_rate * 100:.3g}%"
    if _loses(down):
        return f"{model} loss"
    up = _directions(link)[0]
    return f"uplink {_loss_model(up)} loss" if _loses(up) else "no loss"


def condition_text(v: Verdict, meta: dict[str, Any]) -> str:
    """The link and load of `v`'s cells, e.g. "loss 1%, RTT 50 ms, 20 Mbit/s, 16 streams", then
    any other condition axis as `axis=value`; values that differ between pooled cells joined
    with "/"."""
    by_id = _cells(meta)
    geometry = link_columns(meta)
    loss_rate = dict(zip(geometry["cell"], geometry["loss_rate"], strict=True))
    rtt_ms = dict(zip(geometry["cell"], geometry["rtt_ms"], strict=True))
    loss, rtt, rate = [], [], []
    for cell in v.cells:
        link = (by_id.get(cell) or {}).get("link") or {}
        if cell in rtt_ms:
            loss.append(_loss_text(link, float(loss_rate[cell])))
            rtt.append(f"RTT {float(rtt_ms[cell]):.4g} ms")
        r = _downlink(link).get("rate_mbit")
        rate.append(f"{float(r):.4g} Mbit/s" if r else "unlimited rate")
    parts = [_joined(p) for p in (loss, rtt, rate) if p]
    counts = stream_counts(meta, v.workload, v.cells)
    if counts:
        noun = _COUNTS[v.workload][1]
        parts.append(f"{_joined(str(n) for n in counts)} {noun}{'s' if counts != [1] else ''}")
    own = {f"{v.workload}.{p[0]}" for p in _COUNTS.values()}
    parts += [
        f"{k}={val}"
        for k, val in v.condition.items()
        if not str(k).startswith(_LINK_AXES) and k not in own
    ]
    if v.implementation and v.implementation != REFERENCE:
        parts.append(f"server {v.implementation}")
    return ", ".join(parts) or "all cells"


# --- the rows ------------------------------------------------------------------------------
def _why_missing(samples: pd.DataFrame, m: Measure, lossy: set[str]) -> str:
    rows = samples[(samples["workload"] == m.workload) & samples["value"].notna()]
    if rows.empty:
        return f"not measured: the run has no {m.workload} workload"
    if not (rows["metric"] == m.metric).any():
        return f"not measured: no {m.metric} samples"
    if m.lossy_only and not lossy & set(rows["cell"].astype(str)):
        return "not measured: no cell with loss"
    if m.h3_mode == "zero_rtt":
        return "not measured: no proven 0-RTT (the server saw no early data)"
    return "not measured: no verdict"


def _measure_verdicts(
    samples: pd.DataFrame, m: Measure, lossy: set[str], seed: int
) -> list[Verdict]:
    if not ((samples["workload"] == m.workload) & (samples["metric"] == m.metric)).any():
        return []
    vs = verdicts(samples, workloads=[m.workload], metrics=[m.metric], h2_mode=m.h2_mode, seed=seed)
    if m.h3_mode is not None:
        vs = [v for v in vs if v.mode == m.h3_mode]
    if m.lossy_only:
        vs = [v for v in vs if v.cells and set(v.cells) <= lossy]
    return vs


def claim_rows(
    samples: pd.DataFrame,
    meta: dict[str, Any],
    *,
    claims: Sequence[Claim] = CLAIMS,
    seed: int = 0,
) -> list[ClaimRow]:
    """The rows of the claims table: per claim every verdict of its measures (measure by
    measure, conditions in order), or one row saying why the run cannot speak to it."""
    lossy = lossy_cells(meta)
    out: list[ClaimRow] = []
    for claim in claims:
        mine: list[ClaimRow] = []
        for m in claim.measures:
            for v in _measure_verdicts(samples, m, lossy, seed):
                row = ClaimRow(claim, m, condition_text(v, meta), v, confounds(v, meta, samples))
                mine.append(row)
        if not mine:
            m = claim.measures[0]
            mine.append(ClaimRow(claim, m, "—", None, missing=_why_missing(samples, m, lossy)))
        out.extend(mine)
    return out
