"""Custom steps: ``step(trainer, batch)`` computes the loss of a batch of any structure.

The user's function replaces the forward pass and the loss only. The library still does the rest
(``zero_grad``, autocast, the division by ``accumulate_grad_batches``, ``backward`` through the
GradScaler, ``on_backward_end``, the optimizer step at a group's end), so that mixed precision,
accumulation, gradient-clipping callbacks and exact resume hold as with the built-in step.

A step returns the loss (a scalar tensor) or a dict with ``loss`` and, for metrics, ``y_pred`` and
``y_true``. The batch reaches it as the data yields it (a dict, ``(x, y, sample_weight)``, nested
tuples...), with every tensor moved to the training device.

Example:
    >>> def weighted_step(trainer, batch):
    ...     x, y, weight = batch
    ...     y_pred = trainer.network(x)
    ...     loss = (weight * F.cross_entropy(y_pred, y, reduction="none")).mean()
    ...     return {"loss": loss, "y_pred": y_pred, "y_true": y}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from experiment.arguments import reject
from experiment.errors import ConfigurationError
from experiment.training.batches import batch_size, move_batch
from experiment.training.metrics import EpochAccumulator
from experiment.training.step import GroupedStep, StepParts
from experiment.training.targets import describe

#: ``step(trainer, batch) -> loss`` or ``{"loss": ..., "y_pred": ..., "y_true": ...}``.
UserStep = Callable[[Any, Any], Any]

#: A bound step: ``compute(batch) -> (loss, y_pred, y_true)``.
StepCompute = Callable[[Any], tuple[torch.Tensor, Any, Any]]


def check_step(role: str, step: Any) -> UserStep | None:
    """``step`` when it is None or callable.

    Raises:
        ConfigurationError: ``step`` is not callable.
    """
    if step is not None and not callable(step):
        raise reject(role, step, "a function step(trainer, batch) returning the loss, or None")
    return step


def bind_step(step: UserStep, trainer: Any, role: str, metrics: EpochAccumulator) -> StepCompute:
    """``compute(batch)``: the user's ``step(trainer, batch)``, its result checked and unpacked.

    Args:
        metrics: the metrics the step's results feed; any of them needs ``y_pred`` and ``y_true``.
    """
    metric_names = [name for name, _ in metrics.batch_metrics + metrics.epoch_metrics]

    def compute(batch: Any) -> tuple[torch.Tensor, Any, Any]:
        loss, y_pred, y_true = step_result(step(trainer, batch), role)
        if metric_names and (y_pred is None or y_true is None):
            raise ConfigurationError(
                f"{role} returned no 'y_pred' and 'y_true', which the metrics {metric_names} need. "
                "Return {'loss': loss, 'y_pred': y_pred, 'y_true': y_true}, or drop the metrics."
            )
        return loss, y_pred, y_true

    return compute


def step_result(result: Any, role: str) -> tuple[torch.Tensor, Any, Any]:
    """``(loss, y_pred, y_true)`` of what a step returned (the two last None when not given).

    Raises:
        ConfigurationError: the result is neither a tensor nor a dict with a tensor ``loss``.
    """
    if isinstance(result, torch.Tensor):
        return result, None, None
    if isinstance(result, Mapping) and isinstance(result.get("loss"), torch.Tensor):
        unknown = sorted(set(map(str, result)) - {"loss", "y_pred", "y_true"})
        if unknown:
            raise ConfigurationError(
                f"{role} returned a dict with the keys {unknown}; expected only 'loss', 'y_pred' and "
                "'y_true'. Log other values from a callback."
            )
        return result["loss"], result.get("y_pred"), result.get("y_true")
    received = (
        f"a dict with the keys {sorted(map(str, result))}"
        if isinstance(result, Mapping)
        else describe(result)
    )
    raise ConfigurationError(
        f"{role} returned {received}; expected the loss (a scalar tensor) or a dict with a tensor "
        "'loss' and optionally 'y_pred' and 'y_true' (for metrics)."
    )


def move_whole(batch: Any, device: torch.device) -> tuple[Any, None]:
    """The loop's ``(x, y)`` for a custom step: the whole batch on ``device`` and no target."""
    return move_batch(batch, device), None


def custom_measure(compute: StepCompute, device: torch.device) -> Callable[[Any], tuple[Any, Any, Any, int]]:
    """``measure(batch) -> (loss, y_pred, y_true, size)`` for evaluation with a custom step."""

    def measure(batch: Any) -> tuple[Any, Any, Any, int]:
        moved = move_batch(batch, device)
        loss, y_pred, y_true = compute(moved)
        return loss, y_pred, y_true, batch_size(moved, y_true)

    return measure


class CustomStep(GroupedStep):
    """The loop's step around a custom ``compute(batch)`` (see :func:`bind_step`), called under
    autocast in place of the forward pass and the loss; the rest is the built-in step's."""

    split = staticmethod(move_whole)

    def __init__(self, parts: StepParts, compute: StepCompute) -> None:
        super().__init__(parts)
        self.compute = compute

    def _run(self, x: Any, y: Any, batch_number: int, ends: bool) -> tuple[torch.Tensor, Any, Any]:
        with self.precision.autocast():
            loss, y_pred, y_true = self.compute(x)
        self._backward(loss, batch_number, ends)
        return loss, y_pred, y_true

    def _warm_up_loss(self, x: Any, y: Any) -> torch.Tensor:
        return self.compute(x)[0]
