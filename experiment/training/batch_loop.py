"""The inner loop of training: each batch of an epoch stepped, counted, its hooks called, and a
commit point at each optimizer step.

As pseudocode (``step`` places each batch in its accumulation group, ``progress`` counts)::

    on_epoch_begin                 (not when an epoch resumes mid-way: its order is redrawn instead)
    for batch in the epoch's remaining batches:
        on_train_batch_begin -> step(batch, batch_number) -> progress.batch_done -> on_train_batch_end
        at a group's end (an optimizer step): the commit point
            signal received?     -> commits.commit("interrupt"); stop
            commits.due(step)?   -> commits.commit("step")
        stop_training?           -> leave the loop
    data ended inside a group?   -> step.end_group -> progress.optimizer_step_done -> the commit point

Under torchrun (a distributed ``world``) the ranks act on signals and stops only where they agree on
them: at commit points, and at the optimizer steps an :class:`AgreementSchedule` picks (every
second or so of training); before each commit every rank takes rank 0's buffers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

from torch import nn

from experiment.callbacks.callback_list import CallbackList
from experiment.errors import CheckpointError, NonFiniteLossError
from experiment.state.progress import Progress
from experiment.state.rng import RandomState
from experiment.training.accumulation import AccumulationGroups
from experiment.training.agreement_schedule import AgreementSchedule
from experiment.training.batches import batch_size
from experiment.training.data import BatchSource
from experiment.training.distributed import SINGLE, World
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator
from experiment.training.plan import CommitPoints
from experiment.training.step import TrainingStep


class BatchLoop:
    """The batches of one training call, epoch by epoch (:meth:`run`).

    Args:
        step: the training call's step.
        progress: the run's position, which counts the batches and optimizer steps.
        groups: the accumulation groups that ``step`` places the batches in.
        metrics: the training loss and metrics, updated with each batch.
        callbacks: their ``on_train_batch_begin`` and ``on_train_batch_end`` are called.
        commits: the receiver of the commit points.
        interrupt: the flag a signal sets.
        rng: the random state of the run's passes over the data (by default one tracking no loader).
        world: the processes of the run.
        agreements: when ranks agree on signals and stops between commit points.
        network: the trained module, whose buffers every rank takes from rank 0 before a commit.
    """

    def __init__(
        self,
        step: TrainingStep,
        *,
        progress: Progress,
        groups: AccumulationGroups,
        metrics: EpochAccumulator,
        callbacks: CallbackList,
        commits: CommitPoints,
        interrupt: InterruptFlag,
        rng: RandomState | None = None,
        world: World = SINGLE,
        agreements: AgreementSchedule | None = None,
        network: nn.Module | None = None,
    ) -> None:
        self.step = step
        self.progress = progress
        self.groups = groups
        self.metrics = metrics
        self.commits = commits
        self.interrupt = interrupt
        self.rng = rng or RandomState()
        self.callbacks = callbacks
        self.world = world
        self.agreements = agreements or AgreementSchedule()
        self.network = network
        self._begin = callbacks.listeners("on_train_batch_begin")
        self._end = callbacks.listeners("on_train_batch_end")
        #: The names of the batch values when a callback reads them (they are then copied from
        #: the device at each step), else None.
        self._names = metrics.batch_names() if callbacks.needs_batch_values else None

    def epoch_batches(self, source: BatchSource, epoch: int) -> Iterator[Any]:
        """The epoch's remaining batches of ``source``: all of them after ``on_epoch_begin``; or,
        in an epoch resumed mid-way, the pass's order redrawn, then the done batches skipped.

        Raises:
            CheckpointError: the epoch was resumed mid-way without the random state of its pass.
        """
        skip, rng = self.progress.steps_in_epoch, self.rng
        if skip == 0:
            self.metrics.reset()
            self.progress.start_clock(fresh=True)
            self.callbacks.call("on_epoch_begin", epoch, {})
            return source.epoch(on_pass=rng.pass_started)
        if rng.pass_snapshot is None:
            raise CheckpointError(
                f"The checkpoint stops {skip} step(s) into epoch {epoch} but holds no random state of "
                "that epoch's start, so its data order cannot be redrawn. Resume from another checkpoint."
            )
        rng.restore_pass()
        self.progress.start_clock(fresh=False)
        return source.epoch(skip, rng.restore_step, pass_skip=skip - rng.pass_step, on_pass=rng.pass_started)

    def run(self, batches: Iterable[Any]) -> None:
        """Train on ``batches``, the epoch's remaining ones: fetch, step, count, hooks, commit point."""
        step, progress, groups, begin, end = self.step, self.progress, self.groups, self._begin, self._end
        update, batch_done, one_process = self.metrics.update, progress.batch_done, not self.world.distributed
        for batch in batches:
            batch_number = progress.steps_in_epoch + 1
            for method in begin:
                method(batch_number, {})
            started = time.perf_counter()
            loss, y_pred, y = step(batch, batch_number)
            size = batch_size(batch, y)
            values = update(loss, y_pred, y, size)
            batch_done(groups.stepped)
            if end:
                self._batch_end(batch_number, size, started, values)
            # One process stops at once; ranks stop together, at a step where they agreed.
            agreed = self._commit_point() if groups.stepped else one_process
            if progress.stop_training and agreed:
                break
        if groups.pending and not progress.stop_training:  # the data ended inside a group
            step.end_group(progress.steps_in_epoch)
            progress.optimizer_step_done()
            self._commit_point()

    def _batch_end(self, batch_number: int, size: int, started: float, values: Any) -> None:
        logs = {"batch": batch_number, "size": size, "time": time.perf_counter() - started}
        if self._names is not None:
            logs.update(zip(self._names, values.reshape(-1).tolist()))
        for method in self._end:
            method(batch_number, logs)

    def _commit_point(self) -> bool:
        """After an optimizer step: commit and stop on a signal; commit when a step checkpoint is due.

        Ranks act on signals and stops only where they agree on them: at commit points and every
        second or so of training. Return whether they agreed here (always true for one process).
        """
        step = self.progress.global_step
        due = self.commits.due(step)
        signum = self.interrupt.signum
        if self.world.distributed:
            if not (due or self.agreements.due(step)):
                return False
            signum = self._agree(signum, step)
        if signum is not None:
            self._share_buffers()
            self.commits.commit("interrupt")
            raise TrainingInterrupted(signum)
        if due:
            if not self.progress.stop_training:
                check_finite(self.metrics.mean_loss(), self.progress)
            self._share_buffers()
            self.commits.commit("step")
        return True

    def _agree(self, signum: int | None, step: int) -> int | None:
        """Agree with the other ranks on a signal, a stop and the step of the next agreement."""
        progress, schedule = self.progress, self.agreements
        agreed = self.world.agree_on(
            signal=signum or 0, stop=int(progress.stop_training), next_step=schedule.proposal(step)
        )
        progress.stop_training = bool(agreed["stop"])
        schedule.agreed(agreed["next_step"])
        return agreed["signal"] or None

    def _share_buffers(self) -> None:
        if self.network is not None:
            self.world.share_buffers(self.network)


def check_finite(loss: float, progress: Progress) -> None:
    """Refuse a non-finite training loss in the current epoch, unless training was stopped.

    Raises:
        NonFiniteLossError: ``loss`` is NaN or infinite.
    """
    if not math.isfinite(loss) and not progress.stop_training:
        raise NonFiniteLossError(
            f"The training loss became {loss} in epoch {progress.epochs_completed + 1} (by global step "
            f"{progress.global_step}). Nothing of it was committed: the last checkpoint is "
            "intact. Lower the learning rate, clip gradients, check the data for NaN, or add the "
            "TerminateOnNaN callback to stop cleanly instead."
        )
