"""The outcome of `lab calibrate` for one cell, and its machine-readable form (`--json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lab.calibrate.evaluate import Check, passed
from lab.calibrate.measurement import Measurement
from lab.calibrate.stats import quantiles_ms
from lab.link.spec import LinkSpec


@dataclass
class CalibrationResult:
    """The outcome of `lab calibrate`: the checks and what they were computed from."""

    scenario: str
    cell: str
    link: LinkSpec
    measurement: Measurement
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return passed(self.checks)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form (`lab calibrate --json`; delays in ms, elapsed time in s)."""
        m = self.measurement
        return {
            "scenario": self.scenario,
            "cell": self.cell,
            "backend": m.backend,
            "seed": m.seed,
            "topology_prefix": m.topology_prefix,
            "address_family": m.address_family,
            "passed": self.ok,
            "elapsed_s": round(m.elapsed_s, 3),
            "link": self.link.model_dump(mode="json"),
            "checks": [asdict(c) for c in self.checks],
            "probes": {
                d: {
                    "offered": s.offered,
                    "received": s.received,
                    "lost": s.lost,
                    "duplicates": s.duplicates,
                    "reordered": s.reordered,
                    "owd_ms": quantiles_ms(s.owd_ns),
                }
                for d, s in (("uplink", m.probes.uplink), ("downlink", m.probes.downlink))
            }
            | {"rtt_ms": quantiles_ms(m.probes.rtt_ns), "ip_bytes": m.probes.ip_bytes},
            "flows": [asdict(f) for f in m.flows],
            "emulator": m.emulator,
            "emulator_problems": m.emulator_problems,
        }
