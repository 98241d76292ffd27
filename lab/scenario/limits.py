"""Every input bound of a scenario file, with the reason for it (docs/scenarios.md lists them).

A value beyond a bound is a typo or a generated file gone wrong, and it would otherwise crash,
hang or fill the disk long after `lab validate` said ok. The link's bounds (delay, rate, queue)
live beside its models in `lab.link.spec`.
"""

from __future__ import annotations

# --- the file -----------------------------------------------------------------------------
# 100× the largest shipped scenario; PyYAML's pure-Python parser reads ~1 MiB/s here, so even
# a file at the limit answers within a fraction of a second.
MAX_FILE_BYTES = 256 * 1024
# Nodes (scalars, lists, mappings) in the document: the parser takes ~60 µs per node, so this
# caps parsing at ~0.3 s; the shipped scenarios have fewer than 200.
MAX_NODES = 5_000
# Nested lists/mappings: the deepest field path of a scenario is 5 levels
# (matrix → axis → value list → loss mapping → field); deeper input would only recurse.
MAX_DEPTH = 20

# --- the scenario -------------------------------------------------------------------------
# The name starts the run id: results/<name>-<UTC time>-<hex>/ must stay well inside a file
# name's 255 bytes and readable in a listing.
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 10_000  # free text shown in reports; more belongs in a README
MAX_SEED = 2**64 - 1  # seeds are 64-bit: the run records them as unsigned 64-bit integers
MAX_REPEAT = 1_000  # repetitions of a cell; a median and CI need tens, not thousands
MAX_WORKLOADS = 50  # every workload runs in every cell repetition
# cells × repetitions of one run: 10,000 cell repetitions of the shortest cell (~5 s each)
# are already a 14-hour run; `lab run --max-pairs N` raises it deliberately. Checked before
# the matrix is expanded.
MAX_PAIRS = 10_000

# --- workloads ----------------------------------------------------------------------------
# Concurrent streams on one connection: 100× kube-apiserver's default of 100; beyond it the
# Python client measures itself rather than the protocol.
MAX_STREAMS = 10_000
MAX_CONNECTIONS = 10_000  # new connections (handshakes) per mode, each at least one RTT
MAX_REQUESTS = 100_000  # sequential requests (GETs, LIST pages) of one workload
MAX_LIST_OBJECTS = 100_000  # objects in one LIST page (kube-apiserver pages by 500 by default)
MAX_BYTES = 10_000_000_000  # one response: 10 GB lasts 80 s at 1 Gbit/s and 2.2 h at 10 Mbit/s
MAX_DURATION_S = 3_600.0  # one hour per workload and cell repetition
MIN_INTERVAL_MS = 1.0  # below 1 ms the event loop's timer resolution is what is measured
MAX_INTERVAL_MS = 3_600_000.0  # one event per hour: the longest duration
MAX_THRESHOLD_RTT = 1_000.0  # a stall threshold in base RTTs; more never flags a stall
