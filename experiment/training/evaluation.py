"""Running a network over data without gradients: validation at each epoch end, and test."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from experiment.callbacks.base import CallbackList
from experiment.errors import DataError
from experiment.training.batches import batch_size, forward, split_batch
from experiment.training.data import BatchSource
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator


def hook_family(prefix: str) -> str:
    """Hook family for a log prefix: ``val`` -> ``valid``, ``test`` -> ``test``."""
    return "valid" if prefix == "val" else prefix


def evaluate(
    network: nn.Module,
    loss_function: Any,
    metrics: EpochAccumulator,
    source: BatchSource,
    prefix: str,
    callbacks: CallbackList,
    interrupt: InterruptFlag | None = None,
    *,
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Run ``network`` over ``source`` in eval mode; return ``{prefix}_loss`` and the metrics.

    ``autocast`` gives the context of the forward pass and the loss (the run's precision).

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
            _run_batches(network, loss_function, metrics, source, prefix, callbacks, interrupt)
    finally:
        network.train(was_training)
    if metrics.samples == 0:
        raise DataError(f"{source.role} yielded no batches; expected at least one.")
    logs = metrics.averages(f"{prefix}_")
    callbacks.call(f"on_{family}_end", {"time": time.perf_counter() - started, **logs})
    return logs


def _run_batches(
    network: nn.Module,
    loss_function: Any,
    metrics: EpochAccumulator,
    source: BatchSource,
    prefix: str,
    callbacks: CallbackList,
    interrupt: InterruptFlag | None,
) -> None:
    family = hook_family(prefix)
    begin = callbacks.listeners(f"on_{family}_batch_begin")
    end = callbacks.listeners(f"on_{family}_batch_end")
    names = metrics.batch_names(f"{prefix}_")
    device = metrics.device
    for batch_number, batch in enumerate(source.epoch(), start=1):
        for method in begin:
            method(batch_number, {})
        batch_started = time.perf_counter()
        x, y = split_batch(batch, device)
        y_pred = forward(network, x)
        size = batch_size(x, y)
        values = metrics.update(loss_function(y_pred, y), y_pred, y, size)
        if end:
            logs = {"batch": batch_number, "size": size, "time": time.perf_counter() - batch_started}
            logs.update(zip(names, values.reshape(-1).tolist()))
            for method in end:
                method(batch_number, logs)
        if interrupt is not None and interrupt.signum is not None:
            raise TrainingInterrupted(interrupt.signum)
