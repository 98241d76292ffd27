"""Every conformance case, in catalogue order, and `select` for `--cases`."""

from __future__ import annotations

import fnmatch
from types import ModuleType

from lab.conform import dual_stack, external, h2, h3, quic, zero_rtt
from lab.conform.case import Case
from lab.conform.model import GROUPS

MODULES: tuple[ModuleType, ...] = (h2, h3, quic, zero_rtt, dual_stack, external)


def _collect() -> tuple[Case, ...]:
    found = [c for m in MODULES for c in vars(m).values() if isinstance(c, Case)]
    ids = [c.spec.id for c in found]
    assert len(ids) == len(set(ids)), f"duplicate case ids: {ids}"
    return tuple(sorted(found, key=lambda c: (GROUPS.index(c.spec.group), c.spec.id)))


CASES: tuple[Case, ...] = _collect()


def select(patterns: str | None) -> list[Case]:
    """The cases whose ID matches one of the comma-separated glob `patterns` (case-insensitive;
    None or "" = all). ValueError names a pattern that matches nothing."""
    if not patterns:
        return list(CASES)
    wanted = [p.strip().upper() for p in patterns.split(",") if p.strip()]
    for p in wanted:
        if not any(fnmatch.fnmatchcase(c.spec.id, p) for c in CASES):
            known = ", ".join(c.spec.id for c in CASES)
            raise ValueError(f"no case matches {p!r} (cases: {known})")
    return [c for c in CASES if any(fnmatch.fnmatchcase(c.spec.id, p) for p in wanted)]


def named(patterns: str | None) -> frozenset[str]:
    """The IDs named literally (not through a wildcard) in `patterns`."""
    if not patterns:
        return frozenset()
    return frozenset(p.strip().upper() for p in patterns.split(",") if p.strip() and "*" not in p)
