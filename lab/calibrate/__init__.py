"""`lab calibrate`: what the impaired path really does, against its spec.

- `measure`: I/O — topology, impairment (emulator or netem), probes and flows; `calibrate_cell`.
- `probes` (echo and probe client), `flows` (UDP flood, TCP bulk), `netio`: standard library
  only, so that `python -m lab.calibrate.probes echo` starts fast inside a namespace.
- `measurement`: what was measured, as plain data (`analyse_probes` → per-direction statistics).
- `evaluate`: pure — one `Check` per quantity, configured next to measured, pass/fail.
- `simulate`: the link model in virtual time over the probes' own schedule (expectations).
- `stats`: intervals, reordering counts, quantiles, receiver rates.
- `result` (`CalibrationResult`, its JSON), `present` (rich table and progress bars).

This package imports nothing itself: importing a module here must stay cheap.
"""
