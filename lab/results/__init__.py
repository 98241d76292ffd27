"""The versioned on-disk results format: `results/<run-id>/`; `load()` returns pandas."""

from lab.results.store import RunResults, axis_columns, load

__all__ = ["RunResults", "axis_columns", "load"]
