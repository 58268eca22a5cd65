"""The training step of ``elastic="exact"``: gradients summed in an order that no world size changes.

A global batch is cut into ``M`` groups fixed when the run was created, and each rank steps the
groups it holds (:meth:`~experiment.training.elastic_data.ElasticBatchSampler.groups_of`) one by one:
a forward and backward of the group alone, with the loss weighted by the group's share of the global
batch, and its random state (dropout) seeded from ``(seed, pass, batch, group)`` and put back after.
The groups' gradients are then summed exactly (:mod:`experiment.training.exact_sum`): the result,
cast to the parameter's dtype, is the same bits for any number of processes (see SCALE.md §8).

Costs: one forward and backward per group rather than per rank, each group's gradient kept until
the sum and rounded (in float32, exactly), and a float64 all-reduce per micro-batch instead of
DDP's float32 one (three all-reduces on the steps where the summation grid is refitted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from experiment.training.batches import forward
from experiment.training.distributed import World
from experiment.training.elastic_data import ElasticBatchSampler
from experiment.training.exact_sum import SummationGrid, exact_sum
from experiment.training.step import BuiltInStep, StepParts


def group_seed(seed: int, epoch: int, index: int, group: int) -> int:
    """The seed of a group's random state: the run's seed, the pass, the batch in it and the group."""
    digest = hashlib.sha256(f"experiment/exact/{seed}/{epoch}/{index}/{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


class ExactStep(BuiltInStep):
    """The built-in step, one group at a time, with gradients summed exactly (see the module).

    Args:
        parts: what the step is built from; its network is the module itself (no DDP wrapper).
        loss_function: ``(y_pred, y_true) -> loss``, a mean over the samples it is given.
        sampler: the elastic batch sampler of the training data, in exact mode.
        world: the processes of the run.
        grid: the summation grid kept with the run's state (see :class:`SummationGrid`).
    """

    def __init__(
        self,
        parts: StepParts,
        loss_function: Callable[[Any, Any], torch.Tensor],
        sampler: ElasticBatchSampler,
        world: World,
        grid: SummationGrid,
    ) -> None:
        super().__init__(parts, loss_function)
        self.sampler = sampler
        self.world = world
        self.grid = grid
        self._warm_up_first = False  # no DDP: no bucket layout to warm up
        self._parameters = [p for p in parts.network.parameters() if p.requires_grad]
        self._sizes = [p.numel() for p in self._parameters]
        grid.check(len(self._parameters))
        self._devices = [parts.device] if parts.device.type == "cuda" else []

    def _run(self, x: Any, y: Any, batch_number: int, ends: bool) -> tuple[torch.Tensor, Any, Any]:
        sampler = self.sampler
        index = (batch_number - 1) % len(sampler)
        kept = [p.grad for p in self._parameters]
        gradients, outputs, losses = [], [], []
        groups = sampler.groups_of(index)
        for group, start, stop, weight in groups:
            for parameter in self._parameters:
                parameter.grad = None
            y_pred, loss = self._group(_rows(x, start, stop), _rows(y, start, stop), group, index, weight)
            gradients.append([p.grad for p in self._parameters])
            outputs.append(y_pred.detach())
            losses.append(loss.detach() * (stop - start))
        total, agreed = exact_sum(gradients, self._sizes, self.world, sampler.groups or 1, self.grid)
        self._set_gradients(total, agreed.tolist(), kept)
        if ends:
            self._optimizer_step(batch_number)
        loss = torch.stack(losses).sum() / sum(stop - start for _, start, stop, _ in groups)
        return loss, outputs[0] if len(outputs) == 1 else torch.cat(outputs), y

    def _set_gradients(self, total: torch.Tensor, agreed: list[bool], kept: list[Any]) -> None:
        """The summed gradients, cast to each parameter's dtype, added to those ``kept`` from
        earlier micro-batches; a parameter that no group of any rank reached keeps its own."""
        dtypes = {p.dtype for p in self._parameters}
        if len(dtypes) == 1:  # one cast for all of them
            total = total.to(dtypes.pop())
        for parameter, before, reduced, has in zip(self._parameters, kept, total.split(self._sizes), agreed):
            if not has:  # no group of any rank reached it: no gradient, as in one backward
                parameter.grad = before
                continue
            value = reduced.view_as(parameter).to(parameter.dtype)
            parameter.grad = value if before is None else before + value

    def _group(self, x: Any, y: Any, group: int, index: int, weight: float) -> tuple[Any, torch.Tensor]:
        """Forward and backward of one group under its own random state; its output and loss."""
        with torch.random.fork_rng(devices=self._devices):
            _seed(group_seed(self.sampler.seed, self.sampler.epoch, index, group), self._devices)
            with self.precision.autocast():
                y_pred = forward(self.network, x) if self._inputs_checked else self._first_forward(x)
                loss = self.loss_function(y_pred, y)
            self.groups.divide(loss * weight).backward()
        return y_pred, loss


def _seed(seed: int, devices: list[torch.device]) -> None:
    """Seed the CPU's generator and those of the CUDA ``devices``, the ones a step draws from.

    Not ``torch.manual_seed``: for each accelerator that is not initialised (CUDA on a CPU machine),
    it records a lazy seeding with a formatted stack trace, about 2 ms per call, and this runs once
    per group and step.
    """
    torch.default_generator.manual_seed(seed)
    for device in devices:
        index = torch.cuda.current_device() if device.index is None else device.index
        torch.cuda.default_generators[index].manual_seed(seed)


def _rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of every tensor in ``value`` (tuples and lists of inputs), copied so
    that a group's computation never depends on where its rows sat in the rank's batch."""
    if isinstance(value, torch.Tensor):
        return value[start:stop].clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(item, start, stop) for item in value)
    return value
