"""GradientTracker: the statistics handed to log_gradient_statistics, their state, and resume."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import experiment
import experiment.callbacks as callbacks_package
from experiment.callbacks.gradient_tracker import GRADIENT_STATISTICS, GradientTracker
from experiment.callbacks.tensorboard_logger import TensorBoardGradientTracker
from experiment.errors import ConfigurationError
from tests.support.gradients import fake_trainer, track_one_epoch
from tests.support.training import assert_same_training_state, train_run


class CollectingTracker(GradientTracker):
    """Keeps what it receives, by epoch, in a dict shared by the attempts of one run."""

    def __init__(self, received: dict[int, dict[str, dict[str, float]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received = received

    def log_gradient_statistics(
        self, epoch_number: int, statistics: dict[str, dict[str, float]], logs: dict[str, Any]
    ) -> None:
        assert logs["epoch"] == epoch_number
        self.received[epoch_number] = statistics


def test_gradient_tracker_hands_each_parameter_statistics_of_the_epoch():
    torch.manual_seed(0)
    network = nn.Linear(3, 2)
    received: dict[int, dict[str, dict[str, float]]] = {}
    tracker = CollectingTracker(received)
    grads = track_one_epoch(tracker, network, {"epoch": 1})
    assert list(received) == [1] and list(received[1]) == ["weight"]  # biases skipped by default
    norms = torch.stack([g.norm() for g in grads])
    expected = {
        "norm_mean": norms.mean(),
        "norm_std": norms.std(unbiased=False),
        "abs_mean": torch.stack([g.abs().mean() for g in grads]).mean(),
        "min": torch.stack(grads).min(),
        "max": torch.stack(grads).max(),
    }
    assert list(received[1]["weight"]) == list(GRADIENT_STATISTICS)
    for name, value in expected.items():
        assert received[1]["weight"][name] == pytest.approx(float(value), rel=1e-5), name
    assert tracker.stats is None and tracker.count == 0  # the next epoch starts afresh


def test_gradient_tracker_base_ignores_the_statistics_and_keeps_bias_on_request():
    network = nn.Linear(2, 1)
    tracker = GradientTracker(keep_bias=True)
    tracker.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    tracker.on_train_begin({})
    assert tracker.names == ["weight", "bias"]
    network.weight.grad, network.bias.grad = torch.ones(1, 2), torch.ones(1)
    tracker.on_backward_end(1)
    tracker.on_epoch_end(1, {"epoch": 1})  # the base hook does nothing
    assert tracker.stats is None


def test_gradient_tracker_refuses_saved_statistics_of_other_parameters():
    network = nn.Linear(2, 1)
    saved = GradientTracker(keep_bias=True)
    saved.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    saved.on_train_begin({})
    network.weight.grad, network.bias.grad = torch.ones(1, 2), torch.ones(1)
    saved.on_backward_end(1)
    tracker = CollectingTracker({})
    tracker.load_state_dict(saved.state_dict())
    tracker.set_trainer(fake_trainer(network))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"CollectingTracker: the saved statistics track"):
        tracker.on_train_begin({})


def test_gradient_tracker_state_problems_name_the_subclass():
    (problem,) = CollectingTracker({}).state_problems({"names": []})
    assert problem.startswith("CollectingTracker: the saved state lacks ['count', 'stats']")


def test_gradient_tracker_resume_mid_epoch_hands_over_the_same_statistics(run_dirs):
    straight, resumed = run_dirs
    expected: dict[int, dict[str, dict[str, float]]] = {}
    expected_run = train_run(
        straight, epochs=3, checkpoint_every=4, callbacks=lambda: [CollectingTracker(expected)]
    )
    actual: dict[int, dict[str, dict[str, float]]] = {}
    for step in (9, 15, None):  # committed at steps 8 and 12: both mid-epoch (6 steps per epoch)
        actual_run = train_run(
            resumed,
            epochs=3,
            checkpoint_every=4,
            interrupt_at=step,
            callbacks=lambda: [CollectingTracker(actual)],
        )
    assert_same_training_state(expected_run, actual_run)
    assert list(expected) == [1, 2, 3] and list(expected[1]) == ["0.weight", "3.weight"]
    assert actual == expected


def test_gradient_tracker_is_exported_and_is_the_base_of_the_tensorboard_one():
    assert experiment.GradientTracker is callbacks_package.GradientTracker is GradientTracker
    assert issubclass(TensorBoardGradientTracker, GradientTracker)
    tracker = TensorBoardGradientTracker(SimpleNamespace(add_scalar=print, flush=print))
    # the state of runs saved before the base existed still loads under the same name
    assert tracker.state_key == "experiment.callbacks.tensorboard_logger.TensorBoardGradientTracker"
