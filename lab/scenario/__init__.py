"""Scenario files: YAML → typed, validated models. Pure data, no I/O beyond reading the file.

Units are in field names (`delay_ms`, `rate_mbit`). A link is given per direction:
uplink = client → server, downlink = server → client; `link:` is the symmetric shorthand.

- `models.py`: `Scenario`, `StackSpec`, `Cell`; the link models live in `lab.link.spec`.
- `workloads.py`: the workload parameter models.
- `matrix.py`: `expand_cells(scenario)` — the cartesian product of the matrix axes (repetitions
  are the runner's job) — and `resolved(scenario)` for run.json.
- `load.py`: `load_scenario(path)` / `parse_scenario(text)`; any bad value raises
  `lab.errors.ScenarioError`, whose text is one sentence "FILE:LINE: field.path: reason".
- `yamlpos.py`: a YAML loader that remembers the line of every node and refuses hostile input
  (control characters, aliases, deep nesting, too many nodes).
- `limits.py`: every bound of a scenario file (size, nesting, counts, durations, bytes, cells ×
  repetitions) with its reason; the link's bounds are in `lab.link.spec`.

docs/scenarios.md is the user-facing description of the format.
"""

from lab.errors import ScenarioError
from lab.scenario.load import load_scenario, parse_scenario, scenario_json_schema
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.models import Cell, Scenario, StackSpec

__all__ = [
    "Cell",
    "Scenario",
    "ScenarioError",
    "StackSpec",
    "expand_cells",
    "load_scenario",
    "parse_scenario",
    "resolved",
    "scenario_json_schema",
]
