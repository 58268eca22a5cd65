"""One training batch: the step protocol the loop calls, and its built-in and train_model kinds.

The loop chooses one :class:`TrainingStep` when :meth:`~experiment.training.loop.TrainingLoop.fit`
starts and calls it for every batch: :class:`BuiltInStep` (``loss_function(network(x), y)``), a
custom step (:class:`~experiment.training.custom_step.CustomStep`, ``train_step(trainer, batch)``),
or :class:`WholeStep` (train_model's ``train_step``, which does its own backward and optimizer step).

Order of the built-in and custom steps at a group's end (:class:`GroupedStep`): unscale the
gradients ("16-mixed") -> ``on_backward_end`` (so gradient clipping sees unscaled, accumulated
gradients, once per optimizer step) -> the optimizer step (through the scaler) -> the scaler's
update. The loss is divided before ``backward`` as :mod:`experiment.training.accumulation` says. A
step that the scaler skips for overflow is still an optimizer step for ``global_step``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from experiment.state.rng import capture_rng, restore_rng
from experiment.training.accumulation import AccumulationGroups
from experiment.training.batches import first_forward, forward, split_batch
from experiment.training.precision import Precision

#: train_model's step as the loop calls it, ``step(x, y) -> (loss, y_pred)``: it replaces
#: zero_grad, forward, loss, backward, on_backward_end and the optimizer step.
WholeStepFunction = Callable[[Any, Any], tuple[torch.Tensor, Any]]


class TrainingStep(Protocol):
    """What the loop calls for each training batch; built once per training call."""

    def __call__(self, batch: Any, batch_number: int) -> tuple[torch.Tensor, Any, Any]:
        """Train on ``batch``, the epoch's ``batch_number``-th (from 1), placed in its
        accumulation group; return its loss, the network's output and the target (for metrics)."""
        ...

    def end_group(self, batch_number: int) -> None:
        """Step the optimizer for the group that the epoch's data ended inside (after its
        ``batch_number``-th and last batch)."""
        ...


@dataclasses.dataclass(frozen=True)
class StepParts:
    """What a step is built from when a training call starts.

    Attributes:
        network: the module the batches go through (under torchrun, its DDP wrapper).
        groups: the accumulation groups the step places each batch in.
        backward_end: the callbacks' ``on_backward_end`` methods, called before each optimizer step.
        warm_up: whether the first step follows a resume under DDP (see :meth:`GroupedStep.warm_up`).
    """

    network: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    device: torch.device
    groups: AccumulationGroups
    backward_end: Sequence[Callable[[int], Any]] = ()
    warm_up: bool = False


#: Builds the step of a training call (the seam for a new kind of step).
StepMaker = Callable[[StepParts], TrainingStep]


class GroupedStep:
    """The library's part of the built-in and custom steps: ``zero_grad`` at a group's start, the
    divided loss's backward (through the GradScaler), DDP's ``no_sync`` for the batches before a
    group's last, ``on_backward_end`` and the optimizer step at its end, and the warm-up of a
    resumed distributed run. A subclass computes the loss (:meth:`_run`, :meth:`_warm_up_loss`)."""

    #: ``split(batch, device) -> (x, y)``: what the step computes on, moved to the device.
    split: Callable[[Any, torch.device], tuple[Any, Any]] = staticmethod(split_batch)

    def __init__(self, parts: StepParts) -> None:
        self.network = parts.network
        self.optimizer = parts.optimizer
        self.precision = parts.precision
        self.device = parts.device
        self.groups = parts.groups
        self.backward_end = parts.backward_end
        self.scaler: Any = parts.precision.scaler
        #: Micro-batches before a group's last skip DDP's gradient all-reduce (``no_sync``).
        self._defers_sync = parts.groups.batches > 1 and isinstance(
            parts.network, nn.parallel.DistributedDataParallel
        )
        #: Whether the next batch is the first since a distributed run was resumed.
        self._warm_up_first = parts.warm_up

    def __call__(self, batch: Any, batch_number: int) -> tuple[torch.Tensor, Any, Any]:
        x, y = self.split(batch, self.device)
        if self._warm_up_first:
            self.warm_up(x, y)
        if self.groups.place(batch_number):  # the batch starts its group
            self.optimizer.zero_grad(set_to_none=True)
        ends = self.groups.stepped
        if self._defers_sync and not ends:
            with self.network.no_sync():  # type: ignore[operator]
                return self._run(x, y, batch_number, ends)
        return self._run(x, y, batch_number, ends)

    def _run(self, x: Any, y: Any, batch_number: int, ends: bool) -> tuple[torch.Tensor, Any, Any]:
        """Loss, backward and, when ``ends``, the optimizer step; return ``(loss, y_pred, y_true)``."""
        raise NotImplementedError

    def _warm_up_loss(self, x: Any, y: Any) -> torch.Tensor:
        raise NotImplementedError

    def _backward(self, loss: torch.Tensor, batch_number: int, ends: bool) -> None:
        scaled = self.groups.divide(loss)
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if ends:
            self._optimizer_step(batch_number)

    def end_group(self, batch_number: int) -> None:
        self._optimizer_step(batch_number)
        self.groups.close()

    def _optimizer_step(self, batch_number: int) -> None:
        """Unscale, call ``on_backward_end``, step the optimizer (through the scaler), update it."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        for method in self.backward_end:
            method(batch_number)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()

    def warm_up(self, x: Any, y: Any) -> None:
        """One forward and backward of a batch through the DDP module that changes nothing: the
        random state, the buffers and the gradients are put back.

        DDP's first backward reduces every gradient in one flat bucket and lays the buckets out
        anew after it; a ring all-reduce over 3 or more ranks sums each element in an order that
        depends on its offset. A resumed process is a new DDP: without this step, its first real
        step would sum in another order than the uninterrupted run's, and differ in the last bits.
        """
        self._warm_up_first = False
        saved_random = capture_rng()
        buffers = [buffer.clone() for buffer in self.network.buffers()]
        with self.precision.autocast():
            loss = self._warm_up_loss(x, y)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for saved, buffer in zip(buffers, self.network.buffers()):
                buffer.copy_(saved)
        restore_rng(saved_random)


class BuiltInStep(GroupedStep):
    """``loss_function(network(x), y)`` of each ``(x, y)`` batch, in the run's precision."""

    def __init__(self, parts: StepParts, loss_function: Callable[[Any, Any], torch.Tensor]) -> None:
        super().__init__(parts)
        self.loss_function = loss_function
        self._mixed = parts.precision.mixed
        #: Whether the first batch went through the network (its failure is explained once).
        self._inputs_checked = False

    def _run(self, x: Any, y: Any, batch_number: int, ends: bool) -> tuple[torch.Tensor, Any, Any]:
        if self._mixed:
            with self.precision.autocast():
                y_pred = forward(self.network, x) if self._inputs_checked else self._first_forward(x)
                loss = self.loss_function(y_pred, y)
        else:
            y_pred = forward(self.network, x) if self._inputs_checked else self._first_forward(x)
            loss = self.loss_function(y_pred, y)
        # The backward below is _backward's, inlined: this is the per-step hot path.
        scaled = self.groups.divide(loss)
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if ends:
            self._optimizer_step(batch_number)
        return loss, y_pred, y

    def _first_forward(self, x: Any) -> Any:
        y_pred = first_forward(self.network, x, "train_data")
        self._inputs_checked = True
        return y_pred

    def _warm_up_loss(self, x: Any, y: Any) -> torch.Tensor:
        return self.loss_function(forward(self.network, x), y)


class WholeStep:
    """train_model's ``step(x, y) -> (loss, y_pred)``, which zeroes the gradients, runs forward and
    backward and steps the optimizer itself (one batch per optimizer step, in full precision)."""

    def __init__(self, parts: StepParts, function: WholeStepFunction) -> None:
        self.function = function
        self.device = parts.device
        self.groups = parts.groups

    def __call__(self, batch: Any, batch_number: int) -> tuple[torch.Tensor, Any, Any]:
        x, y = split_batch(batch, self.device)
        self.groups.place(batch_number)  # each batch is a group of its own
        loss, y_pred = self.function(x, y)
        return loss, y_pred, y

    def end_group(self, batch_number: int) -> None:
        """Nothing: every batch ended its group."""
