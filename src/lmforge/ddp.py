"""Lightning's DDP strategy, starting the other ranks of a Hydra job with the job's own command line."""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy

from lmforge.compat import lightning as lightning_compat
from lmforge.distributed import job_command


class JobScriptLauncher(lightning_compat.SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        # Lightning's launcher sets up the rank environment; only its Hydra command line is replaced.
        with lightning_compat.child_command(job_command):
            super()._call_children_scripts()


class DDPStrategy(LightningDDPStrategy):
    """Lightning's DDP whose other ranks run `lmforge.distributed.job_command`. Lightning rebuilds
    that command from sys.argv, which in a sweep is the whole sweep (rank 1 would run the sweep again)
    and in a joblib worker is the worker's own command line (rank 1 would fail to start)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self.launcher, lightning_compat.SubprocessScriptLauncher):
            lightning_compat.set_launcher(self, JobScriptLauncher(self.cluster_environment, self.num_processes,
                                                                  self.num_nodes))
