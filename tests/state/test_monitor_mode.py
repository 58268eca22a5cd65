"""The monitor's mode inferred from its name: the run's best epoch and every callback with a monitor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiment import (
    BestModelRestore,
    EarlyStopping,
    Experiment,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from experiment.errors import ConfigurationError
from experiment.state.best import inferred_mode
from tests.support.training import make_data, make_experiment, make_network


@pytest.mark.parametrize(
    "monitor",
    [
        "acc",
        "val_acc",
        "accuracy",
        "val_top5_acc",
        "top3_accuracy",
        "f1",
        "val_fscore_macro",
        "precision",
        "val_recall",
        "auroc",
        "test_r2",
        "val_balanced_accuracy",
    ],
)
def test_inferred_mode_larger_is_better(monitor: str) -> None:
    assert inferred_mode(monitor) == "max"


@pytest.mark.parametrize("monitor", ["loss", "val_loss", "val_nll_loss", "mae", "val_mse", "test_rmse"])
def test_inferred_mode_smaller_is_better(monitor: str) -> None:
    assert inferred_mode(monitor) == "min"


def test_inferred_mode_unknown_direction_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"monitor_mode: not given.*'val_dice'.*monitor_mode='max'"):
        inferred_mode("val_dice", role="monitor_mode")


def test_experiment_custom_monitor_without_mode_refused_before_writing(tmp_path: Path) -> None:
    def dice(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (y_pred.argmax(1) == y_true).float().mean()

    with pytest.raises(ConfigurationError, match="monitor_mode='max' if larger is better"):
        make_experiment(tmp_path / "run", batch_metrics=[dice], monitor_metric="val_dice")
    assert not (tmp_path / "run" / "experiment.json").exists()
    exp = make_experiment(
        tmp_path / "ok", batch_metrics=[dice], monitor_metric="val_dice", monitor_mode="max"
    )
    assert exp.monitor_mode == "max"


def test_experiment_val_acc_best_epoch_is_the_highest_accuracy(tmp_path: Path) -> None:
    """The default mode once marked the worst epoch best for val_acc, and test() evaluated it."""
    x, y = make_data(samples=192)
    exp = make_experiment(tmp_path / "run", monitor_metric="val_acc")
    exp.train((x[:128], y[:128]), (x[128:], y[128:]), epochs=6, progress=False)
    logs = exp.logs
    best_epoch = int(logs.loc[logs["val_acc"].idxmax(), "epoch"])
    worst_epoch = int(logs.loc[logs["val_acc"].idxmin(), "epoch"])
    assert best_epoch != worst_epoch  # the run must tell them apart for the check to mean anything
    saved = sorted((tmp_path / "run" / "checkpoints").glob("best-epoch*.pt"))
    assert saved[-1].name == f"best-epoch{best_epoch:04d}.pt"
    tested = exp.test((x[128:], y[128:]), progress=False)
    assert tested["test_acc"] == pytest.approx(logs["val_acc"].max())
    assert exp.monitor_mode == "max"
    settings = json.loads((tmp_path / "run" / "experiment.json").read_text())["settings"]
    assert settings["monitor_mode"] == "max"


def test_default_monitor_is_min(tmp_path: Path) -> None:
    x, y = make_data()
    exp = make_experiment(tmp_path / "run")
    exp.train((x, y), (x, y), epochs=1, progress=False)
    assert exp.monitor_mode is None  # not given: the run records the mode of the default monitor
    settings = json.loads((tmp_path / "run" / "experiment.json").read_text())["settings"]
    assert (settings["monitor_metric"], settings["monitor_mode"]) == ("val_loss", "min")


@pytest.mark.parametrize(
    ("make", "mode_of"),
    [
        (lambda m: EarlyStopping(monitor=m), lambda c: c.checker.mode),
        (lambda m: BestModelRestore(monitor=m), lambda c: c.mode),
        (lambda m: ModelCheckpoint("w.pt", monitor=m, save_best_only=True), lambda c: c.mode),
        (lambda m: ReduceLROnPlateau(monitor=m), lambda c: c.mode),
    ],
)
def test_callbacks_infer_mode_from_monitor(make, mode_of) -> None:  # noqa: ANN001
    assert mode_of(make("val_acc")) == "max"
    assert mode_of(make("val_loss")) == "min"
    assert mode_of(make("val_f1")) == "max"


@pytest.mark.parametrize(
    "make",
    [
        lambda: EarlyStopping(monitor="val_dice"),
        lambda: BestModelRestore(monitor="val_dice"),
        lambda: ModelCheckpoint("w.pt", monitor="val_dice", save_best_only=True),
        lambda: ReduceLROnPlateau(monitor="val_dice"),
    ],
)
def test_callbacks_unknown_direction_without_mode_refused(make) -> None:  # noqa: ANN001
    with pytest.raises(ConfigurationError, match="mode='max' if larger is better"):
        make()


def test_callbacks_explicit_mode_kept() -> None:
    assert EarlyStopping(monitor="val_dice", mode="max").checker.mode == "max"
    assert ReduceLROnPlateau(monitor="val_acc", mode="min").mode == "min"
    # a periodic save (no save_best_only) does not depend on the best: no mode needed
    assert ModelCheckpoint("w.pt", monitor="val_dice").save_best_only is False


def test_early_stopping_on_val_acc_stops_when_accuracy_stops_rising() -> None:
    stopper = EarlyStopping(monitor="val_acc", patience=1)
    assert not stopper.checker.update(50.0, 1)
    assert not stopper.checker.update(60.0, 2)  # higher accuracy: an improvement, not a bad epoch
    assert stopper.checker.update(55.0, 3)


def test_torch_plateau_scheduler_contradicting_monitor_refused(tmp_path: Path) -> None:
    x, y = make_data()
    exp = make_experiment(tmp_path / "run", monitor_metric="val_acc")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(exp.optimizer)  # torch's default mode="min"
    with pytest.raises(ConfigurationError, match=r"lr_schedulers\[0\].*mode='min'.*Build it with mode='max'"):
        exp.train((x, y), (x, y), epochs=1, lr_schedulers=[plateau], progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_model_monitor_mode_inferred(tmp_path: Path) -> None:
    network = make_network()
    exp = Experiment(tmp_path / "run", network, loss_function="cross_entropy", monitor_metric="val_accuracy")
    assert exp.monitor_mode == "max"
