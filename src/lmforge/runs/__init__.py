"""Run directories as plain IO: their files, metadata, checkpoints and lock (no building)."""
