"""The training and evaluation loop: no file I/O of its own, no knowledge of paths.

Hook order, as pseudocode (``commits`` are the commit points the Experiment passes in; they own
the cadence of step checkpoints)::

    on_train_begin
    for epoch in epochs_completed + 1 .. epochs:        # while not stop_training
        on_epoch_begin                                     (skipped when resuming mid-epoch)
        for batch in the epoch's remaining batches:   (each pass of the loader: save the random state)
            on_train_batch_begin -> zero_grad, forward, loss -> backward -> on_backward_end
            -> optimizer.step -> on_train_batch_end   (forward, loss: train_step(trainer, batch) if
                                                       set; use_train_step's step(x, y) does all from
                                                       zero_grad to step, without on_backward_end)
            signal received?       -> commits.commit("interrupt"); stop
            commits.due(step)?     -> commits.commit("step")
            stop_training?         -> leave the batch loop
        on_valid_begin, (on_valid_batch_begin, on_valid_batch_end)*, on_valid_end
        schedulers step (ReduceLROnPlateau on the monitored value) -> on_epoch_end
        -> progress.epoch_done(logs) -> commits.commit("epoch")
    on_train_end

Under torchrun (a distributed ``world``) the ranks act on signals and stops only where they agree
on them (:meth:`TrainingLoop._commit_point`: at commit points and every second or so of training;
and at the epoch's end, after validation, which no signal interrupts); before validation and
before each commit every rank takes rank 0's buffers; logged values are summed over the ranks.

Progress is counted in completed units by the ``progress`` node (:class:`~experiment.state.progress.Progress`):
``epochs_completed``, ``steps_in_epoch`` (training steps done in the current epoch) and
``global_step``; the ``rng`` node (:class:`~experiment.state.rng.RandomState`) holds the random
state of each pass start and of the committed step. Resuming mid-epoch restores the random state of the start
of the loader's current pass (the epoch start, unless the epoch spans several passes), lets the data
source redraw that pass's order and skip its consumed batches, then restores the random state of
the step (the fast-forward first, the random state last); ``on_epoch_begin`` is not called again
for that epoch, since the saved callback states already saw it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from experiment.callbacks.callback_list import CallbackList
from experiment.errors import CheckpointError, ConfigurationError, DataError, NonFiniteLossError
from experiment.state.learning_rates import lr_logs
from experiment.state.progress import Progress
from experiment.state.rng import RandomState
from experiment.training.batches import batch_size, split_batch
from experiment.training.custom_step import TrainStep, UserStep, bind_step, move_whole
from experiment.training.distributed import SINGLE, AgreementSchedule, World, sharing_problems
from experiment.training.epoch_logs import plain_logs, step_schedulers
from experiment.training.evaluation import evaluate, measure_for
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator, MetricFn
from experiment.training.plan import CommitPoints, NoCommits, TrainingPlan
from experiment.training.precision import Precision
from experiment.training.progress_view import ProgressView
from experiment.training.step import StepRunner


class TrainingLoop(ProgressView):
    """A network with its optimizer, loss and metrics, and the position of its training.

    The loop is what callbacks see as their trainer: ``network``, ``optimizer``,
    ``stop_training``, ``epochs_completed``, ``steps_in_epoch``, ``global_step`` and ``history``.
    Its memory of the run lives in three state nodes: ``progress``, ``rng`` and ``train_metrics``.

    Args:
        network: the module to train.
        optimizer: a torch optimizer over the network's parameters.
        loss_function: ``(y_pred, y_true) -> scalar tensor``.
        batch_metrics: named callables averaged over the epoch.
        epoch_metrics: named objects with update/compute/reset.
        device: where batches are moved before the forward pass.
        precision: full or mixed precision (default "32-true").
        accumulate_grad_batches: batches per optimizer step; ``global_step`` counts optimizer
            steps, ``steps_in_epoch`` batches.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[[Any, Any], torch.Tensor],
        *,
        batch_metrics: list[tuple[str, MetricFn]],
        epoch_metrics: list[tuple[str, Any]],
        device: torch.device,
        precision: Precision | None = None,
        accumulate_grad_batches: int = 1,
        world: World = SINGLE,
    ) -> None:
        unsynced = sharing_problems(epoch_metrics) if world.distributed else []
        if unsynced:
            raise ConfigurationError(
                f"epoch_metrics {unsynced}: under torchrun ({world.size} processes) an epoch metric must "
                "combine every rank's batches; expected a metric name (such as 'f1') or a torchmetrics "
                "Metric, which sync across processes when computed."
            )
        self.network = network
        self.world = world
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.device = device
        self.precision = precision or Precision("32-true", device.type, None)
        self.steps = StepRunner(network, optimizer, loss_function, self.precision, accumulate_grad_batches)
        self._agreements = AgreementSchedule()
        #: Whether the next training step is the first since the state was loaded (see _warm_up).
        self.resumed = False
        #: Whether the batch that just ended also ended an accumulation group (an optimizer step).
        self.optimizer_stepped = False
        self.train_metrics = EpochAccumulator(batch_metrics, epoch_metrics, device, world)
        self.eval_metrics = EpochAccumulator(batch_metrics, copy.deepcopy(epoch_metrics), device, world)
        self.progress = Progress()
        self.rng = RandomState()
        self.train_step: TrainStep | None = None
        #: The custom evaluation step (see :meth:`use_custom_steps`), or None for ``(x, y)`` batches.
        self.eval_step: UserStep | None = None
        #: The DistributedDataParallel module the user built around ``network``, if any (else the
        #: loop wraps it under torchrun, for the duration of :meth:`fit`).
        self.ddp: nn.Module | None = None
        #: The custom training step of :meth:`use_custom_steps`, or None.
        self.custom_train_step: UserStep | None = None

    def use_train_step(self, step: TrainStep | None) -> None:
        """Train with ``step(x, y) -> (loss, y_pred)`` instead of the built-in step (None: built-in).

        Raises:
            ConfigurationError: with mixed precision or gradient accumulation, which the built-in
                step implements and a custom step would bypass.
        """
        if step is not None and (self.precision.mixed or self.steps.accumulate > 1):
            raise ConfigurationError(
                f"train_step: received a custom step with precision={self.precision.name!r} and "
                f"accumulate_grad_batches={self.steps.accumulate}; expected the defaults ('32-true', 1): "
                "a custom step does its own forward, backward and optimizer step."
            )
        self.train_step = step

    def use_custom_steps(self, train_step: UserStep | None, eval_step: UserStep | None = None) -> None:
        """Compute each batch's loss with ``train_step(trainer, batch)`` (and ``eval_step`` in
        validation and test; by default ``train_step``) instead of the forward pass and the loss.

        See :mod:`experiment.training.custom_step`. The loop still does ``zero_grad``, autocast,
        backward, ``on_backward_end`` and the optimizer step; None: the built-in ``(x, y)`` step.
        """
        step = train_step
        self.steps.compute = None if step is None else bind_step(step, self, "train_step", self.train_metrics)
        self.custom_train_step = train_step
        self.eval_step = eval_step or train_step

    def reset(self) -> None:
        """Forget the position, history and random state of an earlier run (a fresh start)."""
        self.progress.reset()
        self.rng.reset()
        self.resumed = False

    # ----------------------------------------------------------------------------------- training
    def fit(
        self, plan: TrainingPlan, commits: CommitPoints | None = None, interrupt: InterruptFlag | None = None
    ) -> list[dict[str, Any]]:
        """Train until ``plan.epochs`` epochs are completed or a callback stops training."""
        commits = commits or NoCommits()
        interrupt = interrupt or InterruptFlag()
        params = {
            "epochs": plan.epochs,
            "steps_per_epoch": plan.train.steps_per_epoch,
            **plan.callback_params,
        }
        plan.callbacks.setup(params, self)
        if not self.progress.mid_epoch:
            self.rng.restore_step()
        plan.callbacks.call("on_train_begin", {})
        # Under torchrun the steps go through DDP, which starts from rank 0's parameters.
        with self.world.training_through_ddp(self.network, self.device, self.steps.use_network, self.ddp):
            while self.progress.epochs_completed < plan.epochs and not self.progress.stop_training:
                self._run_epoch(plan, commits, interrupt)
        plan.callbacks.call("on_train_end", {})
        return self.history

    def _run_epoch(self, plan: TrainingPlan, commits: CommitPoints, interrupt: InterruptFlag) -> None:
        epoch = self.progress.epochs_completed + 1
        skipped = self.progress.steps_in_epoch
        batches = self._epoch_batches(plan, epoch)
        self.network.train()
        trained = self._train_batches(batches, plan, commits, interrupt)
        remaining = None if plan.train.steps_per_epoch is None else plan.train.steps_per_epoch - skipped
        if trained == 0 and (skipped == 0 or (remaining is not None and remaining > 0)):
            raise DataError(f"{plan.train.role} yielded no batches in epoch {epoch}; expected at least one.")
        logs: dict[str, Any] = {"epoch": epoch, **lr_logs(self.optimizer)}
        logs.update(self.train_metrics.averages())
        self._check_finite(logs["loss"], epoch)
        self.world.share_buffers(self.network)  # what is evaluated and committed is rank 0's model
        if plan.valid is not None:
            logs.update(self._validate(plan.valid, plan.callbacks, commits, interrupt))
        signum, epoch_time = self._agree_at_epoch_end(interrupt.signum, self.progress.read_clock())
        logs = plain_logs({"epoch": epoch, "time": epoch_time, **logs}, epoch)
        epoch_schedulers = plan.schedulers if plan.epoch_schedulers is None else plan.epoch_schedulers
        step_schedulers(epoch_schedulers, logs, plan.monitor)
        plan.callbacks.call("on_epoch_end", epoch, logs)
        if self.world.distributed:  # a stop decided by a callback on one rank only
            self.progress.stop_training = bool(self.world.agree([int(self.progress.stop_training)])[0])
        self.progress.epoch_done(plain_logs(logs, epoch))
        self.rng.epoch_finished()
        commits.commit("epoch")
        if signum is not None:  # received during the epoch's end; its commit is the one above
            raise TrainingInterrupted(signum)

    def _epoch_batches(self, plan: TrainingPlan, epoch: int) -> Iterator[Any]:
        """The epoch's remaining batches; a resumed epoch redraws its order, then skips the done ones."""
        skip = self.progress.steps_in_epoch
        if skip == 0:
            self.train_metrics.reset()
            self.progress.start_clock(fresh=True)
            plan.callbacks.call("on_epoch_begin", epoch, {})
            return plan.train.epoch(on_pass=self.rng.pass_started)
        if self.rng.pass_snapshot is None:
            raise CheckpointError(
                f"The checkpoint stops {skip} step(s) into epoch {epoch} but holds no random state of "
                "that epoch's start, so its data order cannot be redrawn. Resume from another checkpoint."
            )
        self.rng.restore_pass()
        self.progress.start_clock(fresh=False)
        return plan.train.epoch(
            skip, self.rng.restore_step, pass_skip=skip - self.rng.pass_step, on_pass=self.rng.pass_started
        )

    def _train_batches(
        self, batches: Iterator[Any], plan: TrainingPlan, commits: CommitPoints, interrupt: InterruptFlag
    ) -> int:
        """Train on ``batches``; return how many there were."""
        callbacks = plan.callbacks
        begin = callbacks.listeners("on_train_batch_begin")
        end = callbacks.listeners("on_train_batch_end")
        backward_end = callbacks.listeners("on_backward_end")
        with_values = callbacks.needs_batch_values
        names = self.train_metrics.batch_names()
        progress, accumulate, last = self.progress, self.steps.accumulate, plan.train.steps_per_epoch
        custom = self.steps.compute is not None
        split: Callable[[Any, torch.device], tuple[Any, Any]] = move_whole if custom else split_batch
        run = (self.steps.run_custom if custom else self.steps.run) if self.train_step is None else None
        one_process = not self.world.distributed
        trained = 0
        for batch in batches:
            batch_number = progress.steps_in_epoch + 1
            for method in begin:
                method(batch_number, {})
            started = time.perf_counter()
            x, y = split(batch, self.device)
            if accumulate == 1:
                group_start = group_end = True
            else:
                group_start = batch_number % accumulate == 1
                group_end = batch_number % accumulate == 0 or batch_number == last
            if self.resumed:
                self._warm_up(x, y)
            if run is None:
                loss, y_pred = self.train_step(x, y)  # type: ignore[misc]
            else:
                loss, y_pred, y = run(x, y, batch_number, backward_end, group_start, group_end)
            size = batch_size(x, y)
            values = self.train_metrics.update(loss, y_pred, y, size)
            progress.steps_in_epoch += 1
            progress.global_step += group_end
            self.optimizer_stepped = group_end
            trained += 1
            if end:
                logs = {"batch": batch_number, "size": size, "time": time.perf_counter() - started}
                if with_values:
                    logs.update(zip(names, values.reshape(-1).tolist()))
                for method in end:
                    method(batch_number, logs)
            # One process stops at once; ranks stop together, at a step where they agreed.
            agreed = self._commit_point(commits, interrupt) if group_end else one_process
            if progress.stop_training and agreed:
                break
        if self.steps.pending and not progress.stop_training:  # the epoch's last, shorter group
            self.steps.optimizer_step(progress.steps_in_epoch, backward_end)
            progress.global_step += 1
            self._commit_point(commits, interrupt)
        return trained

    def _warm_up(self, x: Any, y: Any) -> None:
        """Before the first step of a resumed distributed run, one step that leaves no trace, so
        that DDP's gradient buckets are laid out as in the uninterrupted run (see StepRunner.warm_up)."""
        self.resumed = False
        if self.world.distributed and self.train_step is None:
            self.steps.warm_up(x, y)

    def _commit_point(self, commits: CommitPoints, interrupt: InterruptFlag) -> bool:
        """After an optimizer step: commit and stop on a signal; commit when a step checkpoint is due.

        Ranks act on signals and stops only where they agree on them: at commit points and every
        second or so of training. Return whether they agreed here (always true for one process).
        """
        step = self.progress.global_step
        due = commits.due(step)
        signum = interrupt.signum
        if self.world.distributed:
            if not (due or self._agreements.due(step)):
                return False
            signum = self._agree_in_epoch(signum, step)
        if signum is not None:
            self.world.share_buffers(self.network)
            commits.commit("interrupt")
            raise TrainingInterrupted(signum)
        if due:
            if not self.progress.stop_training:
                self._check_finite(self.train_metrics.mean_loss(), self.progress.epochs_completed + 1)
            self.world.share_buffers(self.network)
            commits.commit("step")
        return True

    def _agree_in_epoch(self, signum: int | None, step: int) -> int | None:
        """Agree with the other ranks on a signal, a stop and the step of the next agreement."""
        progress, schedule = self.progress, self._agreements
        agreed = self.world.agree([signum or 0, int(progress.stop_training), schedule.proposal(step)])
        progress.stop_training = bool(agreed[1])
        schedule.agreed(agreed[2])
        return agreed[0] or None

    def _agree_at_epoch_end(self, signum: int | None, epoch_time: float) -> tuple[int | None, float]:
        """With other ranks: a signal received by any rank during the epoch's end, a stop asked on
        any rank, and the epoch's time (the slowest rank's). One process: no signal (it was acted
        on during validation), its own time."""
        if not self.world.distributed:
            return None, epoch_time
        agreed = self.world.agree([signum or 0, int(self.progress.stop_training), round(epoch_time * 1e6)])
        self.progress.stop_training = bool(agreed[1])
        return agreed[0] or None, agreed[2] / 1e6

    def _validate(
        self, valid: Any, callbacks: CallbackList, commits: CommitPoints, interrupt: InterruptFlag
    ) -> dict[str, Any]:
        self.rng.pin()  # an interrupt during validation commits the random state of the end of training
        try:
            # Ranks do not stop inside validation (their shards may differ in length): a signal is
            # agreed on at the epoch's end, after the validation.
            return self.evaluate(valid, "val", callbacks, None if self.world.distributed else interrupt)
        except TrainingInterrupted:
            commits.commit("interrupt")
            raise
        finally:
            self.rng.unpin()

    def _check_finite(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss) and not self.progress.stop_training:
            raise NonFiniteLossError(
                f"The training loss became {loss} in epoch {epoch} (by global step "
                f"{self.progress.global_step}). Nothing of it was committed: the last checkpoint is "
                "intact. Lower the learning rate, clip gradients, check the data for NaN, or add the "
                "TerminateOnNaN callback to stop cleanly instead."
            )

    # --------------------------------------------------------------------------------- evaluation
    def evaluate(
        self,
        source: Any,
        prefix: str,
        callbacks: CallbackList,
        interrupt: InterruptFlag | None = None,
        *,
        predictions: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Run the network over ``source`` without gradients, in the run's precision; return
        ``{prefix}_loss`` and the metrics (each batch's output appended to ``predictions`` if given)."""
        return evaluate(
            self.network,
            measure_for(self, source.role),
            self.eval_metrics,
            source,
            prefix,
            callbacks,
            interrupt,
            autocast=self.precision.autocast,
            predictions=predictions,
        )
