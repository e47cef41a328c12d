"""Sweeps: the multirun summary (sweep.csv / sweep.json) written beside the jobs."""
