"""TrainingLoop.fit driven directly with fakes (a step that trains nothing, recording commit points
and callbacks; no Experiment, no run directory): hook order, one step per call, stops."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from experiment.callbacks.callback_list import CallbackList
from experiment.state.rng import RandomState
from experiment.training.data import BatchSource
from experiment.training.distributed import World
from experiment.training.interrupts import TrainingInterrupted
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan
from experiment.training.step import StepParts
from experiment.training.strategy import Strategy
from tests.support.loop_fakes import FakeCommits, FakeStep, PeerWorld, Recorder, batches


def _training_loop(accumulate: int = 1, world: World | None = None) -> TrainingLoop:
    network = nn.Linear(2, 1)
    return TrainingLoop(
        network,
        torch.optim.SGD(network.parameters(), lr=0.1),
        nn.functional.mse_loss,
        batch_metrics=[],
        epoch_metrics=[],
        device=torch.device("cpu"),
        accumulate_grad_batches=accumulate,
        strategy=None if world is None else Strategy(world),
    )


def _plan(callback: Recorder, count: int, epochs: int) -> TrainingPlan:
    return TrainingPlan(
        BatchSource(batches(count), None, "train_data"), None, epochs, CallbackList([callback])
    )


def test_fit_calls_the_hooks_in_order_and_commits_at_each_epoch_end():
    events: list[tuple[Any, ...]] = []
    loop = _training_loop(accumulate=2)
    loop.use_step(FakeStep.maker(events))
    loop.fit(_plan(Recorder(events), 3, epochs=2), FakeCommits(events, loop.progress))

    def epoch(number: int, steps_before: int) -> list[tuple[Any, ...]]:
        return [
            ("on_epoch_begin", number),
            ("on_train_batch_begin", 1),
            ("step", 1, True, False),
            ("on_train_batch_end", 1, 1, steps_before, False),
            ("on_train_batch_begin", 2),
            ("step", 2, False, True),
            ("on_train_batch_end", 2, 2, steps_before + 1, True),
            ("on_train_batch_begin", 3),
            ("step", 3, True, True),
            ("on_train_batch_end", 3, 3, steps_before + 2, True),
            ("on_epoch_end", number),
            ("commit", "epoch", steps_before + 2),
        ]

    assert events == [("on_train_begin",), *epoch(1, 0), *epoch(2, 2), ("on_train_end",)]
    assert (loop.epochs_completed, loop.steps_in_epoch, loop.global_step) == (2, 0, 4)


def test_fit_builds_one_step_per_call_whatever_its_epochs():
    built: list[FakeStep] = []
    loop = _training_loop()
    loop.use_step(FakeStep.maker([], built))
    loop.fit(_plan(Recorder([]), 2, epochs=3))
    assert len(built) == 1
    loop.fit(_plan(Recorder([]), 2, epochs=4))
    assert len(built) == 2 and loop.epochs_completed == 4


def test_fit_ends_the_epoch_and_the_call_after_the_batch_that_stopped_training():
    events: list[tuple[Any, ...]] = []
    loop = _training_loop()
    loop.use_step(FakeStep.maker(events))
    loop.fit(_plan(Recorder(events, stop_at=2), 3, epochs=3), FakeCommits(events, loop.progress))
    assert events[-4:] == [
        ("on_train_batch_end", 2, 2, 2, True),
        ("on_epoch_end", 1),
        ("commit", "epoch", 2),
        ("on_train_end",),
    ]
    assert loop.stop_training and loop.epochs_completed == 1


def test_fit_gives_the_step_what_it_is_built_from_and_uses_the_random_state_given():
    parts: list[StepParts] = []

    def make(given: StepParts) -> FakeStep:
        parts.append(given)
        return FakeStep(given.groups, [])

    loop = _training_loop(accumulate=2)
    loop.use_step(make)
    rng = RandomState()
    plan = _plan(Recorder([]), 4, epochs=1)
    loop.fit(plan, rng=rng, resumed=True)
    (given,) = parts
    assert given.network is loop.network and given.optimizer is loop.optimizer
    assert given.groups is loop.accumulation
    assert (given.groups.batches, given.groups.steps_per_epoch) == (2, 4)
    assert not given.warm_up  # the warm-up step is for a resumed distributed run only
    assert loop.rng is rng and rng.pass_index == 0  # the epoch's pass was recorded in it


# ------------------------------------------------- the epoch end with another rank (a scripted peer)
def _epoch_end_agreement(values: dict[str, int]) -> bool:
    return "epoch_microseconds" in values


def test_a_signal_only_the_other_rank_received_during_the_epoch_end_commits_the_epoch_then_stops():
    events: list[tuple[Any, ...]] = []
    world = PeerWorld(lambda values: {"signal": 15} if _epoch_end_agreement(values) else {})
    loop = _training_loop(world=world)
    loop.use_step(FakeStep.maker(events))
    with pytest.raises(TrainingInterrupted) as raised:
        loop.fit(_plan(Recorder(events), 2, epochs=3), FakeCommits(events, loop.progress))
    assert raised.value.signum == 15
    # The epoch ends as usual (its hooks, its commit) before the run stops: no epoch 2.
    assert events[-2:] == [("on_epoch_end", 1), ("commit", "epoch", 2)]
    assert loop.epochs_completed == 1


def test_a_stop_decided_by_a_callback_of_the_other_rank_at_the_epoch_end_ends_training_here_too():
    events: list[tuple[Any, ...]] = []
    # The peer's callbacks stop training in on_epoch_end of epoch 2: the agreement that follows them.
    world = PeerWorld(
        lambda values: {"stop": int(loop.epochs_completed == 1)} if list(values) == ["stop"] else {}
    )
    loop = _training_loop(world=world)
    loop.use_step(FakeStep.maker(events))
    loop.fit(_plan(Recorder(events), 2, epochs=5), FakeCommits(events, loop.progress))
    assert loop.epochs_completed == 2 and events[-3:] == [
        ("on_epoch_end", 2),
        ("commit", "epoch", 4),
        ("on_train_end",),
    ]
    assert loop.progress.stop_training


def test_the_epoch_time_logged_is_the_slowest_ranks():
    world = PeerWorld(
        lambda values: {"epoch_microseconds": 7_000_000} if _epoch_end_agreement(values) else {}
    )
    loop = _training_loop(world=world)
    loop.use_step(FakeStep.maker([]))
    history = loop.fit(_plan(Recorder([]), 2, epochs=2), FakeCommits([], loop.progress))
    assert [logs["time"] for logs in history] == [7.0, 7.0]
    assert sum(_epoch_end_agreement(values) for values in world.agreements) == 2
