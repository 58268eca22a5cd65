"""The exact sum of ``elastic="exact"``: independent of order, and its summation grid kept from
step to step, refitted only when the gradients leave it (one all-reduce per step otherwise)."""

from __future__ import annotations

import pytest
import torch

from experiment.errors import ConfigurationError
from experiment.training.distributed import SINGLE
from experiment.training.exact_sum import HEADROOM, REFIT_BELOW, SummationGrid, exact_sum


class CountingWorld:
    """One process that records the all-reduces asked of it."""

    distributed = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def total(self, tensor: torch.Tensor) -> torch.Tensor:
        self.calls.append("sum")
        return tensor

    def maximum(self, tensor: torch.Tensor) -> torch.Tensor:
        self.calls.append("max")
        return tensor


def _group(values: list[float], sizes: list[int]) -> list[torch.Tensor]:
    """One group's float32 gradients: ``values`` cut into parameters of ``sizes``."""
    flat = torch.tensor(values, dtype=torch.float32)
    return list(flat.split(sizes))


def test_exact_sum_does_not_depend_on_the_order_of_the_groups():
    # A float64 sum in order loses the small term in one order and keeps it in the other.
    groups = [_group([1e30, 3.0], [1, 1]), _group([1e-30, 5.0], [1, 1]), _group([-1e30, 7.0], [1, 1])]
    other = [groups[0], groups[2], groups[1]]
    plain = [sum(g[0].double().item() for g in order) for order in (groups, other)]
    assert plain[0] != plain[1]
    forward, _ = exact_sum(groups, [1, 1], SINGLE, 3)
    backward, _ = exact_sum(other, [1, 1], SINGLE, 3)
    assert torch.equal(forward, backward)
    assert forward.tolist() == [0.0, 15.0]


def test_exact_sum_of_zero_gradients_is_zero():
    total, present = exact_sum([_group([0.0] * 3, [2, 1])] * 2, [2, 1], SINGLE, 2)
    assert total.tolist() == [0.0] * 3 and present.tolist() == [True, True]


def test_exact_sum_takes_parameters_without_elements():
    groups = [_group([1.5, -2.0, 4.0], [2, 0, 1]), _group([0.25, 1.0, -4.0], [2, 0, 1])]
    assert exact_sum(groups, [2, 0, 1], SINGLE, 2)[0].tolist() == [1.75, -1.0, 0.0]


def test_exact_sum_says_which_parameters_no_group_reached():
    groups = [[torch.tensor([1.0]), None], [torch.tensor([2.0]), None]]
    total, present = exact_sum(groups, [1, 1], SINGLE, 2)
    assert total.tolist() == [3.0, 0.0] and present.tolist() == [True, False]


def test_float32_gradients_are_rounded_as_float64_ones_are():
    # 1 + 2**-23 at a grid of 2**-46 keeps its last bit; 2**-60 falls below the grid in both.
    values = [3.0, 1 + 2.0**-23, 2.0**-60, -0.1]
    grids = SummationGrid(), SummationGrid()
    narrow, _ = exact_sum([_group(values, [4])], [4], SINGLE, 1, grid=grids[0])
    widened = [part.double() for part in _group(values, [4])]  # the same values, as float64
    wide, _ = exact_sum([widened], [4], SINGLE, 1, grid=grids[1])
    assert torch.equal(narrow, wide) and narrow[2].item() == 0.0 and narrow[1].item() == 1 + 2.0**-23


def test_a_tiny_float32_gradient_is_rounded_exactly_where_float32_scaling_would_overflow():
    tiny = [3e-30, -1e-31]  # its grid's scale, 2**(52 + 99), is beyond float32's range
    total, _ = exact_sum([_group(tiny, [2])], [2], SINGLE, 1)
    expected = torch.tensor(tiny, dtype=torch.float32).double()
    assert torch.equal(total, expected)


def test_a_kept_grid_needs_one_all_reduce_and_gives_the_exact_sum():
    grid, world = SummationGrid(), CountingWorld()
    groups = [_group([0.75, -3.0, 1e-3], [2, 1]), _group([0.5, 2.0, 2e-3], [2, 1])]
    first, _ = exact_sum(groups, [2, 1], world, 2, grid=grid)
    assert world.calls == ["max", "sum"]  # no grid yet: the maxima are agreed first
    assert grid.exponents == [3 + HEADROOM, -7 + HEADROOM]  # 2 * 3.0 < 2**3; 2 * 2e-3 < 2**-7
    world.calls.clear()
    again, _ = exact_sum(groups, [2, 1], world, 2, grid=grid)
    assert world.calls == ["sum"]  # the sum and the grid's counts travel together
    assert torch.equal(first, again)
    assert again[:2].tolist() == [1.25, -1.0]


@pytest.mark.parametrize(
    ("scale", "refits"), [(8.0, False), (64.0, True), (2.0**-6, False), (2.0**-14, True)]
)
def test_a_grid_is_refitted_when_gradients_grow_or_shrink_beyond_its_margins(scale, refits):
    grid, world = SummationGrid(), CountingWorld()
    values = [[3.0, -1.0], [0.5, 2.0]]
    exact_sum([_group(group, [2]) for group in values], [2], world, 2, grid=grid)
    kept = list(grid.exponents)
    world.calls.clear()
    exact_sum([_group([v * scale for v in group], [2]) for group in values], [2], world, 2, grid=grid)
    assert (world.calls == ["sum", "max", "sum"]) is refits
    assert (grid.exponents != kept) is refits


def test_what_a_kept_grid_rounds_differs_from_a_fresh_one_so_the_grid_is_committed():
    # Far below the largest gradient, a kept (coarser) grid rounds what a fresh one keeps: a resumed
    # run must use the grid of the uninterrupted run to take the same bits.
    kept, fresh = SummationGrid(), SummationGrid()
    exact_sum([_group([1.0, 1.0], [2])], [2], SINGLE, 1, grid=kept)  # 1.0 < 2**1
    assert kept.exponents == [1 + HEADROOM]
    largest = 2.0 ** (1 + HEADROOM - REFIT_BELOW)  # the smallest the kept grid still serves
    tiny = 2.0 ** (1 + HEADROOM - 52) / 8  # an eighth of the kept grid's step
    small = [_group([largest, tiny], [2])]
    with_kept, _ = exact_sum(small, [2], SINGLE, 1, grid=kept)
    with_fresh, _ = exact_sum(small, [2], SINGLE, 1, grid=fresh)
    assert kept.exponents == [1 + HEADROOM] and fresh.exponents == [1 + HEADROOM - REFIT_BELOW + 1 + HEADROOM]
    assert with_kept[1].item() == 0.0 and with_fresh[1].item() == tiny


def test_a_non_finite_gradient_leaves_no_grid_to_keep():
    grid = SummationGrid()
    total, _ = exact_sum([_group([float("inf"), 1.0], [1, 1])], [1, 1], SINGLE, 1, grid=grid)
    assert grid.exponents is None and not torch.isfinite(total).all()


def test_summation_grid_state_round_trips_and_refuses_what_it_cannot_hold():
    grid = SummationGrid()
    grid.exponents = [3, -7]
    other = SummationGrid()
    other.load_state_dict(grid.state_dict())
    assert other.exponents == [3, -7] and other.state_problems(grid.state_dict()) == []
    assert other.state_problems({"exponents": None}) == []
    assert (
        "expected {'exponents': None or a list of integers}" in other.state_problems({"exponents": [1.5]})[0]
    )
    with pytest.raises(
        ConfigurationError, match=r"has 2 entries; expected one per trainable parameter tensor \(3\)"
    ):
        other.check(3)
