"""Lightning's DDP strategy, starting the other ranks of a Hydra job with the job's own command line."""

from __future__ import annotations

from unittest import mock

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script

from lmforge.distributed import job_command


class JobScriptLauncher(subprocess_script._SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        # Lightning's launcher sets up the rank environment; only its Hydra command line is replaced.
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", job_command):
            super()._call_children_scripts()


class DDPStrategy(LightningDDPStrategy):
    """Lightning's DDP whose other ranks run `lmforge.distributed.job_command`. Lightning rebuilds
    that command from sys.argv, which in a sweep is the whole sweep (rank 1 would run the sweep again)
    and in a joblib worker is the worker's own command line (rank 1 would fail to start)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, subprocess_script._SubprocessScriptLauncher):
            self._launcher = JobScriptLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
