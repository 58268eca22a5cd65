"""train_model and the deep_pipe-style policies: values per epoch, custom steps, stops, resume."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from experiment import Callback, load_logs
from experiment.errors import ConfigurationError
from experiment.run.train_model import default_train_step, train_model
from experiment.schedules import value_policies
from experiment.schedules.value_policies import (
    Constant,
    Exponential,
    LambdaEpoch,
    Policy,
    Schedule,
    StopTraining,
    Switch,
    ValuePolicy,
)
from experiment.training.loop import TrainingLoop
from tests.support.training import Interrupt, InterruptAt, make_data, make_network

STEPS_PER_EPOCH = 6  # 96 samples in batches of 16


def run(
    directory: Path, *, n_epochs: int = 3, network: nn.Module | None = None, **options: Any
) -> list[dict[str, Any]]:
    network = network if network is not None else make_network()
    settings = {
        "loss_function": "cross_entropy",
        "optimizer": "sgd",
        "batch_size": 16,
        "tensorboard": False,
        "progress": False,
        **options,
    }
    return train_model(directory, network, make_data(), n_epochs=n_epochs, **settings)


# --------------------------------------------------------------------------------- value policies
def test_value_policies_values_per_epoch():
    assert Constant(0.3).values(3) == [0.3, 0.3, 0.3]
    assert Exponential(10, 0.5).values(4) == [10.0, 5.0, 2.5, 1.25]
    assert Exponential(10, 0.5, step_length=2).values(4) == [10.0, 10.0, 5.0, 5.0]
    assert Exponential(1, 0.25, step_length=2, floordiv=False).values(3) == [1.0, 0.5, 0.25]
    assert Exponential(1, 0.1, min_value=0.005).values(4) == [1.0, 0.1, pytest.approx(0.01), 0.005]
    assert Schedule(1.0, {1: 0.5, 3: 0.5}).values(4) == [1.0, 0.5, 0.5, 0.25]
    assert Schedule.constant_multiplier(8.0, 0.5, [1, 2]).values(3) == [8.0, 4.0, 2.0]
    assert Switch("a", {2: "b", 1: "c"}).values(3) == ["a", "c", "b"]
    assert LambdaEpoch(lambda epoch: epoch * 2).values(3) == [0, 2, 4]


def test_value_policies_value_follows_started_epoch():
    policy = Exponential(initial=10, multiplier=0.5)
    assert policy.value == 10.0
    policy.epoch_started(2)
    assert policy.value == 2.5


def test_value_policies_stop_training_has_no_name_that_collides_with_the_callback():
    # experiment.EarlyStopping is the patience callback; deep_pipe's exception is StopTraining here.
    assert not hasattr(value_policies, "EarlyStopping")
    assert not issubclass(StopTraining, ConfigurationError)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Exponential(1, 0.5, step_length=0), "step_length: received 0"),
        (lambda: Exponential("1", 0.5), "initial: received '1'"),
        (lambda: Schedule(1.0, {-1: 0.5}), "key -1"),
        (lambda: Schedule(1.0, [0.5]), "expected a dict epoch -> value"),
        (lambda: Schedule(1.0, {2: "x"}), r"epoch2value_multiplier\[2\]: received 'x'"),
        (lambda: LambdaEpoch(3), "expected a callable"),
    ],
)
def test_value_policies_invalid_arguments_raise(build, match):
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_value_policy_without_value_at_raises():
    with pytest.raises(NotImplementedError, match="value_at"):
        ValuePolicy()


# ------------------------------------------------------------------------------ custom steps
def weighted_step(
    trainer: TrainingLoop, x: Any, y: Any, *, lr: float, weights: float
) -> tuple[torch.Tensor, Any]:
    """deep_pipe's WeightedModel in this library: weight the loss, then an ordinary step."""
    trainer.optimizer.zero_grad()
    y_pred = trainer.network(x)
    loss = weights * trainer.loss_function(y_pred, y).mean()
    loss.backward()
    trainer.optimizer.step()
    return loss, y_pred


def test_train_model_custom_step_receives_policy_values(tmp_path):
    received = []

    def step(trainer: TrainingLoop, x: Any, y: Any, *, lr: float, weights: float) -> torch.Tensor:
        received.append((lr, weights, trainer.optimizer.param_groups[0]["lr"]))
        return weighted_step(trainer, x, y, lr=lr, weights=weights)[0]

    history = run(
        tmp_path,
        lr=Exponential(0.1, 0.5),
        weights=Schedule(10.0, {1: 0.5}),
        train_step=step,
        loss_function=nn.CrossEntropyLoss(reduction="none"),
    )
    expected = [(0.1, 10.0), (0.05, 5.0), (0.025, 5.0)]
    assert received == [(lr, w, lr) for lr, w in expected for _ in range(STEPS_PER_EPOCH)]
    assert [(row["lr"], row["weights"]) for row in history] == expected
    logs = load_logs(tmp_path)
    assert logs["lr"].tolist() == [0.1, 0.05, 0.025]
    assert logs["weights"].tolist() == [10.0, 5.0, 5.0]


def test_train_model_plain_values_are_constants(tmp_path):
    received = set()

    def step(trainer: TrainingLoop, x: Any, y: Any, **values: Any) -> tuple[torch.Tensor, Any]:
        received.add(tuple(sorted(values.items())))
        return default_train_step(trainer, x, y)

    run(tmp_path, n_epochs=1, train_step=step, alpha=0.5)
    assert received == {(("alpha", 0.5),)}


def test_train_model_lr_policy_sets_the_optimizer_without_custom_step(tmp_path):
    history = run(tmp_path, lr=Switch(0.2, {1: 0.02}))
    assert [row["lr"] for row in history] == [0.2, 0.02, 0.02]


def test_train_model_value_policy_without_train_step_raises(tmp_path):
    with pytest.raises(ConfigurationError, match=r"Value policies \['weights'\] have no training step"):
        run(tmp_path, weights=Exponential(1, 0.5))
    assert not tmp_path.joinpath("experiment.json").exists()


class GradientTouch(Callback):
    def on_backward_end(self, batch_number: int) -> None:
        pass


def test_train_model_custom_step_with_backward_end_callback_raises(tmp_path):
    with pytest.raises(ConfigurationError, match=r"\['GradientTouch'\] act in on_backward_end"):
        run(tmp_path, train_step=default_train_step, callbacks=[GradientTouch()])


def test_train_model_reserved_policy_name_raises(tmp_path):
    with pytest.raises(ConfigurationError, match="Policy name 'val_weights' is reserved"):
        run(tmp_path, train_step=default_train_step, val_weights=1.0)


# ------------------------------------------------------------------------------------ policies
class Recorder(Policy):
    """Remembers what it is told; its memory is part of the run's state."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def epoch_started(self, epoch: int) -> None:
        self.events.append(["started", epoch])

    def epoch_finished(self, epoch: int, *, train_losses: Any, metrics: dict[str, float]) -> None:
        self.events.append(["finished", epoch, list(train_losses), dict(metrics)])

    def state_dict(self) -> dict[str, Any]:
        return {"events": [list(event) for event in self.events]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = [list(event) for event in state_dict["events"]]


def test_train_model_policies_receive_losses_and_metrics(tmp_path):
    recorder = Recorder()
    history = run(tmp_path, n_epochs=2, recorder=recorder, validate=lambda: {"score": 0.5})
    assert [event[:2] for event in recorder.events] == [
        ["started", 0],
        ["finished", 0],
        ["started", 1],
        ["finished", 1],
    ]
    for event, row in zip(recorder.events[1::2], history, strict=True):
        assert len(event[2]) == STEPS_PER_EPOCH
        assert math.isclose(sum(event[2]) / STEPS_PER_EPOCH, row["loss"], rel_tol=1e-6)
        assert event[3] == {"score": 0.5}


class StopAt(Policy):
    def __init__(self, epoch: int, where: str) -> None:
        self.epoch, self.where, self.calls = epoch, where, 0

    def epoch_started(self, epoch: int) -> None:
        self.calls += 1
        if self.where == "started" and epoch == self.epoch:
            raise StopTraining

    def epoch_finished(self, epoch: int, *, train_losses: Any, metrics: dict[str, float]) -> None:
        self.calls += 1
        if self.where == "finished" and epoch == self.epoch:
            raise StopTraining


@pytest.mark.parametrize("where", ["finished", "started"])
def test_train_model_stop_from_a_policy_is_remembered(tmp_path, where):
    stop_epoch = 1 if where == "finished" else 2  # both end training after two epochs
    history = run(tmp_path, n_epochs=5, stop=StopAt(stop_epoch, where))
    assert [row["epoch"] for row in history] == [1, 2]
    assert json.loads((tmp_path / "experiment.json").read_text())["status"] == "stopped"
    again = StopAt(stop_epoch, where)
    assert len(run(tmp_path, n_epochs=5, stop=again)) == 2
    assert again.calls == 0
    assert len(load_logs(tmp_path)) == 2


def test_train_model_validate_metrics_are_logged(tmp_path):
    network = make_network()
    xv, yv = make_data(48, seed=2)
    modes = []

    def validate() -> dict[str, Any]:
        modes.append((network.training, torch.is_grad_enabled()))
        return {"accuracy": (network(xv).argmax(1) == yv).float().mean(), "val_custom": 3}

    history = run(tmp_path, n_epochs=2, network=network, validate=validate, tensorboard=True)
    assert modes == [(False, False), (False, False)]
    assert network.training
    logs = load_logs(tmp_path)
    assert logs["val_accuracy"].tolist() == [row["val_accuracy"] for row in history]
    assert logs["val_custom"].tolist() == [3.0, 3.0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("val_accuracy")] == pytest.approx(logs["val_accuracy"].tolist())


def test_train_model_monitors_a_validate_metric(tmp_path):
    network = make_network()
    xv, yv = make_data(48, seed=2)

    def validate() -> dict[str, Any]:
        return {"accuracy": float((network(xv).argmax(1) == yv).float().mean())}

    run(
        tmp_path,
        n_epochs=4,
        network=network,
        validate=validate,
        monitor_metric="val_accuracy",
        monitor_mode="max",
    )
    logs = load_logs(tmp_path)
    best_epoch = int(logs.loc[logs["val_accuracy"].idxmax(), "epoch"])
    assert (
        sorted((tmp_path / "checkpoints").glob("best-epoch*.pt"))[-1].name == f"best-epoch{best_epoch:04d}.pt"
    )


def test_train_model_unknown_monitor_fails_at_the_first_epoch_end(tmp_path):
    from experiment.errors import MonitorError

    with pytest.raises(MonitorError, match=r"'val_acc'.*\['loss', 'lr', 'val_accuracy'\]"):
        run(tmp_path, n_epochs=2, validate=lambda: {"accuracy": 0.5}, monitor_metric="val_acc")
    assert not list((tmp_path / "checkpoints").glob("state-*.pt"))


@pytest.mark.parametrize(
    ("validate", "match"),
    [(lambda: [0.5], "returned list; expected a dict"), (lambda: {"name": "x"}, "'name': 'x' of type str")],
)
def test_train_model_validate_bad_values_raise(tmp_path, validate, match):
    with pytest.raises(ConfigurationError, match=match):
        run(tmp_path, n_epochs=1, validate=validate)


# -------------------------------------------------------------------------------------- resume
def weighted_run(directory: Path, interrupt_at: int | None = None) -> tuple[nn.Module, Any, Recorder]:
    """The same call each time, as a restarted script makes it; swallows an Interrupt."""
    network = make_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    xv, yv = make_data(48, seed=2)
    recorder = Recorder()
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    with contextlib.suppress(Interrupt):
        run(
            directory,
            n_epochs=4,
            network=network,
            optimizer=optimizer,
            lr=Exponential(0.1, 0.7),
            loss_function=nn.CrossEntropyLoss(reduction="none"),
            train_step=weighted_step,
            weights=Schedule(2.0, {2: 0.5}),
            recorder=recorder,
            callbacks=callbacks,
            checkpoint_every=4,
            validate=lambda: {"loss": nn.functional.cross_entropy(network(xv), yv)},
        )
    return network, optimizer, recorder


def test_train_model_resume_matches_uninterrupted(run_dirs):
    straight, resumed = run_dirs
    network_a, optimizer_a, recorder_a = weighted_run(straight)
    for step in (3, 10, 13, 22):  # mid-epoch, with and without a step checkpoint in the epoch
        weighted_run(resumed, interrupt_at=step)
    network_b, optimizer_b, recorder_b = weighted_run(resumed)
    for key, value in network_a.state_dict().items():
        assert torch.equal(value, network_b.state_dict()[key]), key
    for (_, state_a), (_, state_b) in zip(optimizer_a.state.items(), optimizer_b.state.items(), strict=True):
        assert torch.equal(state_a["momentum_buffer"], state_b["momentum_buffer"])
    assert recorder_a.events == recorder_b.events
    assert len(recorder_a.events) == 8
    logs_a, logs_b = load_logs(straight).drop(columns="time"), load_logs(resumed).drop(columns="time")
    assert logs_a.equals(logs_b)
    assert logs_a.columns.tolist() == ["epoch", "lr", "loss", "val_loss", "weights"]
