"""The training and evaluation loop: no file I/O of its own, no knowledge of paths.

Hook order, as pseudocode (``commit`` is the checkpoint function the Experiment passes in)::

    on_train_begin
    for epoch in epochs_completed + 1 .. epochs:        # while not stop_training
        on_epoch_begin                                     (skipped when resuming mid-epoch)
        for batch in the epoch's remaining batches:   (each pass of the loader: save the random state)
            on_train_batch_begin -> zero_grad, forward, loss -> backward -> on_backward_end
            -> optimizer.step -> on_train_batch_end   (or train_step(x, y) when set: it does all that
                                                       from zero_grad to step, without on_backward_end)
            signal received?       -> commit("interrupt"); stop
            every checkpoint_every -> commit("step")
            stop_training?         -> leave the batch loop
        on_valid_begin, (on_valid_batch_begin, on_valid_batch_end)*, on_valid_end
        schedulers step (ReduceLROnPlateau on the monitored value) -> on_epoch_end
        -> history.append(logs) -> commit("epoch")
    on_train_end

Progress is counted in completed units: ``epochs_completed``, ``steps_in_epoch`` (training steps done
in the current epoch) and ``global_step``. Resuming mid-epoch restores the random state of the start
of the loader's current pass (the epoch start, unless the epoch spans several passes), lets the data
source redraw that pass's order and skip its consumed batches, then restores the random state of
the step (the fast-forward first, the random state last); ``on_epoch_begin`` is not called again
for that epoch, since the saved callback states already saw it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from experiment.callbacks.base import CallbackList
from experiment.errors import DataError, NonFiniteLossError
from experiment.state.rng import capture_rng, restore_rng
from experiment.training.batches import batch_size, forward, split_batch
from experiment.training.data import BatchSource
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator, MetricFn

#: ``commit(reason, rng=None)``: reason is "step", "epoch" or "interrupt"; ``rng`` overrides the
#: random state to save (an interrupt during validation saves the state of the end of training).
CommitFn = Callable[..., None]


class TrainingLoop:
    """A network with its optimizer, loss and metrics, and the position of its training.

    Args:
        network: the module to train.
        optimizer: a torch optimizer over the network's parameters.
        loss_function: ``(y_pred, y_true) -> scalar tensor``.
        batch_metrics: named callables averaged over the epoch.
        epoch_metrics: named objects with update/compute/reset.
        device: where batches are moved before the forward pass.
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
    ) -> None:
        self.network = network
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.device = device
        self.train_metrics = EpochAccumulator(batch_metrics, epoch_metrics)
        self.eval_metrics = EpochAccumulator(batch_metrics, copy.deepcopy(epoch_metrics))
        self.reset()
        self.generators: list[torch.Generator] = []
        self._clock_start = 0.0
        #: When set, ``train_step(x, y) -> (loss, y_pred)`` replaces zero_grad, forward, loss,
        #: backward, on_backward_end and the optimizer step (``y_pred`` may be None without metrics).
        self.train_step: Callable[[Any, Any], tuple[torch.Tensor, Any]] | None = None

    def reset(self) -> None:
        """Forget the position, history and random state of an earlier run (a fresh start)."""
        self.epochs_completed = self.steps_in_epoch = self.global_step = 0
        self.stop_training = False
        self.history: list[dict[str, Any]] = []
        self.epoch_time = 0.0
        #: The random state when the loader's current pass began, and ``steps_in_epoch`` then.
        self.epoch_rng: dict[str, Any] | None = None
        self.pass_step = 0
        #: The random state of the committed step, put back when training resumes.
        self.resume_rng: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------- training
    def fit(
        self,
        train: BatchSource,
        valid: BatchSource | None,
        *,
        epochs: int,
        callbacks: CallbackList,
        schedulers: Sequence[Any] = (),
        monitor: str = "val_loss",
        commit: CommitFn,
        checkpoint_every: int | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are completed or a callback stops training."""
        interrupt = interrupt or InterruptFlag()
        callbacks.setup({"epochs": epochs, "steps_per_epoch": train.steps_per_epoch}, self)
        if self.steps_in_epoch == 0 and self.resume_rng is not None:
            restore_rng(self.resume_rng, self.generators)
            self.resume_rng = None
        callbacks.call("on_train_begin", {})
        while self.epochs_completed < epochs and not self.stop_training:
            self._run_epoch(train, valid, callbacks, schedulers, monitor, commit, checkpoint_every, interrupt)
        callbacks.call("on_train_end", {})
        return self.history

    def _run_epoch(
        self,
        train: BatchSource,
        valid: BatchSource | None,
        callbacks: CallbackList,
        schedulers: Sequence[Any],
        monitor: str,
        commit: CommitFn,
        checkpoint_every: int | None,
        interrupt: InterruptFlag,
    ) -> None:
        epoch = self.epochs_completed + 1
        skip = self.steps_in_epoch
        on_start = None
        if skip == 0:
            self.train_metrics.reset()
            self.epoch_time = 0.0
            self._clock_start = time.perf_counter()
            callbacks.call("on_epoch_begin", epoch, {})
        else:
            assert self.epoch_rng is not None and self.resume_rng is not None, (
                "mid-epoch resume without its random state"
            )
            restore_rng(self.epoch_rng, self.generators)
            resume_rng: dict[str, Any] = self.resume_rng
            self.resume_rng = None
            on_start = lambda: restore_rng(resume_rng, self.generators)  # noqa: E731
            self._clock_start = time.perf_counter()
        self.network.train()
        batches = train.epoch(skip, on_start, pass_skip=skip - self.pass_step, on_pass=self._pass_started)
        self._train_batches(batches, callbacks, commit, checkpoint_every, interrupt)
        if self.steps_in_epoch == 0:
            raise DataError(f"{train.role} yielded no batches in epoch {epoch}; expected at least one.")
        logs: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        logs.update(self.train_metrics.averages())
        self._check_finite(logs["loss"], epoch)
        if valid is not None:
            after_train_rng = capture_rng(self.generators)  # what an interrupt during validation saves
            try:
                logs.update(self.evaluate(valid, "val", callbacks, interrupt))
            except TrainingInterrupted:
                commit("interrupt", after_train_rng)
                raise
        logs["time"] = self.elapsed_epoch_time()
        logs = {"epoch": epoch, "time": logs.pop("time"), **logs}
        self._step_schedulers(schedulers, logs, monitor)
        callbacks.call("on_epoch_end", epoch, logs)
        self.history.append(logs)
        self.epochs_completed += 1
        self.steps_in_epoch = 0
        commit("epoch")

    def _pass_started(self, steps_done: int) -> None:
        # The pass draws its order from the random state now; a mid-epoch resume redraws it from here.
        self.epoch_rng, self.pass_step = capture_rng(self.generators), steps_done

    def _train_batches(
        self,
        batches: Any,
        callbacks: CallbackList,
        commit: CommitFn,
        checkpoint_every: int | None,
        interrupt: InterruptFlag,
    ) -> None:
        begin = callbacks.listeners("on_train_batch_begin")
        backward_end = callbacks.listeners("on_backward_end")
        end = callbacks.listeners("on_train_batch_end")
        with_values = callbacks.needs_batch_values
        names = self.train_metrics.batch_names()
        custom_step = self.train_step
        for batch in batches:
            batch_number = self.steps_in_epoch + 1
            for method in begin:
                method(batch_number, {})
            started = time.perf_counter()
            x, y = split_batch(batch, self.device)
            if custom_step is None:
                self.optimizer.zero_grad(set_to_none=True)
                y_pred = forward(self.network, x)
                loss = self.loss_function(y_pred, y)
                loss.backward()
                for method in backward_end:
                    method(batch_number)
                self.optimizer.step()
            else:
                loss, y_pred = custom_step(x, y)
            size = batch_size(x, y)
            values = self.train_metrics.update(loss, y_pred, y, size)
            self.steps_in_epoch += 1
            self.global_step += 1
            if end:
                logs = {"batch": batch_number, "size": size, "time": time.perf_counter() - started}
                if with_values:
                    logs.update(zip(names, values.reshape(-1).tolist()))
                for method in end:
                    method(batch_number, logs)
            if interrupt.signum is not None:
                commit("interrupt")
                raise TrainingInterrupted(interrupt.signum)
            if checkpoint_every and self.global_step % checkpoint_every == 0:
                if not self.stop_training:
                    self._check_finite(self.train_metrics.mean_loss(), self.epochs_completed + 1)
                commit("step")
            if self.stop_training:
                break

    def _step_schedulers(self, schedulers: Sequence[Any], logs: dict[str, Any], monitor: str) -> None:
        for scheduler in schedulers:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(logs[monitor])
            else:
                scheduler.step()

    def _check_finite(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss) and not self.stop_training:
            raise NonFiniteLossError(
                f"The training loss became {loss} in epoch {epoch} (by global step "
                f"{self.global_step}). Nothing of it was committed: the last checkpoint is intact. "
                "Lower the learning rate, clip gradients, check the data for NaN, or add the "
                "TerminateOnNaN callback to stop cleanly instead."
            )

    def elapsed_epoch_time(self) -> float:
        """Seconds spent in the current epoch, across resumes."""
        now = time.perf_counter()
        self.epoch_time += now - self._clock_start
        self._clock_start = now
        return self.epoch_time

    # --------------------------------------------------------------------------------- evaluation
    def evaluate(
        self,
        source: BatchSource,
        prefix: str,
        callbacks: CallbackList,
        interrupt: InterruptFlag | None = None,
    ) -> dict[str, Any]:
        """Run the network over ``source`` without gradients; return ``{prefix}_loss`` and metrics."""
        begin = callbacks.listeners(f"on_{prefix_hook(prefix)}_batch_begin")
        end = callbacks.listeners(f"on_{prefix_hook(prefix)}_batch_end")
        names = self.eval_metrics.batch_names(f"{prefix}_")
        callbacks.call(f"on_{prefix_hook(prefix)}_begin", {})
        started = time.perf_counter()
        was_training = self.network.training
        self.network.eval()
        self.eval_metrics.reset()
        try:
            with torch.no_grad():
                for batch_number, batch in enumerate(source.epoch(), start=1):
                    for method in begin:
                        method(batch_number, {})
                    batch_started = time.perf_counter()
                    x, y = split_batch(batch, self.device)
                    y_pred = forward(self.network, x)
                    size = batch_size(x, y)
                    values = self.eval_metrics.update(self.loss_function(y_pred, y), y_pred, y, size)
                    if end:
                        logs = {
                            "batch": batch_number,
                            "size": size,
                            "time": time.perf_counter() - batch_started,
                        }
                        logs.update(zip(names, values.reshape(-1).tolist()))
                        for method in end:
                            method(batch_number, logs)
                    if interrupt is not None and interrupt.signum is not None:
                        raise TrainingInterrupted(interrupt.signum)
        finally:
            self.network.train(was_training)
        if self.eval_metrics.samples == 0:
            raise DataError(f"{source.role} yielded no batches; expected at least one.")
        logs = self.eval_metrics.averages(f"{prefix}_")
        callbacks.call(f"on_{prefix_hook(prefix)}_end", {"time": time.perf_counter() - started, **logs})
        return logs

    # ------------------------------------------------------------------------------------ helpers
    def state_dict(self, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        """The loop's position, history, running sums and random state (now, or ``rng``)."""
        return {
            "epochs_completed": self.epochs_completed,
            "steps_in_epoch": self.steps_in_epoch,
            "global_step": self.global_step,
            "stop_training": self.stop_training,
            "history": [dict(row) for row in self.history],
            "epoch_time": self.elapsed_epoch_time() if self.steps_in_epoch else 0.0,
            "epoch_rng": self.epoch_rng if self.steps_in_epoch else None,
            "pass_step": self.pass_step if self.steps_in_epoch else 0,
            "rng": rng if rng is not None else capture_rng(self.generators),
            "train_metrics": self.train_metrics.state_dict() if self.steps_in_epoch else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_completed = state["epochs_completed"]
        self.steps_in_epoch = state["steps_in_epoch"]
        self.global_step = state["global_step"]
        self.stop_training = state["stop_training"]
        self.history = [dict(row) for row in state["history"]]
        self.epoch_time = state["epoch_time"]
        self.epoch_rng = state["epoch_rng"]
        self.pass_step = state.get("pass_step", 0)
        self.resume_rng = state["rng"]
        if state["train_metrics"] is not None:
            self.train_metrics.load_state_dict(state["train_metrics"], self.device)


def prefix_hook(prefix: str) -> str:
    """Hook family for a log prefix: ``val`` -> ``valid``, ``test`` -> ``test``."""
    return "valid" if prefix == "val" else prefix
