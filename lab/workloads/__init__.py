"""Workloads: one module each, a params model plus an async run(client) -> samples."""
