"""One training batch: forward and loss in the run's precision, backward, and, at the end of a
group of ``accumulate`` batches, the optimizer step.

Order at a group's end: unscale the gradients ("16-mixed") -> ``on_backward_end`` (so gradient
clipping sees unscaled, accumulated gradients, once per optimizer step) -> the optimizer step
(through the scaler) -> the scaler's update. The loss is divided by ``accumulate`` before
``backward``, as Lightning does, so that a group's gradient is the mean over its batches. A step
that the scaler skips for overflow is still an optimizer step for ``global_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from experiment.training.batches import forward
from experiment.training.precision import Precision


class StepRunner:
    """Runs the forward/backward of each batch and the optimizer step of each group.

    Args:
        accumulate: batches per optimizer step (the last group of an epoch may be shorter).
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[[Any, Any], torch.Tensor],
        precision: Precision,
        accumulate: int = 1,
    ) -> None:
        self.network = network
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.precision = precision
        self.accumulate = accumulate
        self.scaler: Any = precision.scaler
        self._mixed = precision.mixed
        #: Whether gradients were accumulated since the last optimizer step.
        self.pending = False

    def run(
        self,
        x: Any,
        y: Any,
        batch_number: int,
        backward_end: Sequence[Any],
        group_start: bool,
        group_end: bool,
    ) -> tuple[torch.Tensor, Any]:
        """Forward, loss and backward of one batch; the optimizer step when ``group_end``."""
        if group_start:
            self.optimizer.zero_grad(set_to_none=True)
        if self._mixed:
            with self.precision.autocast():
                y_pred = forward(self.network, x)
                loss = self.loss_function(y_pred, y)
        else:
            y_pred = forward(self.network, x)
            loss = self.loss_function(y_pred, y)
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.pending = True
        if group_end:
            self.optimizer_step(batch_number, backward_end)
        return loss, y_pred

    def optimizer_step(self, batch_number: int, backward_end: Sequence[Any]) -> None:
        """Unscale, call ``on_backward_end``, step the optimizer (through the scaler), update it."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        for method in backward_end:
            method(batch_number)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.pending = False
