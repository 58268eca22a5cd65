"""The exact sum of ``elastic="exact"``: gradients added over groups and ranks in no particular
order, with a result that no order, and so no number of processes, can change.

Per parameter tensor, every group's gradient is rounded onto a grid ``q = 2**(e - 52)`` where
``M * max |g| < 2**e`` over every group (``M``: the groups of a global batch). A multiple of ``q``
below ``2**53 * q`` is a float64 exactly, so every partial sum of the rounded gradients, on one rank
or over the ranks, is exact. Only what lies below the grid is rounded, far under float32's precision
(see SCALE.md §8).

The grid's exponents are kept from step to step in a :class:`SummationGrid` (a node of the run's
state) so that a step needs one all-reduce, as DDP does: the float64 sum, with counts appended that
tell whether the kept grid still fits (no group's gradient above it, and some within
:data:`REFIT_BELOW` bits under its top). The counts are exact integers, so every rank and every
world size draws the same conclusion. When the grid does not fit (the first step, a gradient that
grew, or shrank far) the maxima are agreed by an ``all_reduce(MAX)``, the grid is set
:data:`HEADROOM` bits above them, and the sum is taken again: three all-reduces on those steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from experiment.errors import ConfigurationError
from experiment.training.distributed import World

#: Bits of a float64 significand, less one: the margin that keeps every partial sum exact.
GRID_BITS = 52

#: Bits a refitted grid leaves above the agreed maxima, so that gradients that grow up to 16 times
#: keep the grid.
HEADROOM = 4

#: A grid whose top is this many bits above every group's ``M * max`` is refitted: it would round
#: more than it needs to (what a kept grid gives up: at most this many bits of the 52).
REFIT_BELOW = 12


@dataclasses.dataclass(frozen=True)
class GridTensors:
    """A grid as the sum uses it: the step of each element's grid, laid out as the gradients, and
    per tensor the top that every group's ``M * max`` must stay under and the floor that one must
    reach."""

    step: torch.Tensor
    top: torch.Tensor
    floor: torch.Tensor

    @classmethod
    def of(cls, exponents: torch.Tensor, sizes: list[int]) -> GridTensors:
        one = torch.ones(len(sizes), dtype=torch.float64, device=exponents.device)
        step = torch.ldexp(one, exponents - GRID_BITS).repeat_interleave(
            torch.tensor(sizes, device=exponents.device), output_size=sum(sizes)
        )
        return cls(step, torch.ldexp(one, exponents), torch.ldexp(one, exponents - REFIT_BELOW))


class SummationGrid:
    """The exponents of the grids that an exact run's gradients are rounded on, one per parameter
    tensor; None before the first step. Kept with every commit, so that a resumed run chooses the
    grids of an uninterrupted one."""

    def __init__(self) -> None:
        self.exponents: list[int] | None = None
        self._tensors: tuple[Any, GridTensors] | None = None  # of the exponents, until they change

    def reset(self) -> None:
        self.exponents = None

    def tensors(self, sizes: list[int], device: torch.device) -> GridTensors:
        """The kept grid for gradients laid out by ``sizes`` (built again only when it changes)."""
        assert self.exponents is not None, "no grid is kept before the first step"
        key = (tuple(self.exponents), tuple(sizes), device)
        if self._tensors is None or self._tensors[0] != key:
            self._tensors = (key, GridTensors.of(torch.tensor(self.exponents, device=device), sizes))
        return self._tensors[1]

    def state_dict(self) -> dict[str, Any]:
        return {"exponents": None if self.exponents is None else list(self.exponents)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        exponents = state_dict["exponents"]
        self.exponents = None if exponents is None else [int(value) for value in exponents]

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        exponents = state_dict.get("exponents", "missing") if isinstance(state_dict, dict) else "missing"
        if exponents is None or (
            isinstance(exponents, list) and all(type(value) is int for value in exponents)
        ):
            return []
        return [
            f"summation grid: received {state_dict!r}; expected {{'exponents': None or a list of "
            "integers}}, as an elastic='exact' run commits it."
        ]

    def check(self, tensors: int) -> None:
        """Refuse kept exponents for another number of parameter tensors than the network's."""
        if self.exponents is not None and len(self.exponents) != tensors:
            raise ConfigurationError(
                f"elastic='exact': the committed summation grid has {len(self.exponents)} entries; "
                f"expected one per trainable parameter tensor ({tensors}). The network's trainable "
                "parameters changed since the commit; resume with the network the run was created with."
            )


def exact_sum(
    gradients: list[torch.Tensor],
    sizes: list[int],
    world: World,
    groups: int,
    reached: torch.Tensor | None = None,
    grid: SummationGrid | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum over every group of every rank of the flat float64 ``gradients`` (one per local
    group, the parameters' gradients laid end to end by ``sizes``), exact and so independent of
    its order; and which parameters had a gradient on any rank.

    Args:
        groups: the number of groups of a global batch (``M``), which bounds the sum.
        reached: how many local groups reached each parameter (None: all of them).
        grid: the kept grid, updated when it is refitted (None: agree the maxima every time).
    """
    grid = grid or SummationGrid()
    device = gradients[0].device if gradients else torch.device("cpu")
    maxima = _group_maxima(gradients, sizes, device)
    reached = (
        torch.full((len(sizes),), float(len(gradients)), dtype=torch.float64, device=device)
        if reached is None
        else reached.to(device=device, dtype=torch.float64)
    )
    if grid.exponents is not None:
        kept = grid.tensors(sizes, device)
        scaled = maxima * groups
        # Per tensor, exact counts of the local groups: above the top, at or over the floor, not zero.
        fits = [(scaled >= kept.top).sum(dim=0), (scaled >= kept.floor).sum(dim=0), (maxima > 0).sum(dim=0)]
        summed = world.total(torch.cat([_rounded_sum(gradients, kept.step), *fits, reached]))
        total, counts = summed.split([sum(sizes), 4 * len(sizes)])
        above, over_floor, nonzero, reached_anywhere = counts.view(4, -1)
        if not bool(((above > 0) | ((nonzero > 0) & (over_floor == 0))).any()):
            return total, reached_anywhere > 0
    local = (
        maxima.amax(dim=0) if len(gradients) else torch.zeros(len(sizes), dtype=torch.float64, device=device)
    )
    agreed = world.maximum(torch.where(reached > 0, local, -1.0))  # -1: no gradient on this rank
    top = agreed.clamp(min=0.0) * groups
    _, exponents = torch.frexp(top)
    exponents = exponents + HEADROOM
    grid.exponents = exponents.tolist() if bool(torch.isfinite(top).all()) else None
    return world.total(_rounded_sum(gradients, GridTensors.of(exponents, sizes).step)), agreed >= 0


def _group_maxima(gradients: list[torch.Tensor], sizes: list[int], device: torch.device) -> torch.Tensor:
    """The largest magnitude of each parameter's part of each group's gradient: ``[groups, tensors]``."""
    if not gradients:
        return torch.zeros(0, len(sizes), dtype=torch.float64, device=device)
    return torch.stack([_maxima(gradient, sizes) for gradient in gradients])


def _rounded_sum(gradients: list[torch.Tensor], step: torch.Tensor) -> torch.Tensor:
    """The local sum of ``gradients``, each rounded onto the grid of ``step`` (exact)."""
    if len(gradients) == 1:
        return torch.div(gradients[0], step).round_().mul_(step)
    total = torch.zeros_like(step)
    rounded = torch.empty_like(step)  # one buffer for every group: no temporaries per group
    for gradient in gradients:
        torch.div(gradient, step, out=rounded)
        total.add_(rounded.round_().mul_(step))
    return total


def _maxima(gradient: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The largest magnitude of each parameter's part of a flat ``gradient``."""
    parts = gradient.split(sizes)
    if all(sizes):
        return torch.stack(torch._foreach_norm(parts, float("inf")))  # one fused pass
    return torch.stack([part.abs().max() if part.numel() else part.new_zeros(()) for part in parts])
