"""One training batch: forward and loss in the run's precision, backward, and, at the end of a
group of ``accumulate`` batches, the optimizer step.

Order at a group's end: unscale the gradients ("16-mixed") -> ``on_backward_end`` (so gradient
clipping sees unscaled, accumulated gradients, once per optimizer step) -> the optimizer step
(through the scaler) -> the scaler's update. The loss is divided by ``accumulate`` before
``backward``, as Lightning does, so that a group's gradient is the mean over its batches. A step
that the scaler skips for overflow is still an optimizer step for ``global_step``.

With a custom step (:mod:`experiment.training.custom_step`), :meth:`StepRunner.run_custom` calls the
user's function under autocast in place of the forward pass and the loss; the rest is the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from experiment.state.rng import capture_rng, restore_rng
from experiment.training.batches import first_forward, forward
from experiment.training.custom_step import StepCompute
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
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.precision = precision
        self.accumulate = accumulate
        self.scaler: Any = precision.scaler
        self._mixed = precision.mixed
        self.use_network(network)
        #: Whether the first batch went through the network (its failure is explained once).
        self._inputs_checked = False
        #: Whether gradients were accumulated since the last optimizer step.
        self.pending = False
        #: The custom step's ``compute(batch) -> (loss, y_pred, y_true)`` for :meth:`run_custom`.
        self.compute: StepCompute | None = None

    def use_network(self, network: nn.Module) -> None:
        """Run the steps through ``network`` (the trained module, or its DDP wrapper)."""
        self.network = network
        #: Micro-batches before a group's last skip DDP's gradient all-reduce (``no_sync``).
        self._defers_sync = self.accumulate > 1 and isinstance(network, nn.parallel.DistributedDataParallel)

    def run(
        self,
        x: Any,
        y: Any,
        batch_number: int,
        backward_end: Sequence[Any],
        group_start: bool,
        group_end: bool,
    ) -> tuple[torch.Tensor, Any, Any]:
        """Forward, loss and backward of one batch; the optimizer step when ``group_end``.

        Returns:
            The loss, the network's output and the target ``y``.
        """
        if group_start:
            self.optimizer.zero_grad(set_to_none=True)
        if self._defers_sync and not group_end:
            with self.network.no_sync():  # type: ignore[operator]
                return self._run(x, y, batch_number, backward_end, group_end)
        return self._run(x, y, batch_number, backward_end, group_end)

    def _run(
        self, x: Any, y: Any, batch_number: int, backward_end: Sequence[Any], group_end: bool
    ) -> tuple[torch.Tensor, Any, Any]:
        if self._mixed:
            with self.precision.autocast():
                y_pred = forward(self.network, x) if self._inputs_checked else self._first_forward(x)
                loss = self.loss_function(y_pred, y)
        else:
            y_pred = forward(self.network, x) if self._inputs_checked else self._first_forward(x)
            loss = self.loss_function(y_pred, y)
        # The backward below is _backward's, inlined: this is the per-step hot path.
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.pending = True
        if group_end:
            self.optimizer_step(batch_number, backward_end)
        return loss, y_pred, y

    def _first_forward(self, x: Any) -> Any:
        y_pred = first_forward(self.network, x, "train_data")
        self._inputs_checked = True
        return y_pred

    def run_custom(
        self,
        batch: Any,
        _: Any,
        batch_number: int,
        backward_end: Sequence[Any],
        group_start: bool,
        group_end: bool,
    ) -> tuple[torch.Tensor, Any, Any]:
        """As :meth:`run`, with ``compute(batch)`` (under autocast) in place of the forward and loss.

        Returns:
            The loss, and the ``y_pred`` and ``y_true`` the step returned (None when it gave none).
        """
        if group_start:
            self.optimizer.zero_grad(set_to_none=True)
        deferred = (
            self.network.no_sync()  # type: ignore[operator]
            if self._defers_sync and not group_end
            else contextlib.nullcontext()
        )
        with deferred:
            with self.precision.autocast():
                loss, y_pred, y_true = self.compute(batch)  # type: ignore[misc]
            self._backward(loss, batch_number, backward_end, group_end)
        return loss, y_pred, y_true

    def warm_up(self, x: Any, y: Any) -> None:
        """One forward and backward of a batch through the DDP module that changes nothing: the
        random state, the buffers and the gradients are put back.

        DDP's first backward reduces every gradient in one flat bucket and lays the buckets out
        anew after it; a ring all-reduce over 3 or more ranks sums each element in an order that
        depends on its offset. A resumed process is a new DDP: without this step, its first real
        step would sum in another order than the uninterrupted run's, and differ in the last bits.
        """
        saved_random = capture_rng()
        buffers = [buffer.clone() for buffer in self.network.buffers()]
        with self.precision.autocast():
            if self.compute is not None:
                loss = self.compute(x)[0]
            else:
                loss = self.loss_function(forward(self.network, x), y)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for saved, buffer in zip(buffers, self.network.buffers()):
                buffer.copy_(saved)
        restore_rng(saved_random)

    def _backward(
        self, loss: torch.Tensor, batch_number: int, backward_end: Sequence[Any], group_end: bool
    ) -> None:
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.pending = True
        if group_end:
            self.optimizer_step(batch_number, backward_end)

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
