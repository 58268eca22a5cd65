"""One training call inside a locked run directory: resume or start, record the status, fit, and
turn signals and failures into a status and an exit code. A call with nothing to train (the run is
at its end) is answered by :mod:`experiment.run.nothing_to_train`.

In a distributed run every rank runs the session; rank 0 alone writes experiment.json, log.tsv and
TensorBoard (the other ranks take part in the commits, see :mod:`experiment.run.commits`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import types
from typing import Any

from experiment.errors import StorageError
from experiment.run.commits import Committer, commit_backend
from experiment.run.creation import creation_record
from experiment.run.elastic import reshared
from experiment.run.nothing_to_train import asks_for_less, end_without_training
from experiment.run.recording import EpochRecorder
from experiment.run.run_record import RunRecord
from experiment.run.run_state import run_state_tree
from experiment.run.settings import RunSettings
from experiment.run.slurm import SlurmJob, after_stop, warning_signal
from experiment.state.best_tracker import BestTracker
from experiment.state.progress import Progress
from experiment.state.rng import RandomState, find_epoch_samplers, find_generators, seed_everything
from experiment.store.checkpoints import peek_progress
from experiment.store.directory import RunDirectory
from experiment.training.distributed import lost_peer_reason
from experiment.training.interrupts import SIGNALS, InterruptFlag, TrainingInterrupted, interrupt_on_signals
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan

logger = logging.getLogger(__name__)


class TrainingSession:
    """Trains ``loop`` on ``plan`` in ``directory`` (whose lock the caller holds).

    Args:
        settings: the call's settings, recorded in experiment.json as they are.
        config: the user's hyperparameters, recorded in experiment.json and TensorBoard.
        tensorboard: whether to write TensorBoard scalars.
        fresh_objects: whether the network and optimizer are untrained in this process (their
            hyperparameters are then compared with the run's).
        slurm: the SLURM job this process runs in (see :mod:`experiment.run.slurm`), or None. In a
            job, the warning signal stops training as SIGTERM does, a repeated signal never cuts
            the commit short, and after the commit rank 0 requeues the job (or says why not).
    """

    def __init__(
        self,
        directory: RunDirectory,
        loop: TrainingLoop,
        plan: TrainingPlan,
        settings: RunSettings,
        *,
        config: dict[str, Any],
        tensorboard: bool,
        fresh_objects: bool = True,
        slurm: SlurmJob | None = None,
    ) -> None:
        self.directory = directory
        self.slurm = slurm
        self.warning = warning_signal() if slurm is not None else None
        self.loop = loop
        self.plan = plan
        self.settings = settings
        self.world = loop.world
        #: Whether this process writes the run's files (rank 0; the strategy decides).
        self.writes = loop.strategy.writes
        self.record = RunRecord(
            directory,
            creation=creation_record(loop, plan),
            config=config,
            settings=settings,
            fresh_objects=fresh_objects,
            slurm=slurm,
        )
        self.recorder = EpochRecorder(directory, tensorboard=tensorboard, hparams=config)
        #: The interrupt flag of the training in progress (see :meth:`_fit_and_wait`).
        self._flag = InterruptFlag()
        best = BestTracker(plan.monitor, settings.monitor_mode)
        callbacks = plan.callbacks.callbacks
        loaders = [plan.train.loader, None if plan.valid is None else plan.valid.loader]
        self.rng = RandomState(find_generators(loaders), find_epoch_samplers([plan.train.loader]))
        tree = run_state_tree(
            loop,
            self.rng,
            schedulers=plan.schedulers,
            callbacks=callbacks,
            best=best,
            exact=plan.elastic == "exact",
        )
        self.committer = Committer(
            directory,
            tree,
            progress=loop.progress,
            best=best,
            recorder=self.recorder,
            backend=commit_backend(
                sharded=loop.strategy.shards_state, asynchronous=settings.async_checkpoint
            ),
            checkpoint_every=settings.checkpoint_every,
            callbacks=callbacks,
            world=self.world,
            run_id=lambda: self.record.run_id,
            on_first_commit=self._mark_committed,
            reshare=functools.partial(reshared, seed=settings.seed) if plan.elastic else None,
        )

    def _mark_committed(self) -> None:
        metadata = self.directory.read_metadata()
        if not metadata.get("committed"):
            self.directory.write_metadata({**metadata, "committed": True})

    def run(self) -> list[dict[str, Any]]:
        """Resume from the newest checkpoint (or start afresh, seeded) and train to the plan's end.

        Raises:
            StateMismatchError: the checkpoint, or this call's objects and data, do not fit the run.
            RunDirectoryError: the directory has a history but no checkpoint to resume from.
        """
        if self.writes:
            self._announce_resume()
        restored = self.committer.restore(self.plan.epochs, check=self.record.problems)
        #: More ``params`` for the callbacks: the run directory and the checkpoint resumed from.
        self.callback_params = {**self.committer.restored_from(), "directory": str(self.directory.path)}
        if restored:
            position = f"epoch {self.loop.epochs_completed + 1}, step {self.loop.steps_in_epoch}"
            over = self.loop.progress.is_over(self.plan.epochs)
            if self.writes:
                self.record.resumed(self.committer.restored_run_id, position, over=over)
        else:
            self.world.on_main(self.record.refuse_lost_history)
            self.loop.reset()
            seed_everything(self.settings.seed + self.world.rank)  # each rank draws its own dropout masks
        if self.loop.progress.is_over(self.plan.epochs):
            # asks_for_less warns with a stacklevel that counts run() and Experiment.train().
            if not asks_for_less(self.record, self.loop.epochs_completed, warn=self.writes):
                self.write_status(end_without_training(self.record, self.loop, self.plan))
            return self.loop.history
        return self._fit(resumed=restored)

    def _announce_resume(self) -> None:
        """Let the progress display say where the run resumes before its checkpoint, maybe large,
        is loaded (read from the newest state file without reading its tensors)."""
        announce = [
            cb.announce_start
            for cb in self.plan.callbacks.callbacks
            if callable(getattr(cb, "announce_start", None))
        ]
        newest = self.directory.checkpoints()[:1]
        progress = peek_progress(newest[0].tree_path) if announce and newest else None
        if progress is None or Progress.saved_is_over(progress, self.plan.epochs):
            return  # a fresh start, or no more training: on_train_begin says it, if it runs
        params = {
            "epochs": self.plan.epochs,
            "steps_per_epoch": self.plan.train.steps_per_epoch,
            "directory": str(self.directory.path),
            "checkpoint": newest[0].name,
            "checkpoint_time": newest[0].modified(),
        }
        position = types.SimpleNamespace(**{key: progress[key] for key in Progress.POSITION})
        for method in announce:
            method(params, position)

    def _fit(self, *, resumed: bool) -> list[dict[str, Any]]:
        """Train, then wait for the commit in flight before the status changes and before the
        directory lock is released (a next process must never find our temporary file)."""
        self.write_status("running")
        try:
            history = self._fit_and_wait(resumed)
        except TrainingInterrupted as interrupted:
            self._interrupted(interrupted.signum)
        except KeyboardInterrupt:
            self._flag.restore_handlers()
            self.committer.wait(quiet=True)
            self.write_status("interrupted", "second SIGINT: stopped at once")
            raise
        except BaseException as error:
            self._flag.restore_handlers()  # a stop whose commit failed: the script goes on
            self.committer.wait(quiet=True)
            # Under torchrun, a rank killed or crashed makes the others' collectives fail: for them
            # the run was interrupted (it resumes from the last commit), not failed.
            peer = lost_peer_reason(error) if self.world.distributed else None
            status, message = (
                ("interrupted", peer) if peer else ("failed", f"{type(error).__name__}: {error}")
            )
            with contextlib.suppress(StorageError):  # a full disk must not hide the original error
                self.write_status(status, message)
            raise
        finally:
            self.recorder.close()
        self.write_status("stopped" if self.loop.stop_training else "finished")
        return history

    def _fit_and_wait(self, resumed: bool) -> list[dict[str, Any]]:
        flag = self._flag = InterruptFlag()
        if self.writes:
            self.recorder.open(self.loop.history)
        try:
            extra = () if self.warning is None else (self.warning,)
            with interrupt_on_signals(flag, extra=extra, once=self.slurm is not None):
                history = self.loop.fit(
                    self.plan,
                    self.committer.policy,
                    flag,
                    rng=self.rng,
                    resumed=resumed,
                    callback_params=self.callback_params,
                )
        except TrainingInterrupted:
            self.committer.wait()  # the interrupt's commit is durable before the exit
            raise
        self.committer.wait()  # a failure of the last write is raised here
        return history

    def _interrupted(self, signum: int) -> None:
        name = signal.Signals(signum).name
        where = f"epoch {self.loop.epochs_completed + 1}, step {self.loop.steps_in_epoch}"
        if self.slurm is not None:
            self._stopped_in_job(signum, f"{name} at {where}")
            return
        self.write_status("interrupted", f"{name} at {where}")
        if self.writes:
            logger.warning(
                "%s: checkpoint committed at %s in %s; run again to resume.", name, where, self.directory.path
            )
        if self.world.distributed:
            self.world.barrier()  # no rank leaves before rank 0 has recorded the stop
            # torchrun stops the other ranks when the first exits; they are exiting already, with
            # this code, and must not die of that signal on the way.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(128 + signum) from None

    def _stopped_in_job(self, signum: int, stop: str) -> None:
        """In a SLURM job, after the commit: rank 0 requeues the job (unless its user cancelled it,
        or SLURM requeued it), records why, and every rank exits, with 143 for SIGTERM and the
        warning signal (the job was terminated either way). Signals stay ignored from here on."""
        assert self.slurm is not None
        # Every rank ignores the signals before the requeue, whose SIGTERM follows it by about
        # 0.1 s: a rank that learnt of the stop only from the others still has its own handlers.
        for ignored in dict.fromkeys((*SIGNALS, *(() if self.warning is None else (self.warning,)))):
            signal.signal(ignored, signal.SIG_IGN)
        self.world.barrier()
        try:
            if self.writes:
                outcome = after_stop(self.slurm, signum, self.warning)
                self.write_status("interrupted", f"{stop}; {outcome.message}")
                then = "it resumes when the job runs again" if outcome.requeued else "resubmit to resume"
                logger.warning(
                    "%s: checkpoint committed in %s; %s; %s.",
                    stop,
                    self.directory.path,
                    outcome.message,
                    then,
                )
        finally:  # reached by rank 0 even when recording fails, so that no rank waits forever
            self.world.barrier()  # no rank leaves before rank 0 has requeued and recorded the stop
        code = signal.SIGTERM if signum == self.warning else signum
        raise SystemExit(128 + code) from None

    def write_status(self, status: str, message: str | None = None) -> None:
        """Record ``status`` (and the call's settings, config and changes) in experiment.json (on
        rank 0 of a distributed run; the other ranks write nothing)."""
        if not self.writes:
            return
        self.directory.write_metadata(self.record.with_status(status, message))
