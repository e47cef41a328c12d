"""An Optuna study that one or several sweep processes fill together, up to `n_trials` finished trials.

Finished means COMPLETE, PRUNED or FAIL, except a trial that was cut off: a RUNNING trial whose
sweep process stopped (killed, or interrupted) is marked FAIL and re-queued with the same parameters
(Optuna's `failed_trial` / `retry_history` system attributes, as its RetryFailedTrialCallback
writes them), and its re-run takes its place in the count. A process that stops cleanly cuts off its
own trials at once; a killed one is found by its silence: each sweep process beats for its running
trials every `heartbeat_interval` seconds (Optuna's own heartbeat exists for RDB storages only).
Counting and asking happen under a lock file beside a journal storage, so that processes sharing it
never ask more than `n_trials` between them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator, Optional

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState

from lmforge.compat import optuna as optuna_compat
from lmforge.errors import UserError

from .storage import journal_file, open_storage

HEARTBEAT = "lmforge:heartbeat"
SILENT_BEATS = 3  # a trial whose process missed this many heartbeats was cut off
MAX_RETRIES = 3  # a trial cut off more often than this stays FAIL (and counts as finished)


class SharedStudy:
    """The sweep's view of its study: what to run next, results told back, cut-off trials re-queued."""

    def __init__(self, storage: str, study_name: str, direction: str, sampler=None, pruner=None,
                 heartbeat_interval: float = 30.0) -> None:
        if direction not in ("minimize", "maximize"):
            raise UserError(f"hydra.sweeper.direction: '{direction}' is not one of minimize, maximize")
        if heartbeat_interval <= 0:
            raise UserError("hydra.sweeper.heartbeat_interval must be positive (seconds)")
        self.storage_name = storage
        self.interval = float(heartbeat_interval)
        try:
            self.study = optuna.create_study(storage=open_storage(storage), study_name=study_name,
                                             direction=direction, sampler=sampler, pruner=pruner,
                                             load_if_exists=True)
        except ValueError as exc:  # e.g. the stored study optimizes in the other direction
            raise UserError(f"study '{study_name}' in {storage}: {exc}") from exc
        self._storage = optuna_compat.storage(self.study)
        self._in_flight: dict[int, Trial] = {}  # trial id -> asked by this process, not yet told
        self._asked = False
        self._waited = False
        self._beats = threading.Lock()
        self._stop = threading.Event()
        self._heart = threading.Thread(target=self._beat_forever, name="optuna-heartbeat", daemon=True)
        self._heart.start()

    # ---- counting
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @staticmethod
    def finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """Finished trials that count towards n_trials: every one but those re-queued after a cut-off."""
        requeued = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
        return [t for t in trials if t.state.is_finished() and t.number not in requeued]

    # ---- asking and telling
    def next_batch(self, n_trials: int, n_jobs: int,
                   distributions: dict[str, BaseDistribution]) -> Optional[list[Trial]]:
        """Up to `n_jobs` trials to run now (re-queued ones first); [] while the last trials run in
        other processes; None once `n_trials` trials are finished."""
        with self._ask_lock():
            trials = self.trials()
            if any([self._cut_off(t) for t in trials if self._is_silent(t)]):
                trials = self.trials()
            done = len(self.finished(trials))
            if done >= n_trials:
                return None
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if not self._asked and trials:
                # Joining a study that has trials (a continuation, or a second process): with the
                # preset's fixed seed, this sampler would repeat the first process's draws. Reseed it at
                # random, as Optuna does for parallel workers; the study's first process keeps its seed.
                self.study.sampler.reseed_rng()
            self._asked = True
            batch = [self.study.ask(distributions) for _ in range(min(n_jobs, n_trials - done - running))]
            with self._beats:
                self._in_flight.update((optuna_compat.trial_id(t), t) for t in batch)
        return batch

    def tell(self, trial: Trial, value: Optional[float]) -> FrozenTrial:
        """COMPLETE with `value`, or FAIL without one; a trial the job finished itself (PRUNED) stays."""
        with self._beats:
            self._in_flight.pop(optuna_compat.trial_id(trial), None)
        told = self._storage.get_trial(optuna_compat.trial_id(trial))
        if told.state.is_finished():  # pruned by its job: nothing to tell (Optuna would log a "Skipped")
            return told
        if value is None:
            return self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return self.study.tell(trial, value, skip_if_finished=True)

    def wait(self) -> None:
        """Sleep while other processes run the last trials (then check again: they may have died)."""
        if not self._waited:
            print(f"optuna: the last trials run in other processes; waiting for them (one silent for "
                  f"{SILENT_BEATS * self.interval:.0f} s was cut off and is re-run here)", flush=True)
            self._waited = True
        time.sleep(min(self.interval, 10.0))

    def close(self) -> None:
        """Stop beating; trials still in flight (the sweep was interrupted) are cut off now, so that the
        next run re-runs them at once."""
        self._stop.set()
        self._heart.join()
        with self._beats:
            left = list(self._in_flight.values())
            self._in_flight.clear()
        if left:
            with self._ask_lock():
                for trial in left:
                    self._cut_off(self._storage.get_trial(optuna_compat.trial_id(trial)))

    # ---- cut-off trials
    def _is_silent(self, trial: FrozenTrial) -> bool:
        """A RUNNING trial of another process whose heartbeat stopped."""
        if trial.state != TrialState.RUNNING or optuna_compat.trial_id(trial) in self._in_flight:
            return False
        beat = trial.system_attrs.get(HEARTBEAT) or {}
        last = beat.get("time") or (trial.datetime_start.timestamp() if trial.datetime_start else time.time())
        return time.time() - last > SILENT_BEATS * float(beat.get("interval", self.interval))

    def _cut_off(self, trial: FrozenTrial) -> bool:
        """Mark a RUNNING trial FAIL and queue its parameters again; False if it had finished."""
        if trial.state != TrialState.RUNNING:
            return False
        try:
            self._storage.set_trial_state_values(optuna_compat.trial_id(trial), TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False
        history = [*trial.system_attrs.get("retry_history", ()), trial.number]
        if len(history) > MAX_RETRIES:
            print(f"optuna: trial {trial.number} was cut off {len(history)} times; it stays failed")
            return True
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=trial.user_attrs, system_attrs={"failed_trial": history[0], "retry_history": history}))
        print(f"optuna: trial {trial.number} was cut off before it finished; its parameters are queued "
              f"again (the same command runs them)", flush=True)
        return True

    @contextlib.contextmanager
    def _ask_lock(self) -> Iterator[None]:
        journal = journal_file(self.storage_name)
        if journal is None:  # an RDB URL: no shared file to lock (processes may overshoot by a batch)
            yield
            return
        from optuna.storages.journal import JournalFileSymlinkLock

        lock = JournalFileSymlinkLock(f"{journal}.ask")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # ---- heartbeat
    def _beat_forever(self) -> None:
        while not self._stop.wait(self.interval):
            with self._beats:
                ids = list(self._in_flight)
            for trial_id in ids:
                try:
                    self._storage.set_trial_system_attr(trial_id, HEARTBEAT,
                                                        {"time": time.time(), "interval": self.interval})
                except UpdateFinishedTrialError:  # the job finished it itself (pruned)
                    pass
