"""Which training step a loop trains with: configured before training, built once per training call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from experiment.errors import ConfigurationError
from experiment.training.custom_step import CustomStep, StepCompute
from experiment.training.precision import Precision
from experiment.training.step import (
    BuiltInStep,
    StepMaker,
    StepParts,
    TrainingStep,
    WholeStep,
    WholeStepFunction,
)


class StepChoice:
    """The step of a loop: whatever :attr:`maker` builds, else train_model's :attr:`whole` step,
    else a custom step around :attr:`compute`, else the built-in step.

    Args:
        loss_function: the built-in step's ``(y_pred, y_true) -> loss``.
        precision: the run's precision (a whole step needs "32-true").
        accumulate_grad_batches: batches per optimizer step (a whole step needs 1).
    """

    def __init__(
        self,
        loss_function: Callable[[Any, Any], torch.Tensor],
        precision: Precision,
        accumulate_grad_batches: int,
    ) -> None:
        self.loss_function = loss_function
        self.precision = precision
        self.accumulate_grad_batches = accumulate_grad_batches
        #: Builds the step itself (:meth:`~experiment.training.loop.TrainingLoop.use_step`), or None.
        self.maker: StepMaker | None = None
        #: train_model's ``step(x, y) -> (loss, y_pred)`` (set through :meth:`use_whole`), or None.
        self.whole: WholeStepFunction | None = None
        #: A custom step's ``compute(batch) -> (loss, y_pred, y_true)``, or None.
        self.compute: StepCompute | None = None

    def use_whole(self, step: WholeStepFunction | None) -> None:
        """Train with train_model's ``step(x, y)`` (None: not any more).

        Raises:
            ConfigurationError: with mixed precision or gradient accumulation, which the built-in
                step implements and a step doing its own backward would bypass.
        """
        if step is not None and (self.precision.mixed or self.accumulate_grad_batches > 1):
            raise ConfigurationError(
                f"train_step: received a custom step with precision={self.precision.name!r} and "
                f"accumulate_grad_batches={self.accumulate_grad_batches}; expected the defaults "
                "('32-true', 1): a custom step does its own forward, backward and optimizer step."
            )
        self.whole = step

    def build(self, parts: StepParts) -> TrainingStep:
        """The step of one training call, built when it starts."""
        if self.maker is not None:
            return self.maker(parts)
        if self.whole is not None:
            return WholeStep(parts, self.whole)
        if self.compute is not None:
            return CustomStep(parts, self.compute)
        return BuiltInStep(parts, self.loss_function)
