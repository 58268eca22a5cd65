"""The exact sum of ``elastic="exact"``: gradients added over groups and ranks in no particular
order, with a result that no order, and so no number of processes, can change.

Per parameter tensor, every group's gradient is rounded onto a grid ``q = 2**(e - 52)`` where
``M * max |g| < 2**e`` over every group (``M``: the groups of a global batch). A multiple of ``q``
below ``2**53 * q`` is a float64 exactly, so every partial sum of the rounded gradients, on one rank
or over the ranks, is exact. Only what lies below the grid is rounded, far under float32's precision
(see SCALE.md §8). A float32 gradient is rounded in float32 (scaling by powers of two and rounding
to integers are exact there) and added into the float64 sum.

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
    """A grid as the sum uses it: per tensor, the top that every group's ``M * max`` must stay
    under, the floor that one must reach, and the powers of two that scale a gradient onto its grid
    and back."""

    top: torch.Tensor
    floor: torch.Tensor
    up: list[float]
    down: list[float]

    @classmethod
    def of(cls, exponents: list[int], device: torch.device) -> GridTensors:
        power = torch.tensor(exponents, device=device)
        one = torch.ones(len(exponents), dtype=torch.float64, device=device)
        return cls(
            torch.ldexp(one, power),
            torch.ldexp(one, power - REFIT_BELOW),
            [2.0 ** (GRID_BITS - exponent) for exponent in exponents],
            [2.0 ** (exponent - GRID_BITS) for exponent in exponents],
        )


class SummationGrid:
    """The exponents of the grids that an exact run's gradients are rounded on, one per parameter
    tensor; None before the first step. Kept with every commit, so that a resumed run chooses the
    grids of an uninterrupted one."""

    def __init__(self) -> None:
        self.exponents: list[int] | None = None
        self._tensors: tuple[Any, GridTensors] | None = None  # of the exponents, until they change

    def reset(self) -> None:
        self.exponents = None

    def tensors(self, device: torch.device) -> GridTensors:
        """The kept grid as the sum uses it (built again only when it changes)."""
        assert self.exponents is not None, "no grid is kept before the first step"
        key = (tuple(self.exponents), device)
        if self._tensors is None or self._tensors[0] != key:
            self._tensors = (key, GridTensors.of(self.exponents, device))
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
    gradients: list[list[torch.Tensor | None]],
    sizes: list[int],
    world: World,
    groups: int,
    grid: SummationGrid | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum over every group of every rank of ``gradients`` (per local group, each parameter's
    gradient, None where the group did not reach it), exact and so independent of its order, as
    one float64 tensor of the parameters laid end to end by ``sizes``; and which parameters had a
    gradient on any rank.

    Args:
        groups: the number of groups of a global batch (``M``), which bounds the sum.
        grid: the kept grid, updated when it is refitted (None: agree the maxima every time).
    """
    grid = grid or SummationGrid()
    device = next((g.device for grads in gradients for g in grads if g is not None), torch.device("cpu"))
    maxima = _group_maxima(gradients, sizes, device)
    reached = torch.tensor(
        [sum(grads[i] is not None for grads in gradients) for i in range(len(sizes))],
        dtype=torch.float64,
        device=device,
    )
    if grid.exponents is not None:
        kept = grid.tensors(device)
        scaled = maxima * groups
        # Per tensor, exact counts of the local groups: above the top, at or over the floor, not zero.
        fits = [(scaled >= kept.top).sum(dim=0), (scaled >= kept.floor).sum(dim=0), (maxima > 0).sum(dim=0)]
        local = _rounded_sum(gradients, sizes, grid.exponents, kept, device)
        summed = world.total(torch.cat([local, *fits, reached]))
        total, counts = summed.split([sum(sizes), 4 * len(sizes)])
        above, over_floor, nonzero, reached_anywhere = counts.view(4, -1)
        if not bool(((above > 0) | ((nonzero > 0) & (over_floor == 0))).any()):
            return total, reached_anywhere > 0
    largest = maxima.amax(dim=0) if gradients else torch.zeros(len(sizes), dtype=torch.float64, device=device)
    agreed = world.maximum(torch.where(reached > 0, largest, -1.0))  # -1: no gradient on this rank
    top = agreed.clamp(min=0.0) * groups
    exponents = (torch.frexp(top)[1] + HEADROOM).tolist()
    grid.exponents = exponents if bool(torch.isfinite(top).all()) else None
    fitted = GridTensors.of(exponents, device)
    return world.total(_rounded_sum(gradients, sizes, exponents, fitted, device)), agreed >= 0


def _group_maxima(
    gradients: list[list[torch.Tensor | None]], sizes: list[int], device: torch.device
) -> torch.Tensor:
    """The largest magnitude of each group's gradient of each parameter: ``[groups, tensors]``
    (zero where a group has none)."""
    rows = []
    for grads in gradients:
        row = torch.zeros(len(sizes), dtype=torch.float64, device=device)
        index = [i for i, grad in enumerate(grads) if grad is not None and sizes[i]]
        if index:
            norms = torch._foreach_norm([grads[i] for i in index], float("inf"))  # type: ignore[misc]
            row[index] = torch.stack(norms).to(torch.float64)
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, len(sizes), dtype=torch.float64, device=device)


#: The smallest exponent whose grid float32 arithmetic reaches exactly: below it the scale
#: ``2**(52 - e)`` exceeds float32's range, and such a (tiny) gradient is rounded in float64.
_FLOAT32_LOWEST = GRID_BITS - 126


def _rounded_sum(
    gradients: list[list[torch.Tensor | None]],
    sizes: list[int],
    exponents: list[int],
    grid: GridTensors,
    device: torch.device,
) -> torch.Tensor:
    """The local sum of ``gradients``, each rounded onto its parameter's grid, in float64 (exact).

    A float32 gradient is rounded in float32: multiplying by a power of two, rounding to an integer
    and multiplying back are exact there, so the result is the float64 rounding's, at half the bytes.
    """
    total = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    parts = total.split(sizes)
    for grads in gradients:
        fast = [
            i
            for i, grad in enumerate(grads)
            if grad is not None and grad.dtype == torch.float32 and exponents[i] >= _FLOAT32_LOWEST
        ]
        if fast:
            rounded = torch._foreach_mul([grads[i] for i in fast], [grid.up[i] for i in fast])  # type: ignore[misc]
            torch._foreach_round_(rounded)
            torch._foreach_mul_(rounded, [grid.down[i] for i in fast])  # type: ignore[misc]
            torch._foreach_add_([parts[i] for i in fast], [value.reshape(-1) for value in rounded])
        done = set(fast)
        for i, grad in enumerate(grads):
            if grad is not None and i not in done:
                wide = grad.reshape(-1).to(torch.float64)
                parts[i].add_(wide.mul(grid.up[i]).round_().mul_(grid.down[i]))
    return total
