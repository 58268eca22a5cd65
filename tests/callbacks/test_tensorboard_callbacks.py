"""TensorBoardLogger and TensorBoardGradientTracker: scalars read back from the event files."""

from __future__ import annotations

import math
import re
from pathlib import Path
from time import time as real_time
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.summary.writer import event_file_writer
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from experiment import ConfigurationError
from experiment.callbacks.tensorboard_logger import (
    GRADIENT_STATISTICS,
    LAYOUT_CATEGORY,
    TensorBoardGradientTracker,
    TensorBoardLogger,
)
from tests.support.gradients import fake_trainer, track_one_epoch
from tests.support.training import CrashAtEpochEnd, assert_same_training_state, train_run


@pytest.fixture
def writers(monkeypatch):
    """Make SummaryWriters on demand and close them all at the end of the test.

    TensorBoard reads the event files of a directory in the order of their names, which start with
    the creation time in seconds; the clock of the file writer jumps ahead at each writer so that
    writers made within one second (as restarts of a script never are) still sort in order.
    """
    made: list[SummaryWriter] = []
    clock = SimpleNamespace(time=lambda: real_time() + 1000 * len(made))
    monkeypatch.setattr(event_file_writer, "time", clock)

    def make(log_dir: Path) -> SummaryWriter:
        made.append(SummaryWriter(str(log_dir)))
        return made[-1]

    yield make
    for writer in made:
        writer.close()


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of ``log_dir`` as (step, value) pairs, restart markers applied."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def read_layout(log_dir: Path) -> dict[str, dict[str, list[str]]]:
    """The newest custom-scalars layout of ``log_dir``: {category: {chart: tag patterns}}."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    if "custom_scalars__config__" not in accumulator.Tags()["tensors"]:
        return {}
    events = accumulator.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(events[-1].tensor_proto.string_val[0])
    return {
        category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
        for category in layout.category
    }


def test_tensorboard_logger_writes_numeric_epoch_logs(tmp_path, writers):
    logger = TensorBoardLogger(writers(tmp_path / "tb"))
    logger.on_epoch_end(
        1, {"epoch": 1, "time": 0.5, "loss": 0.75, "val_loss": 0.5, "flag": True, "name": "x"}
    )
    logger.on_epoch_end(
        2, {"epoch": 2, "time": 0.25, "loss": 0.5, "val_loss": 0.25, "flag": False, "name": "y"}
    )
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"time", "loss", "val_loss"}
    assert scalars["loss"] == [(1, 0.75), (2, 0.5)]
    assert scalars["val_loss"] == [(1, 0.5), (2, 0.25)]


def test_tensorboard_logger_rejects_an_object_that_is_not_a_writer():
    with pytest.raises(ConfigurationError, match="expected a SummaryWriter"):
        TensorBoardLogger("runs/tb")


def test_tensorboard_logger_matches_the_run_log(tmp_path, writers):
    writer = writers(tmp_path / "tb")
    exp = train_run(tmp_path / "run", epochs=3, callbacks=lambda: [TensorBoardLogger(writer)])
    scalars = read_scalars(tmp_path / "tb")
    logs = exp.logs
    for key in ("loss", "acc", "f1", "val_loss", "val_acc", "val_f1", "lr"):
        assert [step for step, _ in scalars[key]] == [1, 2, 3]
        for (_, value), expected in zip(scalars[key], logs[key], strict=True):
            assert value == pytest.approx(expected, rel=1e-6)


def test_tensorboard_logger_resume_drops_scalars_of_an_uncommitted_epoch(tmp_path, writers):
    straight = tmp_path / "straight"
    train_run(straight / "run", epochs=3, callbacks=lambda: [TensorBoardLogger(writers(straight / "tb"))])
    resumed = tmp_path / "resumed"
    for crash in ([CrashAtEpochEnd(2)], []):  # epoch 2 is written, then the process dies before its commit
        train_run(
            resumed / "run",
            epochs=3,
            callbacks=lambda c=crash: [TensorBoardLogger(writers(resumed / "tb")), *c],
        )
    expected, actual = read_scalars(straight / "tb"), read_scalars(resumed / "tb")
    assert set(actual) == set(expected)
    for tag in expected:
        assert [step for step, _ in actual[tag]] == [1, 2, 3], tag
        if tag != "time":
            assert actual[tag] == expected[tag], tag


def test_tensorboard_logger_charts_each_metric_with_its_validation_twin(tmp_path, writers):
    train_run(tmp_path / "run", epochs=2, callbacks=lambda: [TensorBoardLogger(writers(tmp_path / "tb"))])
    assert read_layout(tmp_path / "tb") == {
        LAYOUT_CATEGORY: {
            "loss": ["loss$", "val_loss$"],
            "acc": ["acc$", "val_acc$"],
            "f1": ["f1$", "val_f1$"],
        }
    }
    patterns = read_layout(tmp_path / "tb")[LAYOUT_CATEGORY]["loss"]
    tags = read_scalars(tmp_path / "tb")
    assert [tag for tag in tags if any(re.match(p, tag) for p in patterns)] == ["loss", "val_loss"]


def test_tensorboard_logger_layout_survives_a_resume_with_purged_epochs(tmp_path, writers):
    for crash in ([CrashAtEpochEnd(2)], []):
        train_run(
            tmp_path / "run",
            epochs=3,
            callbacks=lambda c=crash: [TensorBoardLogger(writers(tmp_path / "tb")), *c],
        )
    assert set(read_layout(tmp_path / "tb")[LAYOUT_CATEGORY]) == {"loss", "acc", "f1"}
    assert [step for step, _ in read_scalars(tmp_path / "tb")["loss"]] == [1, 2, 3]


def test_tensorboard_logger_writes_no_layout_without_validation(tmp_path, writers):
    logger = TensorBoardLogger(writers(tmp_path / "tb"))
    logger.on_epoch_end(1, {"epoch": 1, "loss": 0.75, "lr": 0.1})
    assert read_layout(tmp_path / "tb") == {}


def test_tensorboard_logger_without_purge_keeps_the_stale_epoch(tmp_path, writers):
    for crash in ([CrashAtEpochEnd(2)], []):
        train_run(
            tmp_path / "run",
            epochs=3,
            callbacks=lambda c=crash: [
                TensorBoardLogger(writers(tmp_path / "tb"), purge_on_resume=False),
                *c,
            ],
        )
    assert [step for step, _ in read_scalars(tmp_path / "tb")["loss"]] == [1, 2, 2, 3]


def test_gradient_tracker_writes_statistics_of_the_epoch(tmp_path, writers):
    torch.manual_seed(0)
    network = nn.Linear(3, 2)
    tracker = TensorBoardGradientTracker(writers(tmp_path / "tb"))
    grads = track_one_epoch(tracker, network, {})
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {f"gradients/weight/{name}" for name in GRADIENT_STATISTICS}
    norms = torch.stack([g.norm() for g in grads])
    expected = {
        "norm_mean": norms.mean(),
        "norm_std": norms.std(unbiased=False),
        "abs_mean": torch.stack([g.abs().mean() for g in grads]).mean(),
        "min": torch.stack(grads).min(),
        "max": torch.stack(grads).max(),
    }
    for name, value in expected.items():
        assert scalars[f"gradients/weight/{name}"] == [(1, pytest.approx(float(value), rel=1e-5))]


def test_gradient_tracker_keep_bias_tracks_bias_and_missing_grads_count_as_zero(tmp_path, writers):
    network = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    tracker = TensorBoardGradientTracker(writers(tmp_path / "tb"), keep_bias=True)
    tracker.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    tracker.on_train_begin({})
    assert tracker.names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    tracker.on_epoch_begin(1, {})
    for parameter in network.parameters():
        parameter.grad = torch.full_like(parameter, 2.0)
    network[1].bias.grad = None
    tracker.on_backward_end(1)
    tracker.on_epoch_end(1, {})
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["gradients/0.bias/max"] == [(1, 2.0)]
    assert scalars["gradients/0.weight/norm_mean"] == [(1, pytest.approx(4.0))]
    assert scalars["gradients/1.bias/norm_mean"] == [(1, 0.0)]


def test_gradient_tracker_state_round_trip_continues_the_statistics(tmp_path, writers):
    network = nn.Linear(2, 1, bias=False)
    tracker = TensorBoardGradientTracker(writers(tmp_path / "a"))
    tracker.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    tracker.on_train_begin({})
    for value in (1.0, 3.0):
        network.weight.grad = torch.full((1, 2), value)
        tracker.on_backward_end(1)
    state = tracker.state_dict()
    assert state["count"] == 2 and state["names"] == ["weight"]
    assert all(tensor.device.type == "cpu" for tensor in state["stats"].values())
    restored = TensorBoardGradientTracker(writers(tmp_path / "b"))
    restored.load_state_dict(state)
    restored.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    restored.on_train_begin({})
    network.weight.grad = torch.full((1, 2), 5.0)
    restored.on_backward_end(3)
    restored.on_epoch_end(1, {})
    scalars = read_scalars(tmp_path / "b")
    norms = [math.sqrt(2) * v for v in (1.0, 3.0, 5.0)]
    assert scalars["gradients/weight/norm_mean"] == [(1, pytest.approx(sum(norms) / 3))]
    assert scalars["gradients/weight/max"] == [(1, 5.0)]


def test_gradient_tracker_refuses_saved_statistics_of_other_parameters(tmp_path, writers):
    network = nn.Linear(2, 1)
    saved = TensorBoardGradientTracker(writers(tmp_path / "a"), keep_bias=True)
    saved.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    saved.on_train_begin({})
    network.weight.grad, network.bias.grad = torch.ones(1, 2), torch.ones(1)
    saved.on_backward_end(1)
    tracker = TensorBoardGradientTracker(writers(tmp_path / "b"))
    tracker.load_state_dict(saved.state_dict())
    tracker.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Keep keep_bias and the network"):
        tracker.on_train_begin({})


def test_gradient_tracker_resume_mid_epoch_matches_uninterrupted(tmp_path, writers):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    expected_run = train_run(
        straight / "run",
        epochs=3,
        checkpoint_every=4,
        callbacks=lambda: [TensorBoardGradientTracker(writers(straight / "tb"))],
    )
    for step in (9, 15, None):  # committed at steps 8 and 12: both mid-epoch (6 steps per epoch)
        actual_run = train_run(
            resumed / "run",
            epochs=3,
            checkpoint_every=4,
            interrupt_at=step,
            callbacks=lambda: [TensorBoardGradientTracker(writers(resumed / "tb"))],
        )
    assert_same_training_state(expected_run, actual_run)
    expected, actual = read_scalars(straight / "tb"), read_scalars(resumed / "tb")
    assert len(expected) == 2 * len(GRADIENT_STATISTICS)  # two weight matrices, biases skipped
    assert actual == expected
    assert all([step for step, _ in values] == [1, 2, 3] for values in actual.values())
