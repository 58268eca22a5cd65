"""The learning rate of every parameter group in log.tsv, TensorBoard and the callbacks' epoch logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from experiment import Callback, CSVLogger, Experiment, MonitorError, StepLR
from experiment.state.learning_rates import lr_logs
from tests.support.training import assert_same_training_state, make_data, make_network

GROUP_LRS = ["lr_group_0", "lr_group_1"]


class EpochLogs(Callback):
    """Keeps the logs of each on_epoch_end."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.logs.append(dict(logs))


def _two_group_experiment(directory: Path) -> Experiment:
    network = make_network()
    first, last = network[0], network[3]
    optimizer = torch.optim.SGD(
        [{"params": first.parameters(), "lr": 0.2}, {"params": last.parameters()}], lr=0.05, momentum=0.9
    )
    return Experiment(directory, network, optimizer=optimizer, loss_function="cross_entropy")


def _train(directory: Path, callbacks: list[Any], *, epochs: int = 3) -> Experiment:
    exp = _two_group_experiment(directory)
    x, y = make_data()
    exp.train(
        (x, y),
        make_data(32, seed=2),
        epochs=epochs,
        callbacks=[StepLR(step_size=2), *callbacks],
        progress=False,
    )
    return exp


def test_lr_logs_names_one_group_lr_and_several_lr_group_n():
    one = nn.Linear(2, 2)
    assert lr_logs(torch.optim.SGD(one.parameters(), lr=0.3)) == {"lr": 0.3}
    two = torch.optim.SGD([{"params": [one.weight], "lr": 0.1}, {"params": [one.bias]}], lr=0.7)
    assert lr_logs(two) == {"lr_group_0": 0.1, "lr_group_1": 0.7}


def test_learning_rates_of_every_group_in_log_tsv_and_epoch_logs(tmp_path: Path):
    seen = EpochLogs()
    exp = _train(tmp_path / "run", [seen])
    logs = exp.logs
    assert "lr" not in logs.columns
    assert list(logs.columns[:4]) == ["epoch", "time", *GROUP_LRS]
    assert logs["lr_group_0"].tolist() == pytest.approx([0.2, 0.2, 0.02])
    assert logs["lr_group_1"].tolist() == pytest.approx([0.05, 0.05, 0.005])
    assert [log["lr_group_0"] for log in seen.logs] == logs["lr_group_0"].tolist()
    assert all("lr" not in log for log in seen.logs)


def test_learning_rates_of_every_group_in_tensorboard(tmp_path: Path):
    _train(tmp_path / "run", [])
    accumulator = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert {"lr_group_0", "lr_group_1"} <= set(accumulator.Tags()["scalars"])
    assert "lr" not in accumulator.Tags()["scalars"]
    assert [event.value for event in accumulator.Scalars("lr_group_1")] == pytest.approx(
        [0.05, 0.05, 0.005], rel=1e-6
    )


def test_learning_rates_of_every_group_in_csv_logger_columns_and_batch_rows(tmp_path: Path):
    path = tmp_path / "log.csv"
    _train(tmp_path / "run", [CSVLogger(str(path), batch_granularity=True)], epochs=1)
    frame = pd.read_csv(path)
    assert list(frame.columns[:6]) == ["epoch", "batch", "size", "time", *GROUP_LRS]
    assert frame["lr_group_0"].tolist() == pytest.approx([0.2] * len(frame))


def test_learning_rates_of_several_groups_resume_bit_identically(tmp_path: Path):
    reference = _train(tmp_path / "reference", [])

    class StopAfter(Callback):
        def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
            if epoch_number == 2:
                raise KeyboardInterrupt  # a crash after the epoch's files, before its commit

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "resumed", [StopAfter()])
    resumed = _train(tmp_path / "resumed", [])
    assert_same_training_state(reference, resumed)


def test_learning_rate_monitor_of_several_groups_is_known(tmp_path: Path):
    exp = _two_group_experiment(tmp_path / "run")
    exp.monitor_metric = "lr"
    with pytest.raises(MonitorError, match=r"lr_group_0"):
        exp.train(make_data(), epochs=1, progress=False)
    exp.monitor_metric, exp.monitor_mode = "lr_group_1", "min"  # a learning rate has no direction of its own
    exp.train(make_data(), epochs=1, progress=False)
