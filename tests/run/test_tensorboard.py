"""TensorBoard scalars of an interrupted and resumed run: each epoch once, the uninterrupted values.

The event files are read back with TensorBoard's own EventAccumulator, which applies the purge
events a resumed writer leaves behind, the way the TensorBoard UI sees the run; the custom-scalars
layout, through the Custom Scalars plugin of TensorBoard itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

from experiment.run import recording
from experiment.store.tensorboard_layout import LAYOUT_CATEGORY
from tests.support.state_checks import assert_same_run, read_log
from tests.support.training import Interrupt, train_run

EPOCHS = 4
TAGS = {"time", "lr", "loss", "acc", "f1", "val_loss", "val_acc", "val_f1"}
#: The Custom Scalars tab of a run with validation: each metric charted with its val_ twin.
PAIRED = {
    LAYOUT_CATEGORY: {
        "loss": ["loss$", "val_loss$"],
        "acc": ["acc$", "val_acc$"],
        "f1": ["f1$", "val_f1$"],
    }
}


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
    """Make the run crash once the row and scalars of ``epoch`` are written, before its state is
    committed (the derived files of a commit are written before its state becomes durable)."""
    real_record = recording.EpochRecorder.record

    def record_then_crash(recorder: recording.EpochRecorder, logs: dict[str, Any]) -> None:
        real_record(recorder, logs)
        if logs["epoch"] == epoch:
            raise Interrupt(f"crash before the commit of epoch {epoch}")

    monkeypatch.setattr(recording.EpochRecorder, "record", record_then_crash)


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


def layout_shown(run_dir: Path) -> dict[str, dict[str, list[str]]]:
    """The custom-scalars layout as TensorBoard's Custom Scalars tab gets it: {category: {chart: tags}}."""
    log_dir = str(run_dir / "tensorboard")
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, log_dir)
    plugin = CustomScalarsPlugin(
        base_plugin.TBContext(data_provider=provider, multiplexer=multiplexer, logdir=log_dir)
    )
    layout = json.loads(plugin.layout_impl(context.RequestContext(), "") or "{}")
    charts = {
        category["title"]: [(chart["title"], chart["multiline"]["tag"]) for chart in category["chart"]]
        for category in layout.get("category", [])
    }
    assert all(len(dict(pairs)) == len(pairs) for pairs in charts.values()), f"a chart twice: {charts}"
    return {title: dict(pairs) for title, pairs in charts.items()}


def layouts_written(run_dir: Path) -> list[dict[str, dict[str, list[str]]]]:
    """Every custom-scalars layout left in the event files, purges applied, oldest first."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    accumulator.Reload()
    if "custom_scalars__config__" not in accumulator.Tags()["tensors"]:
        return []
    layouts = []
    for event in accumulator.Tensors("custom_scalars__config__"):
        assert event.step == 0  # a step that no purge of a resume drops
        layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
        layouts.append(
            {
                category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
                for category in layout.category
            }
        )
    return layouts


def test_tensorboard_run_charts_each_metric_with_its_validation_twin(run_dirs):
    straight, _ = run_dirs
    train_run(straight, epochs=2)
    assert layout_shown(straight) == PAIRED
    assert layouts_written(straight) == [PAIRED]


def test_tensorboard_layout_survives_interrupted_and_resumed_runs(run_dirs, monkeypatch):
    straight, resumed = run_dirs
    train_run(straight)
    # The first attempt writes epoch 1 and the layout, then dies before committing epoch 1.
    crash_before_state_commit_of_epoch(monkeypatch, 1)
    train_run(resumed)
    monkeypatch.undo()
    train_run(resumed, interrupt_at=9)
    train_run(resumed)
    assert layout_shown(resumed) == PAIRED
    assert layouts_written(resumed) and all(layout == PAIRED for layout in layouts_written(resumed))
    assert_same_scalars(straight, resumed)


def test_tensorboard_resume_adds_the_layout_to_a_run_that_has_none(run_dirs, monkeypatch):
    """A run whose event files hold no layout (written by an earlier release) gets it on resume."""
    _, resumed = run_dirs
    monkeypatch.setattr(recording, "paired_layout", lambda keys: {})
    train_run(resumed, epochs=2)
    assert layouts_written(resumed) == []
    monkeypatch.undo()
    train_run(resumed, epochs=3)
    assert layout_shown(resumed) == PAIRED
    assert [step for step, _ in scalars(resumed)["loss"]] == [1, 2, 3]


def test_tensorboard_folder_rebuilt_on_resume_holds_the_layout(run_dirs):
    _, resumed = run_dirs
    train_run(resumed, epochs=2)
    shutil.rmtree(resumed / "tensorboard")
    train_run(resumed, epochs=3)
    assert layouts_written(resumed) == [PAIRED]
    assert [step for step, _ in scalars(resumed)["loss"]] == [1, 2, 3]
