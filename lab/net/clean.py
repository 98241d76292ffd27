"""`lab clean`: remove what killed runs left behind, found by the `lab<6 hex>-` name pattern.

A run is *left over* when no live process holds its run lock (see lab.net.runlock): its
processes (found through their network namespace), namespaces, root-namespace links and work
directory (`<tmp>/lab-run-<prefix>`, lab.net.workdir) are removed. Live runs are skipped unless
`force=True`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from lab.net import nsenter
from lab.net.names import Names, prefix_of
from lab.net.runlock import LOCK_DIR, is_live, lock_path
from lab.net.topology import remove_run
from lab.net.workdir import remove_workdir, workdir_path, workdir_prefixes


@dataclass
class CleanReport:
    """What `clean` removed and which live runs it left alone."""

    removed: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)


def find_prefixes() -> set[str]:
    """Run prefixes that have a namespace, a root-namespace link, a lock file or a work
    directory."""
    found = {prefix_of(ns) for ns in nsenter.list_namespaces()}
    with IPRoute() as ipr:
        found |= {prefix_of(link.get("ifname") or "") for link in ipr.get_links()}
    if LOCK_DIR.is_dir():
        found |= {prefix_of(p.stem + "-x") for p in LOCK_DIR.glob("lab*.lock")}
    found |= workdir_prefixes()
    found.discard(None)
    return found  # type: ignore[return-value]


def clean(prefix: str | None = None, *, force: bool = False) -> CleanReport:
    """Remove leftovers of every dead run (or only of `prefix`); `force` also removes live ones.
    Processes and namespaces go first, so nothing still writes into a work directory."""
    report = CleanReport()
    prefixes = find_prefixes()
    if prefix is not None:
        prefixes &= {prefix}
    dead = []
    for p in sorted(prefixes):
        if not force and is_live(p):
            report.skipped_live.append(p)
        else:
            dead.append(p)
    for p in dead:
        report.removed += remove_run(Names(p))
    for p in dead:
        if remove_workdir(p):
            report.removed.append(f"workdir {workdir_path(p)}")
        with contextlib.suppress(FileNotFoundError):
            lock_path(p).unlink()
            report.removed.append(f"lock {p}")
    return report
