"""Evidence from results: statistics, verdicts, `lab check` gates, `lab compare`, the report and
its plots. Reads results; never runs anything."""
