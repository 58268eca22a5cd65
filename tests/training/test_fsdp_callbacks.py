"""FullySharded.check_callbacks, called directly (no process group is needed to refuse): the
callbacks that save or load weights themselves, and gradient trackers (whose reads of sharded
gradients on rank 0 alone would hang it), are refused, wrapped ones too; the others pass.
The refusal from train() on every rank of a real launch is in tests/distributed/test_fsdp.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiment import (
    BestModelRestore,
    ConfigurationError,
    DelayCallback,
    EarlyStopping,
    GradientTracker,
    LRSchedulerCheckpoint,
    ModelCheckpoint,
    OptimizerCheckpoint,
    PeriodicSaveLambda,
    StepLR,
)
from experiment.training.distributed import World
from experiment.training.fsdp import FullySharded
from experiment.training.strategy import Strategy


def weight_callbacks(tmp_path: Path) -> list[object]:
    saved = str(tmp_path / "saved-{epoch}.pt")
    return [
        ModelCheckpoint(saved),
        OptimizerCheckpoint(saved),
        BestModelRestore(),
        PeriodicSaveLambda(lambda fd, epoch, logs: None, saved),
        DelayCallback([EarlyStopping(), ModelCheckpoint(saved)], epoch_delay=1),
    ]


def test_fsdp_check_callbacks_refuses_each_callback_that_handles_weights(tmp_path: Path):
    strategy = FullySharded(World(size=2, rank=1))
    for callback in weight_callbacks(tmp_path):
        name = type(callback).__name__
        with pytest.raises(ConfigurationError, match=rf"^callbacks\[1\]: received {name}, which saves or"):
            strategy.check_callbacks([EarlyStopping(), callback])


class PrintedGradients(GradientTracker):
    def log_gradient_statistics(
        self, epoch_number: int, statistics: dict[str, Any], logs: dict[str, Any]
    ) -> None:
        print(epoch_number, statistics, logs)


@pytest.mark.parametrize("wrapped", [False, True])
def test_fsdp_check_callbacks_refuses_a_gradient_tracker_whose_reads_would_hang_rank_0(wrapped: bool):
    tracker = PrintedGradients()
    callback = DelayCallback([tracker], epoch_delay=1) if wrapped else tracker
    with pytest.raises(
        ConfigurationError, match=r"^callbacks\[0\]: received \w+, which reads every parameter's gradient"
    ):
        FullySharded(World(size=2, rank=0)).check_callbacks([callback])


def test_fsdp_check_callbacks_lets_the_others_run(tmp_path: Path):
    others = [
        EarlyStopping(),
        LRSchedulerCheckpoint(StepLR(step_size=1), str(tmp_path / "scheduler.pt")),
        DelayCallback([EarlyStopping()], epoch_delay=1),
    ]
    FullySharded(World(size=2)).check_callbacks(others)


def test_other_strategies_run_the_callbacks_that_handle_weights(tmp_path: Path):
    Strategy().check_callbacks(weight_callbacks(tmp_path))
