"""The inner training loop driven directly with fakes (a step that trains nothing, recording
commit points and callbacks): hook order, counting, commit points at group ends, stops, signals."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

import pytest

from experiment.callbacks.callback_list import CallbackList
from experiment.errors import CheckpointError, NonFiniteLossError
from experiment.state.progress import Progress
from experiment.training.accumulation import AccumulationGroups
from experiment.training.batch_loop import BatchLoop
from experiment.training.data import BatchSource
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted
from experiment.training.metrics import EpochAccumulator
from tests.support.loop_fakes import FakeCommits, FakeStep, FakeTrainer, Recorder, Unsized, batches


def _loop(
    events: list[tuple[Any, ...]],
    *,
    accumulate: int = 1,
    steps_per_epoch: int | None = None,
    due_at: Iterable[int] = (),
    callbacks: list[Any] | None = None,
    interrupt: InterruptFlag | None = None,
) -> BatchLoop:
    progress = Progress()
    groups = AccumulationGroups(accumulate, steps_per_epoch)
    hooks = CallbackList(callbacks if callbacks is not None else [Recorder(events)])
    trainer: Any = FakeTrainer(progress, groups)  # the counters a callback reads, nothing more
    hooks.setup({}, trainer)
    return BatchLoop(
        FakeStep(groups, events),
        progress=progress,
        groups=groups,
        metrics=EpochAccumulator([], []),
        callbacks=hooks,
        commits=FakeCommits(events, progress, due_at),
        interrupt=interrupt or InterruptFlag(),
    )


def test_batch_loop_steps_between_the_batch_hooks_and_commits_at_each_group_end():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events, accumulate=2, steps_per_epoch=5, due_at={1, 2, 3})
    loop.run(batches(5))
    assert events == [
        ("on_train_batch_begin", 1),
        ("step", 1, True, False),
        ("on_train_batch_end", 1, 1, 0, False),
        ("on_train_batch_begin", 2),
        ("step", 2, False, True),
        ("on_train_batch_end", 2, 2, 1, True),
        ("commit", "step", 1),
        ("on_train_batch_begin", 3),
        ("step", 3, True, False),
        ("on_train_batch_end", 3, 3, 1, False),
        ("on_train_batch_begin", 4),
        ("step", 4, False, True),
        ("on_train_batch_end", 4, 4, 2, True),
        ("commit", "step", 2),
        ("on_train_batch_begin", 5),
        ("step", 5, True, True),  # the epoch's last batch ends its shorter group
        ("on_train_batch_end", 5, 5, 3, True),
        ("commit", "step", 3),
    ]


def test_batch_loop_counts_batches_and_optimizer_steps_in_progress():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events, accumulate=3, steps_per_epoch=7)
    loop.run(batches(7))
    counted = [(e[2], e[3], e[4]) for e in events if e[0] == "on_train_batch_end"]
    assert counted == [
        (1, 0, False),
        (2, 0, False),
        (3, 1, True),
        (4, 1, False),
        (5, 1, False),
        (6, 2, True),
        (7, 3, True),
    ]
    assert (loop.progress.steps_in_epoch, loop.progress.global_step) == (7, 3)


def test_batch_loop_steps_the_group_that_the_data_ended_inside_then_reaches_a_commit_point():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events, accumulate=2, due_at={3})
    loop.run(Unsized(batches(5)))  # no steps_per_epoch: batch 5 cannot know it is the last
    assert events[-4:] == [
        ("step", 5, True, False),
        ("on_train_batch_end", 5, 5, 2, False),
        ("end_group", 5),
        ("commit", "step", 3),
    ]
    assert (loop.progress.steps_in_epoch, loop.progress.global_step, loop.groups.pending) == (5, 3, False)


def test_batch_loop_leaves_after_the_batch_whose_hook_stopped_training_even_inside_a_group():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events, accumulate=2, steps_per_epoch=6, callbacks=[Recorder(events, stop_at=3)])
    loop.run(batches(6))
    assert events[-1] == ("on_train_batch_end", 3, 3, 1, False)
    assert not any(event[0] in ("end_group", "commit") for event in events)  # the open group is dropped
    assert (loop.progress.steps_in_epoch, loop.progress.global_step) == (3, 1)


def test_batch_loop_commits_a_signal_at_the_next_group_end_then_raises():
    events: list[tuple[Any, ...]] = []
    interrupt = InterruptFlag()

    class SignalAtFirstBatch(Recorder):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            super().on_train_batch_end(batch_number, logs)
            if batch_number == 1:
                interrupt.signum = signal.SIGTERM

    loop = _loop(
        events, accumulate=2, steps_per_epoch=6, callbacks=[SignalAtFirstBatch(events)], interrupt=interrupt
    )
    with pytest.raises(TrainingInterrupted, match=f"signal {int(signal.SIGTERM)}"):
        loop.run(batches(6))
    assert events[-2:] == [("on_train_batch_end", 2, 2, 1, True), ("commit", "interrupt", 1)]


def test_batch_loop_gives_the_end_hooks_the_batch_logs():
    logs_seen: list[dict[str, Any]] = []

    class Logs(Recorder):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            logs_seen.append(logs)

    loop = _loop([], callbacks=[Logs([])])
    loop.run(batches(2))
    assert [(logs["batch"], logs["size"], logs["loss"]) for logs in logs_seen] == [(1, 2, 1.0), (2, 2, 2.0)]
    assert all(logs["time"] >= 0 for logs in logs_seen)


def test_batch_loop_refuses_a_non_finite_loss_before_a_step_commit():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events, due_at={1})
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan in epoch 1 \(by global step 1\)"):
        loop.run([batches(1)[0] * float("nan")])
    assert not any(event[0] == "commit" for event in events)


def test_batch_loop_begins_a_fresh_epoch_with_its_hook_and_all_its_batches():
    events: list[tuple[Any, ...]] = []
    loop = _loop(events)
    source = BatchSource(batches(3), None, "train_data")
    loop.run(loop.epoch_batches(source, 1))
    assert events[0] == ("on_epoch_begin", 1)
    assert [event[1] for event in events if event[0] == "step"] == [1, 2, 3]


def test_batch_loop_refuses_to_resume_an_epoch_without_the_random_state_of_its_pass():
    loop = _loop([])
    loop.progress.steps_in_epoch = 2  # as loaded from a checkpoint that lacks the pass's state
    with pytest.raises(CheckpointError, match=r"stops 2 step\(s\) into epoch 1 but holds no random state"):
        loop.epoch_batches(BatchSource(batches(3), None, "train_data"), 1)
