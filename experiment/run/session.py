"""One training call inside a locked run directory: resume or start, record the status, fit, and
turn signals and failures into a status and an exit code."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

from experiment.errors import StorageError
from experiment.run.committer import Committer
from experiment.run.recording import EpochRecorder
from experiment.run.run_state import run_state_tree
from experiment.state.monitor import BestTracker
from experiment.state.rng import find_generators, seed_everything
from experiment.store import metadata as meta
from experiment.store.directory import RunDirectory
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted, interrupt_on_signals
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan

logger = logging.getLogger(__name__)


class TrainingSession:
    """Trains ``loop`` on ``plan`` in ``directory`` (whose lock the caller holds).

    Args:
        settings: what experiment.json records of the call (epochs, seed, monitor, cadence...).
        config: the user's hyperparameters, recorded in experiment.json and TensorBoard.
    """

    def __init__(
        self,
        directory: RunDirectory,
        loop: TrainingLoop,
        plan: TrainingPlan,
        *,
        monitor_mode: str,
        checkpoint_every: int | None,
        settings: dict[str, Any],
        config: dict[str, Any],
        tensorboard: bool,
    ) -> None:
        self.directory = directory
        self.loop = loop
        self.plan = plan
        self.settings = settings
        self.config = config
        self.recorder = EpochRecorder(directory, tensorboard=tensorboard, hparams=config)
        best = BestTracker(plan.monitor, monitor_mode)
        callbacks = plan.callbacks.callbacks
        tree = run_state_tree(loop, schedulers=plan.schedulers, callbacks=callbacks, best=best)
        self.committer = Committer(
            directory,
            tree,
            progress=loop.progress,
            best=best,
            network=loop.network,
            recorder=self.recorder,
            checkpoint_every=checkpoint_every,
            callbacks=callbacks,
        )

    def run(self, seed: int) -> list[dict[str, Any]]:
        """Resume from the newest checkpoint (or start afresh, seeded) and train to the plan's end."""
        loaders = [self.plan.train.loader, None if self.plan.valid is None else self.plan.valid.loader]
        self.loop.rng.track(find_generators(loaders))
        if not self.committer.restore(self.plan.epochs):
            self.loop.reset()
            seed_everything(seed)
        progress = self.loop.progress
        if progress.stop_training or progress.epochs_completed >= self.plan.epochs:
            self.write_status("stopped" if progress.stop_training else "finished")
            return progress.history
        return self._fit()

    def _fit(self) -> list[dict[str, Any]]:
        self.write_status("running")
        flag = InterruptFlag()
        try:
            self.recorder.open(self.loop.history)
            with interrupt_on_signals(flag):
                history = self.loop.fit(self.plan, self.committer, flag)
        except TrainingInterrupted as interrupted:
            self._interrupted(interrupted.signum)
        except KeyboardInterrupt:
            self.write_status("interrupted", "second SIGINT: stopped at once")
            raise
        except BaseException as error:
            with contextlib.suppress(StorageError):  # a full disk must not hide the original error
                self.write_status("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            self.recorder.close()
        self.write_status("stopped" if self.loop.stop_training else "finished")
        return history

    def _interrupted(self, signum: int) -> None:
        name = signal.Signals(signum).name
        where = f"epoch {self.loop.epochs_completed + 1}, step {self.loop.steps_in_epoch}"
        self.write_status("interrupted", f"{name} at {where}")
        logger.warning(
            "%s: checkpoint committed at %s in %s; run again to resume.", name, where, self.directory.path
        )
        raise SystemExit(128 + signum) from None

    def write_status(self, status: str, message: str | None = None) -> None:
        """Record ``status`` (and the call's settings and config) in experiment.json."""
        if self.directory.is_run():
            current = self.directory.read_metadata()
            current["settings"] = {**current.get("settings", {}), **self.settings}
            if self.config:
                current["config"] = self.config
        else:
            current = meta.new_metadata(self.config, self.settings)
        self.directory.write_metadata(meta.with_status(current, status, message))
