"""datatrove's private names that lmforge relies on, each behind one small class or function."""

from __future__ import annotations

import contextlib
import io

from datatrove.executor import LocalPipelineExecutor

DISTRIBUTION = "datatrove"
CHECKED = ">=0.10,<0.11"


class QuietLocal(LocalPipelineExecutor):
    """datatrove's local executor, its tasks logging only to their log files (logs/<stage>/logs/task_*.log):
    an error reaches the console once, as lmforge's one line (or traceback, for a bug)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        # datatrove's per-task runner (private): the one place a task's stderr can be caught
        with contextlib.redirect_stderr(io.StringIO()):
            return super()._run_for_rank(rank, local_rank, node_rank)
