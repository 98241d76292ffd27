"""The versioned on-disk results format: `results/<run-id>/`; `load()` returns pandas.

Modules: `schema` (file names, columns, dtypes, `samples_frame`), `summary` (`summarise`),
`provenance` (versions, git commit, run id), `atomic` (the one atomic-write helper), `meta`
(run.json checks), `writer` (`RunWriter`, `open_for_resume`), `reader` (`RunResults`, `load`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.results.reader import RunResults, load
    from lab.results.schema import axis_columns, samples_frame
    from lab.results.writer import RunWriter, open_for_resume

# The public API, by the module that defines it.
_PUBLIC = {
    "load": "lab.results.reader",
    "RunResults": "lab.results.reader",
    "RunWriter": "lab.results.writer",
    "open_for_resume": "lab.results.writer",
    "samples_frame": "lab.results.schema",
    "axis_columns": "lab.results.schema",
}

__all__ = ["RunResults", "RunWriter", "axis_columns", "load", "open_for_resume", "samples_frame"]


def __getattr__(name: str) -> Any:
    """Import the public API lazily: `lab.results.atomic` must not pull in pandas."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.results' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
