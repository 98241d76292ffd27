"""Cross-validation of the two impairment backends on every spec of benchmarks/backends.yaml:
the emulator (`lab calibrate --impair emulator`, on the host) against tc netem (`lab vm calibrate
--impair netem`, in a user-mode-linux guest). Prints the markdown table of docs/link.md
("Cross-validation"): configured | emulator | netem, whether each passed calibrate's own
tolerances, and whether the two agree (delay p50 within 0.5 ms, loss inside each other's 99 %
binomial interval, UDP rate within ±5 %). Needs root and user-mode-linux; ~1 min per spec.

    python3 benchmarks/bench_backends.py [--ci] [--only NAME …] [--probes N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lab.vm.crosscheck import agreements, summary
from lab.vm.crossrun import calibrate_both

SPECS = Path(__file__).with_name("backends.yaml")


def configured(link: dict[str, Any], direction: str) -> str:
    """The spec of one direction, compact (`delay 15 ms ± 3 (allow)`, `bernoulli 5 %`, …)."""
    spec = link.get(direction, link) if ("uplink" in link or "downlink" in link) else link
    parts = [f"delay {spec.get('delay_ms', 0):g} ms"]
    if spec.get("jitter_ms"):
        parts[0] += f" ± {spec['jitter_ms']:g} ({spec.get('reorder', 'preserve')})"
    loss = spec.get("loss") or {}
    if loss.get("model") == "bernoulli":
        parts.append(f"bernoulli {100 * loss['rate']:g} %")
    elif loss.get("model") == "gilbert_elliott":
        parts.append(f"GE p={loss['p']:g} r={loss.get('r', 1):g} h={loss.get('h', 0):g}")
    if spec.get("rate_mbit"):
        q = spec.get("queue") or {}
        queue = ", ".join(f"{k} {v:g}" for k, v in q.items())
        parts.append(f"{spec['rate_mbit']:g} Mbit/s" + (f" (queue {queue})" if queue else ""))
    return ", ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="only the specs marked ci: true")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these specs")
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None, help="also keep the raw results here")
    opts = ap.parse_args()
    specs = [s for s in yaml.safe_load(SPECS.read_text()) if s.get("ci") or not opts.ci]
    if opts.only:
        specs = [s for s in specs if s["name"] in opts.only]
    rows, raw, all_ok = [], {}, True
    for spec in specs:
        t0 = time.monotonic()
        emu, netem = calibrate_both(spec["name"], spec["link"], opts.probes)
        raw[spec["name"]] = {"emulator": emu, "netem": netem}
        agree = agreements(emu, netem)
        for d in ("uplink", "downlink"):
            ok = all(a.ok for a in agree if a.direction == d)
            all_ok &= ok and bool(emu["passed"]) and bool(netem["passed"])
            rows.append(
                f"| {spec['name']} | {d} | {configured(spec['link'], d)} | {summary(emu, d)} | "
                f"{summary(netem, d)} | {'pass' if emu['passed'] else 'FAIL'} / "
                f"{'pass' if netem['passed'] else 'FAIL'} | {'yes' if ok else 'NO'} |"
            )
        print(f"{spec['name']}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print("| spec | direction | configured | emulator | netem | calibrate (emu / netem) | agree |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if opts.json:
        opts.json.write_text(json.dumps(raw, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
