"""Bad input and bad state: a clear error each time, raised before anything is written where it can be."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from experiment import (
    Callback,
    ConfigurationError,
    DataError,
    Experiment,
    MonitorError,
    NonFiniteLossError,
    RunDirectoryError,
    StateMismatchError,
)
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.cli import call_as_nobody
from tests.support.state_checks import newest_state, snapshot_files
from tests.support.training import make_data, make_experiment, make_network, train_run

LOCK_FILES = (".lock", ".lock.holder")  # taking the lock (which comes first) records its holder


def valid_data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(48, seed=2)


def train_with(exp: Experiment, **options: Any) -> list[dict[str, Any]]:
    return exp.train(make_data(), valid_data(), **{"epochs": 3, **options})


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A run of 2 epochs with a StepLR schedule, and the snapshot of its files."""
    run_dir = tmp_path / "run"
    train_run(run_dir, epochs=2, schedulers=lambda opt: [torch.optim.lr_scheduler.StepLR(opt, 1)])
    return run_dir


# ------------------------------------------------------------------------ state that does not fit
def test_errors_network_mismatch_lists_keys_and_changes_nothing(finished_run):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    weights = {key: value.clone() for key, value in network.state_dict().items()}
    exp = Experiment(
        finished_run,
        network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9),
        loss_function="cross_entropy",
    )
    before = snapshot_files(finished_run, ignore=LOCK_FILES)
    with pytest.raises(StateMismatchError, match=r"does not fit the objects given now") as raised:
        train_with(exp, lr_schedulers=[torch.optim.lr_scheduler.StepLR(exp.optimizer, 1)])
    message = str(raised.value)
    assert "network keys missing from the checkpoint: ['2.bias', '2.weight']" in message
    assert "unexpected network keys in the checkpoint: ['3.bias', '3.weight']" in message
    assert "network key '0.weight' has shape (16, 6) in the checkpoint but (8, 6) now" in message
    assert "network key '0.bias' has shape (16,) in the checkpoint but (8,) now" in message
    assert "Nothing was loaded and the directory was not changed" in message
    assert snapshot_files(finished_run, ignore=LOCK_FILES) == before
    assert all(torch.equal(value, weights[key]) for key, value in network.state_dict().items())


def test_errors_optimizer_of_another_class_says_so_first_without_hyperparameter_noise(finished_run):
    network = make_network()
    exp = Experiment(
        finished_run,
        network,
        optimizer=torch.optim.Adam(network.parameters(), lr=0.1),
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        epoch_metrics=["f1"],
    )
    with pytest.raises(StateMismatchError) as raised:
        train_with(exp)
    problems = str(raised.value).splitlines()[1:]
    assert problems[0] == "  - the optimizer is Adam now, SGD when the run was created"
    assert not any("betas" in line or "momentum" in line for line in problems)


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        (
            lambda params: torch.optim.Adam(params, lr=0.01),
            r"the optimizer is Adam now, SGD when the run was created",
        ),
        (
            lambda params: torch.optim.SGD(
                [{"params": params[:2]}, {"params": params[2:]}], lr=0.1, momentum=0.9
            ),
            r"the optimizer has 2 parameter group\(s\) now but 1 in the checkpoint",
        ),
    ],
)
def test_errors_optimizer_mismatch_changes_nothing(finished_run, optimizer, expected):
    network = make_network()
    exp = Experiment(
        finished_run,
        network,
        optimizer=optimizer(list(network.parameters())),
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        epoch_metrics=["f1"],
    )
    before = snapshot_files(finished_run, ignore=LOCK_FILES)
    with pytest.raises(StateMismatchError, match=expected):
        train_with(exp, lr_schedulers=[torch.optim.lr_scheduler.StepLR(exp.optimizer, 1)])
    assert snapshot_files(finished_run, ignore=LOCK_FILES) == before


def test_errors_scheduler_mismatch_changes_nothing(finished_run):
    exp = make_experiment(finished_run)
    before = snapshot_files(finished_run, ignore=LOCK_FILES)
    with pytest.raises(StateMismatchError, match=r"the LR schedulers are \[\] now but were \['StepLR'\]"):
        train_with(exp)
    assert snapshot_files(finished_run, ignore=LOCK_FILES) == before


# ------------------------------------------------------------------------------- monitor_metric
@pytest.mark.parametrize(
    ("monitor", "with_validation", "listed"),
    [
        ("val_f2", True, "['acc', 'f1', 'loss', 'lr', 'val_acc', 'val_f1', 'val_loss']"),
        ("val_acc", False, "['acc', 'f1', 'loss', 'lr']"),
    ],
)
def test_errors_monitor_metric_not_logged_is_raised_before_writing(
    tmp_path, monitor, with_validation, listed
):
    run_dir = tmp_path / "run"
    exp = make_experiment(run_dir, monitor_metric=monitor, monitor_mode="max")
    message = rf"monitor_metric: received '{monitor}', which is not among the logged keys {listed}"
    with pytest.raises(MonitorError, match=message.replace("[", r"\[").replace("]", r"\]")):
        exp.train(make_data(), valid_data() if with_validation else None, epochs=2)
    assert not run_dir.exists()


# ---------------------------------------------------------------------------------- NaN loss
class Poison(Callback):
    """From global step ``step`` on, the loss function returns NaN."""

    def __init__(self, state: dict[str, bool], step: int) -> None:
        super().__init__()
        self.state, self.step = state, step

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step + 1 >= self.step:
            self.state["poisoned"] = True


@pytest.mark.parametrize(("checkpoint_every", "committed_step"), [(None, 3), (2, 4)])  # 3 steps an epoch
def test_errors_nan_loss_raises_and_keeps_last_commit(tmp_path, checkpoint_every, committed_step):
    state = {"poisoned": False}
    cross_entropy = nn.CrossEntropyLoss()

    def loss(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        value = cross_entropy(y_pred, y_true)
        return value * float("nan") if state["poisoned"] else value

    exp = make_experiment(tmp_path, loss_function=loss)
    with pytest.raises(
        NonFiniteLossError, match=r"The training loss became nan in epoch 2 .*last checkpoint is intact"
    ):
        train_with(exp, callbacks=[Poison(state, 5)], checkpoint_every=checkpoint_every)
    tree, _ = load_newest_state(RunDirectory(tmp_path))
    assert tree["nodes"]["progress"]["global_step"] == committed_step
    assert all(torch.isfinite(value).all() for value in tree["nodes"]["model"].values())
    assert len(exp.logs) == 1
    assert json.loads((tmp_path / "experiment.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------------------------- bad data
def test_errors_empty_loader_is_a_data_error_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    empty = DataLoader(TensorDataset(torch.empty(0, 6), torch.empty(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(DataError, match=r"train_data yields no batches \(its length is 0\)"):
        make_experiment(run_dir).train(empty, valid_data(), epochs=2)
    with pytest.raises(DataError, match=r"valid_data yields no batches \(its length is 0\)"):
        make_experiment(run_dir).train(make_data(), empty, epochs=2)
    assert not run_dir.exists()


class EmptyStream(IterableDataset):
    def __iter__(self) -> Iterator[Any]:
        return iter(())


def test_errors_loader_without_length_that_yields_nothing_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"train_data yielded no batches in epoch 1; expected at least one"):
        make_experiment(tmp_path).train(DataLoader(EmptyStream(), batch_size=4), valid_data(), epochs=2)
    assert list((tmp_path / "checkpoints").glob("state-*.pt")) == []


def test_errors_unsupported_data_type(tmp_path):
    with pytest.raises(DataError, match=r"train_data: received int; expected a torch DataLoader"):
        make_experiment(tmp_path / "run").train(3, epochs=1)
    with pytest.raises(DataError, match=r"x and y must have the same length; received 96 and 5 samples"):
        make_experiment(tmp_path / "run").train((make_data()[0], torch.zeros(5)), epochs=1)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the run directory
def test_errors_directory_path_that_is_a_file(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a directory")
    with pytest.raises(RunDirectoryError, match=r"The run directory .*run is a file; expected a directory"):
        make_experiment(path)
    assert path.read_text() == "not a directory"


def test_errors_directory_below_a_file_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    exp = make_experiment(tmp_path / "file" / "run")
    with pytest.raises(
        RunDirectoryError, match=r"Cannot create the run directory .*file/run: Not a directory"
    ):
        train_with(exp)


def make_read_only(run_dir: Path) -> None:
    for folder in (run_dir / "checkpoints", run_dir):
        folder.chmod(0o555)


def make_writable(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        folder.chmod(0o755)


def test_errors_read_only_directory(finished_run):
    make_read_only(finished_run)
    try:
        if os.access(finished_run, os.W_OK):
            pytest.skip(
                "running as root (or with CAP_DAC_OVERRIDE): chmod does not make a directory "
                "read-only; test_errors_read_only_directory_for_another_user covers it"
            )
        with pytest.raises(RunDirectoryError, match=r"The run directory .*run is read-only"):
            train_with(make_experiment(finished_run), epochs=3)
        assert newest_state(finished_run)["nodes"]["progress"]["epochs_completed"] == 2
    finally:
        make_writable(finished_run)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to train as another user; test_errors_read_only_directory covers it",
)
def test_errors_read_only_directory_for_another_user():
    """As root, chmod does not stop writes: train in a forked child that drops to user 'nobody'."""
    with tempfile.TemporaryDirectory(dir="/tmp") as parent:
        Path(parent).chmod(0o755)  # traversable by nobody; the run directory itself is read-only
        run_dir = Path(parent) / "run"
        train_run(run_dir, epochs=2)
        exp = make_experiment(run_dir)
        make_read_only(run_dir)
        try:
            kind, message = call_as_nobody(train_with, exp)
        finally:
            make_writable(run_dir)
        assert kind == "RunDirectoryError", message
        assert "is read-only" in message and str(run_dir) in message
        assert newest_state(run_dir)["nodes"]["progress"]["epochs_completed"] == 2


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"epochs": 0}, r"epochs: received 0; expected a positive integer\."),
        ({"epochs": -1}, r"epochs: received -1; expected a positive integer\."),
        ({"epochs": 2.5}, r"epochs: received 2\.5; expected a positive integer\."),
        ({"batch_size": 0}, r"batch_size: received 0; expected a positive integer\."),
        ({"checkpoint_every": 0}, r"checkpoint_every: received 0; expected a positive integer or None\."),
        ({"steps_per_epoch": -3}, r"steps_per_epoch: received -3; expected a positive integer or None\."),
    ],
)
def test_errors_bad_train_arguments_are_raised_before_writing(tmp_path, options, expected):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigurationError, match=expected):
        train_with(make_experiment(run_dir), **options)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"optimizer": "sgdd"}, r"Unknown optimizer: received 'sgdd'; expected one of \[.*'sgd'"),
        (
            {"loss_function": "crossentropy"},
            r"Unknown loss_function: received 'crossentropy'; expected one of \[.*'cross_entropy'",
        ),
        (
            {"batch_metrics": ["acuracy"]},
            r"Unknown .* name: received 'acuracy'; expected one of \[.*'accuracy'",
        ),
        ({"epoch_metrics": ["f2"]}, r"Unknown .* name: received 'f2'; expected one of \[.*'f1'"),
        ({"monitor_mode": "maximum"}, r"monitor_mode: received 'maximum'; expected 'min' or 'max'"),
        ({"device": "gpu:7"}, r"device: received 'gpu:7'; expected a torch device"),
    ],
)
def test_errors_bad_experiment_arguments(tmp_path, options, expected):
    network = make_network()
    arguments = {"optimizer": "sgd", "loss_function": "cross_entropy", **options}
    with pytest.raises(ConfigurationError, match=expected):
        Experiment(tmp_path / "run", network, **arguments)
    assert not (tmp_path / "run").exists()


def test_errors_network_that_is_not_a_module(tmp_path):
    with pytest.raises(ConfigurationError, match=r"network: received function; expected a torch\.nn\.Module"):
        Experiment(tmp_path / "run", lambda x: x, loss_function="mse")


def test_errors_training_without_loss_function(tmp_path):
    exp = Experiment(tmp_path / "run", make_network(), optimizer="sgd")
    with pytest.raises(ConfigurationError, match=r"Training needs a loss function"):
        train_with(exp)
    assert not (tmp_path / "run").exists()
