"""What a conformance case is and what it found (pure data).

A case is one small async function with a `CaseSpec` (its catalogue ID, RFC section, MUST/SHOULD/
MAY, whether it also runs through the impaired link). It returns an `Outcome`: passed, failed,
unsupported (the target or this host cannot run it) or skipped (not run, by choice), each with a
one-line reason. `passed(coarse=True)` is RFC 9113 §5.4.1 / RFC 9114 §8's "a connection error
where a stream error was specified": allowed, but worth nudging towards stream-level resets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["passed", "failed", "unsupported", "skipped"]
Level = Literal["MUST", "SHOULD", "MAY"]
Group = Literal["h2", "h3", "quic", "zero_rtt", "dual_stack"]
PathKind = Literal["clean", "impaired"]
# what a case needs from the target: an h2 (TCP) or h3 (UDP) listener, the lab's /counter route,
# a way to drain it gracefully (SIGTERM), to restart it, or a variant of it configured for Retry
Need = Literal["h2", "h3", "counter", "drain", "restart", "retry", "link"]

GROUPS: tuple[Group, ...] = ("h2", "h3", "quic", "zero_rtt", "dual_stack")
STATUSES: tuple[Status, ...] = ("passed", "failed", "unsupported", "skipped")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one case found; `reason` is one line."""

    status: Status
    reason: str
    coarse: bool = False  # passed with a connection error where a stream error is specified
    notes: tuple[str, ...] = ()  # quality notes: a SHOULD not met, a WARN of lab policy

    @property
    def label(self) -> str:
        """`passed`, `passed (coarse)`, `failed`, … as the table shows it."""
        return f"{self.status} (coarse)" if self.coarse and self.status == "passed" else self.status

    def with_notes(self, notes: Iterable[str]) -> Outcome:
        """The same outcome with more notes."""
        return Outcome(self.status, self.reason, self.coarse, (*self.notes, *notes))


def passed(reason: str, *, coarse: bool = False, notes: Iterable[str] = ()) -> Outcome:
    """The target behaved as the RFC says."""
    return Outcome("passed", reason, coarse, tuple(notes))


def failed(reason: str, *, notes: Iterable[str] = ()) -> Outcome:
    """The target did not."""
    return Outcome("failed", reason, False, tuple(notes))


def unsupported(reason: str) -> Outcome:
    """The target (or this host) cannot run the case: no listener, route, tool or hook."""
    return Outcome("unsupported", reason)


def skipped(reason: str) -> Outcome:
    """The case was not run, by choice (not selected on this path, too slow unless asked)."""
    return Outcome("skipped", reason)


@dataclass(frozen=True, slots=True)
class CaseSpec:
    """A catalogue entry (../shared/CONFORMANCE.md); the ID is stable (JUnit `name`)."""

    id: str  # e.g. "H2-07"
    group: Group  # JUnit `classname`
    title: str  # what it checks, one line
    rfc: str  # e.g. "RFC 9113 §6.9.1"
    level: Level
    impaired: bool = False  # ⟳: also run through the impaired link, where it must still pass
    needs: frozenset[Need] = field(default_factory=frozenset)
    slow: bool = False  # waits long (e.g. the server's idle timeout): run only when named


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case run on one path."""

    spec: CaseSpec
    path: PathKind
    outcome: Outcome
    duration_s: float
    attempts: int = 1  # under impairment a failed ⟳ case is run once more (policy 6)


def exit_code(results: Iterable[CaseResult]) -> int:
    """0 when no MUST case failed (on any path), else 1. Unsupported and skipped cases are not
    failures: the table says what was not covered."""
    return 1 if any(r.outcome.status == "failed" and r.spec.level == "MUST" for r in results) else 0


def counts(results: Iterable[CaseResult]) -> dict[str, int]:
    """Results per status (all four keys present)."""
    out: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for r in results:
        out[r.outcome.status] += 1
    return out


@dataclass
class ConformRun:
    """A whole `lab conform` run: the target, the link, every result in order."""

    target: dict[str, object]  # name, url or server, version, what it serves
    link: dict[str, object] | None  # the impaired link (LinkSpec as a dict), None: clean only
    started: str  # ISO 8601, UTC
    results: list[CaseResult] = field(default_factory=list)
    path_wall_s: dict[str, float] = field(default_factory=dict)  # time each path took, s
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return exit_code(self.results)
