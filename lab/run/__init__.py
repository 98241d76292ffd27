"""Running a scenario: the plan of (cell, repetition) pairs, the processes of each cell and their
lifetimes, the client-side agent, what is collected, run.json records and progress.

`runner.py` is the only place that starts processes and `children.py` watches them while a cell
runs; `lifecycle.py` decides what signals do and owns the teardown registry; `agent.py` runs in
the client namespace (`python -m lab.run.agent`).
"""
