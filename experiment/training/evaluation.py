"""Running a network over data without gradients: validation at each epoch end, and test.

The functions run any network; :class:`LoopEvaluation` gives the training loop its ``evaluate``
method and its validation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from experiment.callbacks.callback_list import CallbackList
from experiment.errors import DataError
from experiment.training.batches import batch_size, first_forward, forward, move_batch, split_batch
from experiment.training.custom_step import bind_step, custom_measure
from experiment.training.data import BatchSource
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator

if TYPE_CHECKING:
    from experiment.state.rng import RandomState
    from experiment.training.distributed import World
    from experiment.training.plan import CommitPoints
    from experiment.training.precision import Precision
    from experiment.training.strategy import Strategy


def hook_family(prefix: str) -> str:
    """Hook family for a log prefix: ``val`` -> ``valid``, ``test`` -> ``test``."""
    return "valid" if prefix == "val" else prefix


#: ``measure(batch) -> (loss, y_pred, y_true, size)``: what evaluation computes of one batch.
Measure = Callable[[Any], tuple[Any, Any, Any, int]]


def pair_measure(network: nn.Module, loss_function: Any, device: torch.device, role: str = "data") -> Measure:
    """The built-in measure: split ``(x, y)``, ``network(x)``, ``loss_function(y_pred, y)``; the
    first batch's failure in the network is explained (:func:`first_forward`, naming ``role``)."""
    checked = False

    def measure(batch: Any) -> tuple[Any, Any, Any, int]:
        nonlocal checked
        x, y = split_batch(batch, device)
        y_pred = forward(network, x) if checked else first_forward(network, x, role)
        checked = True
        return loss_function(y_pred, y), y_pred, y, batch_size(x, y)

    return measure


def measure_for(trainer: Any, role: str = "data") -> Measure:
    """The measure of a :class:`~experiment.training.loop.TrainingLoop`: its ``eval_step`` when it
    has one, else :func:`pair_measure` of its network and loss (over the data of ``role``)."""
    if trainer.eval_step is None:
        return pair_measure(trainer.network, trainer.loss_function, trainer.device, role)
    compute = bind_step(trainer.eval_step, trainer, "eval_step", trainer.eval_metrics)
    return custom_measure(compute, trainer.device)


def evaluate(
    network: nn.Module,
    measure: Measure,
    metrics: EpochAccumulator,
    source: BatchSource,
    prefix: str,
    callbacks: CallbackList,
    interrupt: InterruptFlag | None = None,
    *,
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    predictions: list[Any] | None = None,
    pad_to: int = 0,
) -> dict[str, Any]:
    """Run ``network`` over ``source`` in eval mode; return ``{prefix}_loss`` and the metrics.

    Args:
        measure: computes each batch's loss, output, target and size (see :func:`pair_measure`).
        autocast: the context of the forward pass and the loss (the run's precision).
        predictions: when given, each batch's output is appended to it (on the CPU).
        pad_to: run at least this many forwards: after the last batch, its forward again, its
            results discarded (no hook, no metric, no prediction). Under FSDP2 every forward is a
            collective, so every rank must run as many as the rank with the most batches.

    Raises:
        DataError: ``source`` yielded no batch.
        TrainingInterrupted: ``interrupt`` was set by a signal (checked after each batch).
    """
    family = hook_family(prefix)
    callbacks.call(f"on_{family}_begin", {})
    started = time.perf_counter()
    was_training = network.training
    network.eval()
    metrics.reset()
    try:
        with torch.no_grad(), autocast():
            last, count = _run_batches(measure, metrics, source, prefix, callbacks, interrupt, predictions)
            for _ in range(pad_to - count if last is not None else 0):
                measure(last)
    finally:
        network.train(was_training)
    if metrics.samples == 0:
        raise DataError(f"{source.role} yielded no batches; expected at least one.")
    logs = metrics.averages(f"{prefix}_")
    callbacks.call(f"on_{family}_end", {"time": time.perf_counter() - started, **logs})
    return logs


def _run_batches(
    measure: Measure,
    metrics: EpochAccumulator,
    source: BatchSource,
    prefix: str,
    callbacks: CallbackList,
    interrupt: InterruptFlag | None,
    predictions: list[Any] | None,
) -> tuple[Any, int]:
    """Evaluate every batch of ``source``; return the last batch (None if none) and their number."""
    family = hook_family(prefix)
    begin = callbacks.listeners(f"on_{family}_batch_begin")
    end = callbacks.listeners(f"on_{family}_batch_end")
    names = metrics.batch_names(f"{prefix}_")
    last, count = None, 0
    for batch_number, batch in enumerate(source.epoch(), start=1):
        last, count = batch, batch_number
        for method in begin:
            method(batch_number, {})
        batch_started = time.perf_counter()
        loss, y_pred, y_true, size = measure(batch)
        values = metrics.update(loss, y_pred, y_true, size)
        if predictions is not None:
            predictions.append(move_batch(y_pred, torch.device("cpu")))
        if end:
            logs = {"batch": batch_number, "size": size, "time": time.perf_counter() - batch_started}
            logs.update(zip(names, values.reshape(-1).tolist()))
            for method in end:
                method(batch_number, logs)
        if interrupt is not None and interrupt.signum is not None:
            raise TrainingInterrupted(interrupt.signum)
    return last, count


class LoopEvaluation:
    """The :class:`~experiment.training.loop.TrainingLoop` methods that run its network without
    gradients: :meth:`evaluate` (test, ``Experiment.evaluate``, and the validation at each epoch
    end) and that validation itself, whose interrupt commits the random state of the end of the
    epoch's training."""

    network: nn.Module
    eval_metrics: EpochAccumulator
    precision: Precision
    rng: RandomState
    world: World
    strategy: Strategy

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
            pad_to=self.strategy.forwards_to_run(source),
        )

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
