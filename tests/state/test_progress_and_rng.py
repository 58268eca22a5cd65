"""The progress and random-state nodes of the state tree."""

from __future__ import annotations

import random

import pytest
import torch

from experiment.errors import StateMismatchError
from experiment.state.progress import Progress
from experiment.state.rng import RandomState, restore_rng


def test_progress_counts_completed_units_and_round_trips():
    progress = Progress()
    for _ in range(3):
        progress.batch_done(True)
    progress.epoch_done({"epoch": 1, "loss": 0.5})
    progress.batch_done(True)
    state = progress.state_dict()
    assert (state["epochs_completed"], state["steps_in_epoch"], state["global_step"]) == (1, 1, 4)
    again = Progress()
    again.load_state_dict(state)
    assert again.state_dict() == state
    assert again.history is not progress.history  # copied, not shared


def test_progress_reports_a_state_without_its_counters():
    assert Progress().state_problems({"epochs_completed": 1}) == [
        "the progress state lacks ['steps_in_epoch', 'global_step', 'stop_training', 'history', 'epoch_time']"
    ]


def test_random_state_round_trip_puts_back_the_step_and_the_pass():
    generator = torch.Generator().manual_seed(3)
    rng = RandomState([generator])
    rng.pass_started(0)
    expected_pass = torch.rand(2, generator=generator)
    state = rng.state_dict()
    expected_step = (torch.rand(2, generator=generator), random.random())
    restored = RandomState([generator])
    assert restored.state_problems(state) == []
    restored.load_state_dict(state)
    restored.restore_step()
    assert (
        torch.equal(torch.rand(2, generator=generator), expected_step[0])
        and random.random() == expected_step[1]
    )
    restored.restore_pass()
    assert torch.equal(torch.rand(2, generator=generator), expected_pass)


def test_random_state_pinned_snapshot_is_what_commits_save():
    rng = RandomState()
    rng.pin()
    pinned = rng.state_dict()["step"]["torch"]
    torch.rand(3)
    assert torch.equal(rng.state_dict()["step"]["torch"], pinned)
    rng.unpin()
    assert not torch.equal(rng.state_dict()["step"]["torch"], pinned)


def test_random_state_reports_a_different_number_of_loader_generators():
    saved = RandomState().state_dict()
    live = RandomState([torch.Generator()])
    (problem,) = live.state_problems(saved)
    assert "holds 0 data-loader generator state(s) but the loaders given now hold 1" in problem
    with pytest.raises(StateMismatchError, match="holds 0 data-loader generator state"):
        restore_rng(saved["step"], [torch.Generator()])


def test_progress_counts_batches_and_the_optimizer_steps_after_them_apart():
    progress = Progress()
    for stepped in (False, True, False):
        progress.batch_done(stepped)
    progress.optimizer_step_done()  # the group that the epoch's data ended inside
    assert (progress.steps_in_epoch, progress.global_step) == (3, 2)
