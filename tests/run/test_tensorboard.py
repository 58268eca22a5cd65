"""TensorBoard scalars of an interrupted and resumed run: each epoch once, the uninterrupted values.

The event files are read back with TensorBoard's own EventAccumulator, which applies the purge
events a resumed writer leaves behind, the way the TensorBoard UI sees the run.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiment.run import committer as checkpointing
from tests.support.state_checks import assert_same_run, read_log
from tests.support.training import Interrupt, train_run

EPOCHS = 4
TAGS = {"time", "lr", "loss", "acc", "f1", "val_loss", "val_acc", "val_f1"}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run as (step, value) pairs, in the order a reader gets them."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def assert_same_scalars(expected_dir: Path, actual_dir: Path, epochs: int = EPOCHS) -> None:
    expected, actual = scalars(expected_dir), scalars(actual_dir)
    assert set(expected) == set(actual) == TAGS
    for tag, points in actual.items():
        assert [step for step, _ in points] == list(range(1, epochs + 1)), tag
        if tag != "time":
            assert points == expected[tag], tag


@pytest.mark.parametrize(("checkpoint_every", "interrupts"), [(None, [9, 20]), (2, [5, 13, 14, 23])])
def test_tensorboard_resumed_run_holds_each_epoch_once(run_dirs, checkpoint_every, interrupts):
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=checkpoint_every)
    for step in interrupts:
        train_run(resumed, interrupt_at=step, checkpoint_every=checkpoint_every)
    train_run(resumed, checkpoint_every=checkpoint_every)
    assert_same_scalars(straight, resumed)


def crash_before_state_commit_of_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the state commit at the end of ``epoch`` crash, after its row and scalars were written."""
    real_save = checkpointing.save_tensors

    def save_or_crash(path: Path, obj: Any, **options: Any) -> None:
        if (
            path.name.startswith("state-")
            and obj["reason"] == "epoch"
            and obj["nodes"]["progress"]["epochs_completed"] == epoch
        ):
            raise Interrupt(f"crash before the commit of epoch {epoch}")
        real_save(path, obj, **options)

    monkeypatch.setattr(checkpointing, "save_tensors", save_or_crash)


@pytest.mark.parametrize("checkpoint_every", [None, 2])
def test_tensorboard_epoch_recorded_but_not_committed_is_not_duplicated(
    run_dirs, monkeypatch, checkpoint_every
):
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=checkpoint_every)
    crash_before_state_commit_of_epoch(monkeypatch, 2)
    train_run(resumed, checkpoint_every=checkpoint_every)
    # The derived files lead the committed state: epoch 2 is logged but not committed.
    assert list(read_log(resumed)["epoch"]) == [1, 2]
    assert [step for step, _ in scalars(resumed)["loss"]] == [1, 2]
    monkeypatch.undo()
    train_run(resumed, checkpoint_every=checkpoint_every)
    assert list(read_log(resumed)["epoch"]) == list(range(1, EPOCHS + 1))
    assert_same_scalars(straight, resumed)
    assert_same_run(straight, resumed)


def test_tensorboard_resume_does_not_depend_on_event_file_names_sorting_in_time(run_dirs, monkeypatch):
    """Readers order event files by name; an older file whose name sorts last must not win.

    Here the crashed process's file is named as by a clock a few seconds ahead (or by a process
    whose pid sorts after ours within the same second).
    """
    straight, resumed = run_dirs
    train_run(straight)
    crash_before_state_commit_of_epoch(monkeypatch, 2)
    train_run(resumed)
    monkeypatch.undo()
    (old_file,) = (resumed / "tensorboard").glob("*tfevents*")
    ahead = int(time.time()) + 30
    old_file.rename(old_file.with_name(f"events.out.tfevents.{ahead:010d}.{socket.gethostname()}.99999999.0"))
    train_run(resumed)
    assert_same_scalars(straight, resumed)
