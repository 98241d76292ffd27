"""The minimum effect: how large a difference must be before a verdict calls it better or worse.

A difference between h2 and h3 (or run A and run B) can be real — its interval excludes "no
change" — and still too small to matter. It counts only when it is at least
MIN_RELATIVE_EFFECT (10%, the default of `lab compare`) of the baseline AND at least the absolute
floor of its unit: 1 ms for latencies, 0.05 for fractions, 0.1 RTT for times in base-RTT units,
0.5 Mbit/s for goodput. Units without a floor (CPU seconds, flags) need only the relative effect.
Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

MIN_RELATIVE_EFFECT = 0.10
# unit of the results format → the smallest absolute difference that counts, in that unit
ABSOLUTE_FLOORS: Mapping[str, float] = MappingProxyType(
    {"ms": 1.0, "fraction": 0.05, "rtt": 0.1, "Mbit/s": 0.5}
)
_TOLERANCE = 1e-9  # floating-point slack at the thresholds


def absolute_floor(unit: str) -> float:
    """The absolute floor of `unit` (0.0 for a unit without one)."""
    return ABSOLUTE_FLOORS.get(unit, 0.0)


def is_meaningful(
    baseline: float, other: float, unit: str, *, min_relative: float = MIN_RELATIVE_EFFECT
) -> bool:
    """True when `other` differs from `baseline` (both in `unit`) by at least `min_relative` of
    the baseline and by at least the unit's absolute floor; False when either is not finite
    or the baseline is 0 (no relative change)."""
    if not (math.isfinite(baseline) and math.isfinite(other)) or baseline == 0:
        return False
    relative = abs(other / baseline - 1.0)
    big_enough = relative >= min_relative - _TOLERANCE  # 0.9 / 1.0 − 1 is not quite −0.1
    return big_enough and abs(other - baseline) >= absolute_floor(unit) - _TOLERANCE


def effect_text(unit: str, *, min_relative: float = MIN_RELATIVE_EFFECT) -> str:
    """e.g. "10% and 1 ms"; "10%" for a unit without a floor."""
    floor = absolute_floor(unit)
    relative = f"{min_relative:.0%}"
    if not floor:
        return relative
    return f"{relative} and {floor:g} {unit}" if unit != "fraction" else f"{relative} and {floor:g}"
