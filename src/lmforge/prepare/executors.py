"""Where a prepare's stages run: datatrove's local executor (tasks over worker processes on this machine)
or its SLURM executor (one array job per stage, each depending on the one before). Either way a task that
finished is recorded under the output's work folder and skipped when the same prepare runs again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field

from lmforge.compat.datatrove import QuietLocal
from lmforge.errors import UserError

Count = Annotated[int, Field(ge=1)]


class Local:
    """`tasks` shards of the input, run `workers` at a time in processes of this machine."""

    def __init__(self, tasks: Count = 1, workers: Count = 1) -> None:
        self.tasks, self.workers = tasks, workers

    def run(self, stages: list, logs: Path) -> bool:
        """Run every stage in order; True: finished here."""
        from datatrove.utils.logging import logger

        logs.mkdir(parents=True, exist_ok=True)
        logger.remove()  # datatrove's reports of each stage: into a file, the console gets lmforge's lines
        logger.add(str(logs / "prepare.log"), level="INFO")
        for name, steps, tasks in stages:
            print(f"prepare: {name} ({tasks} task{'s' * (tasks > 1)})", flush=True)
            QuietLocal(steps, tasks=tasks, workers=min(self.workers, tasks), logging_dir=str(logs / name),
                       start_method="forkserver").run()
        return True


class Slurm:
    """`tasks` shards per stage as SLURM array jobs on `partition` (`time` D-HH:MM:SS or HH:MM:SS, `cpus` and
    `mem_per_cpu_gb` per task, at most `workers` running at once: -1 no limit); `sbatch_args` adds
    #SBATCH options, `env_command` runs before each task (e.g. activating this environment)."""

    def __init__(self, partition: str, tasks: Count = 1, time: str = "04:00:00", cpus: Count = 1,
                 mem_per_cpu_gb: Count = 2, workers: int = -1, qos: str = "normal", env_command: Optional[str] = None,
                 sbatch_args: Optional[dict] = None) -> None:
        self.tasks, self.partition, self.time, self.cpus, self.mem = tasks, partition, time, cpus, mem_per_cpu_gb
        self.workers, self.qos, self.env_command, self.sbatch_args = workers, qos, env_command, sbatch_args

    def run(self, stages: list, logs: Path) -> bool:
        """Submit every stage (each waits for the one before); False: the jobs run on."""
        if shutil.which("sbatch") is None:
            raise UserError("executor=slurm: sbatch not found on this machine (run prepare where SLURM is, or "
                            "executor=local)")
        from datatrove.executor import SlurmPipelineExecutor

        previous = None
        for name, steps, tasks in stages:
            previous = SlurmPipelineExecutor(
                steps, tasks=tasks, time=self.time, partition=self.partition, cpus_per_task=self.cpus,
                mem_per_cpu_gb=self.mem, workers=self.workers, job_name=f"prepare-{name}", qos=self.qos,
                env_command=self.env_command, sbatch_args=self.sbatch_args, depends=previous,
                logging_dir=str(logs / name), slurm_logs_folder=str(logs / name / "slurm"))
        previous.run()
        return False
