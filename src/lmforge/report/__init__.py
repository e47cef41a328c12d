"""Run comparison: one table of the metrics and the differing config keys of many runs."""
