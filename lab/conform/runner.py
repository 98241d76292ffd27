"""Run the selected cases against a target: every case on the clean path, then the ⟳ cases
again through the impaired link (when there is one), each in its own trio loop with a deadline.

Order within a path: the catalogue's, except that cases which drain or restart the server run
last, and the target restarts the server after each of them. A ⟳ case that fails under
impairment is run once more (policy 6); the result records the attempts. A case the target
cannot run (no listener, no route, no way to drain it) is `unsupported` without running; a slow
case (Q-12 waits for the server's idle timeout) is `skipped` unless named or `slow=True`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import trio

from lab.conform.case import Case
from lab.conform.context import CaseContext
from lab.conform.model import (
    CaseResult,
    ConformRun,
    Outcome,
    PathKind,
    failed,
    skipped,
    unsupported,
)
from lab.conform.quicwire import InternalsUnavailable

log = logging.getLogger(__name__)

CASE_LIMIT_S = 90.0  # no case runs longer (its own waits are far shorter)
IMPAIRED_ATTEMPTS = 2
LAST = frozenset({"drain", "restart"})
Progress = Callable[[CaseResult], None]
_PEER_ERRORS = (
    ConnectionError,
    OSError,
    ssl.SSLError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


class Target(Protocol):
    """What the runner needs from lab.conform.target's UrlTarget / ServerTarget."""

    paths: tuple[PathKind, ...]

    def context(self, path: PathKind, artifacts: Path | None = None) -> CaseContext: ...

    def on_path(self, path: PathKind) -> Any: ...

    def recover(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def gate(case: Case, ctx: CaseContext, *, slow: bool, named: frozenset[str]) -> Outcome | None:
    """Why the case cannot or need not run here, or None when it runs."""
    spec, ep = case.spec, ctx.endpoint
    reasons = {
        "h2": (ep.h2, "the target has no HTTP/2 (TCP + TLS) listener"),
        "h3": (ep.h3, "the target has no HTTP/3 (QUIC) listener"),
        "counter": (ep.counter, "the target does not serve /counter"),
        "drain": (ctx.server is not None, "needs a server the lab starts (--server) to drain"),
        "restart": (ctx.server is not None, "needs a server the lab starts (--server)"),
        "retry": (ctx.retry_server is not None, "the target cannot be configured for Retry"),
    }
    for need in sorted(spec.needs):
        ok, why = reasons.get(need, (True, ""))
        if not ok:
            return unsupported(why)
    if spec.slow and not slow and spec.id not in named:
        return skipped("waits for the server's idle timeout: give --slow or --cases " + spec.id)
    return None


async def _guarded(case: Case, ctx: CaseContext) -> Outcome:
    with trio.move_on_after(CASE_LIMIT_S):
        try:
            return await case.run(ctx)
        except InternalsUnavailable as e:
            return unsupported(str(e))
        except _PEER_ERRORS as e:
            return failed(_text(e))
        except ExceptionGroup as group:  # concurrent sub-checks: report the first peer error
            peer = [e for e in _leaves(group) if isinstance(e, _PEER_ERRORS)]
            if peer and len(peer) == len(_leaves(group)):
                return failed(_text(peer[0]))
            log.exception("case %s raised", case.spec.id)
            return failed(f"case error: {_text(group)}")
        except Exception as e:  # a case's own bug or a peer behaviour it did not foresee
            log.exception("case %s raised", case.spec.id)
            return failed(f"case error: {type(e).__name__}: {e}")
    return failed(f"did not finish within {CASE_LIMIT_S:g} s")


def _text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".rstrip(": ")


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


def run_case(case: Case, ctx: CaseContext) -> Outcome:
    """One case in a fresh trio loop."""
    return trio.run(_guarded, case, ctx)


def ordered(cases: Sequence[Case]) -> list[Case]:
    """The catalogue's order, with the cases that drain or restart the server last."""
    return sorted(cases, key=lambda c: bool(c.spec.needs & LAST))


def run_cases(
    target: Target,
    cases: Sequence[Case],
    *,
    slow: bool = False,
    named: frozenset[str] = frozenset(),
    artifacts: Path | None = None,
    progress: Progress | None = None,
    link: dict[str, Any] | None = None,
) -> ConformRun:
    """Run `cases` on each of the target's paths (see the module docstring); `link` is the
    impaired link as recorded in the result."""
    started = time.monotonic()
    run = ConformRun(
        target=target.describe(),
        link=link,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for path in target.paths:
        todo = [c for c in ordered(cases) if path == "clean" or c.spec.impaired]
        if not todo:
            continue
        t0 = time.monotonic()
        with target.on_path(path):
            for case in todo:
                result = _one(target, case, path, slow, named, artifacts)
                run.results.append(result)
                if progress is not None:
                    progress(result)
        run.path_wall_s[path] = round(time.monotonic() - t0, 2)
    run.wall_s = round(time.monotonic() - started, 2)
    return run


def _one(
    target: Target,
    case: Case,
    path: PathKind,
    slow: bool,
    named: frozenset[str],
    artifacts: Path | None,
) -> CaseResult:
    where = None if artifacts is None else artifacts / path / case.spec.id
    ctx = target.context(path, where)
    t0 = time.monotonic()
    outcome = gate(case, ctx, slow=slow, named=named)
    attempts = 0
    while outcome is None or (
        outcome.status == "failed" and path == "impaired" and attempts < IMPAIRED_ATTEMPTS
    ):
        attempts += 1
        outcome = run_case(case, ctx)
        if case.spec.needs & LAST:
            target.recover()
    return CaseResult(case.spec, path, outcome, round(time.monotonic() - t0, 3), attempts)
