"""Which training step a loop trains with: configured before training (the loop's ``use_*`` methods),
built once per training call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from experiment.errors import ConfigurationError
from experiment.training.custom_step import CustomStep, StepCompute, UserStep, bind_step
from experiment.training.metrics import EpochAccumulator
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


class StepSetup:
    """The methods of :class:`~experiment.training.loop.TrainingLoop` that choose its training step,
    kept in its :attr:`steps`; a custom step also sets its ``custom_train_step`` and ``eval_step``."""

    steps: StepChoice
    train_metrics: EpochAccumulator
    custom_train_step: UserStep | None
    eval_step: UserStep | None

    def use_train_step(self, step: WholeStepFunction | None) -> None:
        """Train with ``step(x, y) -> (loss, y_pred)``, which does everything from zero_grad to the
        optimizer step, instead of the built-in or custom step (None: those).

        Raises:
            ConfigurationError: with mixed precision or gradient accumulation, which the built-in
                step implements and a custom step would bypass.
        """
        self.steps.use_whole(step)

    def use_custom_steps(self, train_step: UserStep | None, eval_step: UserStep | None = None) -> None:
        """Compute each batch's loss with ``train_step(trainer, batch)`` (and ``eval_step`` in
        validation and test; by default ``train_step``) instead of the forward pass and the loss.

        See :mod:`experiment.training.custom_step`. The loop still does ``zero_grad``, autocast,
        backward, ``on_backward_end`` and the optimizer step; None: the built-in ``(x, y)`` step.
        """
        compute = (
            None if train_step is None else bind_step(train_step, self, "train_step", self.train_metrics)
        )
        self.steps.compute = compute
        self.custom_train_step = train_step
        self.eval_step = eval_step or train_step

    def use_step(self, make: StepMaker | None) -> None:
        """Train with the :class:`~experiment.training.step.TrainingStep` that ``make(parts)``
        builds when each training call starts (None: the step chosen by :meth:`use_train_step`,
        :meth:`use_custom_steps` or the built-in one). The seam for another kind of step."""
        self.steps.maker = make
