"""Scoring language models on tasks: lm-evaluation-harness with lmforge's model adapter and bundled tasks."""
