"""The training and evaluation loop: no file I/O of its own, no knowledge of paths.

Hook order, as pseudocode (``commits`` are the commit points the Experiment passes in; they own
the cadence of step checkpoints; the batches are :class:`~experiment.training.batch_loop.BatchLoop`'s)::

    on_train_begin; step = the call's TrainingStep (built-in, custom or train_model's; built once)
    for epoch in epochs_completed + 1 .. epochs:        # while not stop_training
        on_epoch_begin                                     (skipped when resuming mid-epoch)
        for batch in the epoch's remaining batches:   (each pass of the loader: save the random state)
            on_train_batch_begin -> step(batch, batch_number) (zero_grad at a group's start; forward,
            loss -> backward; at its end on_backward_end -> optimizer.step) -> progress.batch_done
            -> on_train_batch_end
            at a group's end: signal received?   -> commits.commit("interrupt"); stop
                              commits.due(step)? -> commits.commit("step")
            stop_training?         -> leave the batch loop
        data ended inside a group? -> step.end_group (on_backward_end -> optimizer.step), commit point
        on_valid_begin, (on_valid_batch_begin, on_valid_batch_end)*, on_valid_end
        schedulers step (ReduceLROnPlateau on the monitored value) -> on_epoch_end
        -> progress.epoch_done(logs) -> commits.commit("epoch")
    on_train_end

Under torchrun (a distributed ``world``) the ranks agree on signals and stops at commit points,
every second or so of training, and at the epoch's end (after validation, which no signal
interrupts); before validation and before each commit every rank takes rank 0's buffers; logged
values are summed over the ranks. An elastic run's training batches are this rank's slices of global
batches (:mod:`experiment.training.elastic_data`), their losses weighted by the rank's share; with
``elastic="exact"`` the step is :class:`~experiment.training.exact_step.ExactStep`, one group of
samples at a time, its gradients summed exactly.

Progress is counted in completed units by the ``progress`` node (:class:`~experiment.state.progress.Progress`):
``epochs_completed``, ``steps_in_epoch`` (batches done in the current epoch) and ``global_step``
(optimizer steps); the ``rng`` node (:class:`~experiment.state.rng.RandomState`) holds the random
state of each pass start and of the committed step. Resuming mid-epoch restores the random state of
the start of the loader's current pass (the epoch start, unless the epoch spans several passes),
lets the data source redraw that pass's order and skip its consumed batches, then restores the
random state of the step (the fast-forward first, the random state last); ``on_epoch_begin`` is not
called again for that epoch, since the saved callback states already saw it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiment.errors import DataError
from experiment.state.learning_rates import lr_logs
from experiment.state.progress import Progress
from experiment.state.rng import RandomState
from experiment.training.accumulation import AccumulationGroups
from experiment.training.agreement_schedule import AgreementSchedule
from experiment.training.batch_loop import BatchLoop, check_finite
from experiment.training.custom_step import UserStep
from experiment.training.distributed import SINGLE
from experiment.training.elastic_data import elastic_sampler, loss_weights
from experiment.training.epoch_logs import plain_logs, step_schedulers
from experiment.training.evaluation import LoopEvaluation
from experiment.training.exact_step import ExactStep
from experiment.training.exact_sum import SummationGrid
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator, MetricFn
from experiment.training.plan import CommitPoints, NoCommits, TrainingPlan
from experiment.training.precision import Precision
from experiment.training.progress_view import ProgressView
from experiment.training.step import StepParts, TrainingStep
from experiment.training.step_choice import StepChoice, StepSetup
from experiment.training.strategy import Strategy


class TrainingLoop(StepSetup, ProgressView, LoopEvaluation):
    """A network with its optimizer, loss and metrics, and the position of its training.

    The loop is what callbacks see as their trainer: ``network``, ``optimizer``,
    ``stop_training``, ``epochs_completed``, ``steps_in_epoch``, ``global_step``,
    ``optimizer_stepped`` and ``history``. Its memory of the run lives in three state nodes:
    ``progress``, ``rng`` and ``train_metrics``.

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
        strategy: how the run is spread over processes (:mod:`experiment.training.strategy`): its
            world's collectives, and the module the steps go through while :meth:`fit` trains.
            By default one process.
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
        strategy: Strategy | None = None,
    ) -> None:
        strategy = strategy or Strategy(SINGLE)
        world = strategy.world
        self.network = network
        self.strategy = strategy
        self.world = world
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.device = device
        self.precision = precision or Precision("32-true", device.type, None)
        self.accumulate_grad_batches = accumulate_grad_batches
        #: The accumulation groups of the current (or last) training call.
        self.accumulation = AccumulationGroups(accumulate_grad_batches)
        self._agreements = AgreementSchedule()
        self.train_metrics = EpochAccumulator(batch_metrics, epoch_metrics, device, world)
        self.eval_metrics = EpochAccumulator(batch_metrics, copy.deepcopy(epoch_metrics), device, world)
        self.progress = Progress()
        self.rng = RandomState()
        #: The grids that ``elastic="exact"`` rounds gradients on, kept from step to step.
        self.summation_grid = SummationGrid()
        #: The custom training step of :meth:`use_custom_steps`, or None.
        self.custom_train_step: UserStep | None = None
        #: The custom evaluation step (see :meth:`use_custom_steps`), or None for ``(x, y)`` batches.
        self.eval_step: UserStep | None = None
        #: The step this loop trains with (built once per :meth:`fit`).
        self.steps = StepChoice(loss_function, self.precision, accumulate_grad_batches)

    def reset(self) -> None:
        """Forget the position, history and random state of an earlier run (a fresh start)."""
        self.progress.reset()
        self.rng.reset()
        self.summation_grid.reset()

    # ----------------------------------------------------------------------------------- training
    def fit(
        self,
        plan: TrainingPlan,
        commits: CommitPoints | None = None,
        interrupt: InterruptFlag | None = None,
        *,
        rng: RandomState | None = None,
        resumed: bool = False,
        callback_params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``plan.epochs`` epochs are completed or a callback stops training.

        Args:
            rng: the run's random-state node, which knows the plan's loaders (by default the
                loop's own, which tracks none).
            resumed: whether the state was just loaded from a checkpoint (under torchrun the first
                step is then preceded by a warm-up step that leaves no trace).
            callback_params: more ``params`` for the callbacks (the run layer gives ``directory``,
                ``checkpoint`` and ``checkpoint_time``, which the progress display names).
        """
        commits = commits or NoCommits()
        interrupt = interrupt or InterruptFlag()
        if rng is not None:
            self.rng = rng
        params = {
            "epochs": plan.epochs,
            "steps_per_epoch": plan.train.steps_per_epoch,
            **(callback_params or {}),
        }
        plan.callbacks.setup(params, self)
        if not self.progress.mid_epoch:
            self.rng.restore_step()
        plan.callbacks.call("on_train_begin", {})
        # Under torchrun the steps go through DDP, which starts from rank 0's parameters.
        with self.strategy.training(self.network, self.device) as module:
            batches = self._batch_loop(module, plan, commits, interrupt, resumed)
            while self.progress.epochs_completed < plan.epochs and not self.progress.stop_training:
                self._run_epoch(plan, batches, commits, interrupt)
        plan.callbacks.call("on_train_end", {})
        return self.history

    def _batch_loop(
        self,
        module: nn.Module,
        plan: TrainingPlan,
        commits: CommitPoints,
        interrupt: InterruptFlag,
        resumed: bool,
    ) -> BatchLoop:
        """The inner loop of a training call, with its step built (once) to go through ``module``."""
        self.accumulation = AccumulationGroups(
            self.accumulate_grad_batches, plan.train.steps_per_epoch, loss_weights(plan.train.loader)
        )
        backward_end = plan.callbacks.listeners("on_backward_end")
        warm_up = resumed and self.strategy.warms_up_on_resume
        parts = StepParts(
            module, self.optimizer, self.precision, self.device, self.accumulation, backward_end, warm_up
        )
        sampler = elastic_sampler(plan.train.loader)
        if sampler is not None and sampler.groups is not None:  # elastic="exact": summed exactly
            step: TrainingStep = ExactStep(
                parts, self.loss_function, sampler, self.world, self.summation_grid
            )
        else:
            step = self.steps.build(parts)
        return BatchLoop(
            step,
            progress=self.progress,
            groups=self.accumulation,
            metrics=self.train_metrics,
            callbacks=plan.callbacks,
            commits=commits,
            interrupt=interrupt,
            rng=self.rng,
            world=self.world,
            agreements=self._agreements,
            network=self.network,
        )

    def _run_epoch(
        self, plan: TrainingPlan, batches: BatchLoop, commits: CommitPoints, interrupt: InterruptFlag
    ) -> None:
        epoch = self.progress.epochs_completed + 1
        skipped = self.progress.steps_in_epoch
        remaining_batches = batches.epoch_batches(plan.train, epoch)
        self.network.train()
        batches.run(remaining_batches)
        trained = self.progress.steps_in_epoch - skipped
        remaining = None if plan.train.steps_per_epoch is None else plan.train.steps_per_epoch - skipped
        if trained == 0 and (skipped == 0 or (remaining is not None and remaining > 0)):
            raise DataError(f"{plan.train.role} yielded no batches in epoch {epoch}; expected at least one.")
        logs: dict[str, Any] = {"epoch": epoch, **lr_logs(self.optimizer)}
        logs.update(self.train_metrics.averages())
        check_finite(logs["loss"], self.progress)
        self.world.share_buffers(self.network)  # what is evaluated and committed is rank 0's model
        if plan.valid is not None:
            logs.update(self._validate(plan.valid, plan.callbacks, commits, interrupt))
        signum, epoch_time = self._agree_at_epoch_end(interrupt.signum, self.progress.read_clock())
        logs = plain_logs({"epoch": epoch, "time": epoch_time, **logs}, epoch)
        epoch_schedulers = plan.schedulers if plan.epoch_schedulers is None else plan.epoch_schedulers
        step_schedulers(epoch_schedulers, logs, plan.monitor)
        plan.callbacks.call("on_epoch_end", epoch, logs)
        if self.world.distributed:  # a stop decided by a callback on one rank only
            self.progress.stop_training = bool(
                self.world.agree_on(stop=int(self.progress.stop_training))["stop"]
            )
        self.progress.epoch_done(plain_logs(logs, epoch))
        self.rng.epoch_finished()
        commits.commit("epoch")
        if signum is not None:  # received during the epoch's end; its commit is the one above
            raise TrainingInterrupted(signum)

    def _agree_at_epoch_end(self, signum: int | None, epoch_time: float) -> tuple[int | None, float]:
        """With other ranks: a signal received by any rank during the epoch's end, a stop asked on
        any rank, and the epoch's time (the slowest rank's). One process: no signal (it was acted
        on during validation), its own time."""
        if not self.world.distributed:
            return None, epoch_time
        agreed = self.world.agree_on(
            signal=signum or 0,
            stop=int(self.progress.stop_training),
            epoch_microseconds=round(epoch_time * 1e6),  # the slowest rank's
        )
        self.progress.stop_training = bool(agreed["stop"])
        return agreed["signal"] or None, agreed["epoch_microseconds"] / 1e6
