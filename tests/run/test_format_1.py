"""A run directory written by the release with checkpoint format 1 still resumes, bit for bit.

tests/fixtures/format1-mid-epoch was made by that release: the tiny classifier of tests/support,
StepLR, two EarlyStopping callbacks and BestModelRestore, interrupted at global step 15 (three
steps into epoch 3) with step checkpoints every 2 steps, so its newest state is mid-epoch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from experiment import BestModelRestore, EarlyStopping
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.state_checks import assert_same_run
from tests.support.training import assert_same_training_state, train_run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "format1-mid-epoch"


def _callbacks():
    return [
        EarlyStopping(patience=5),
        EarlyStopping(monitor="val_acc", mode="max", patience=5),
        BestModelRestore(),
    ]


def _schedulers(optimizer):
    return [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)]


def _train(directory: Path):
    return train_run(
        directory,
        epochs=4,
        callbacks=_callbacks,
        schedulers=_schedulers,
        checkpoint_every=2,
        progress=False,
        experiment_options={"tensorboard": False},
    )


def test_format_1_checkpoint_reads_as_a_format_2_tree():
    tree, path = load_newest_state(RunDirectory(FIXTURE))
    assert path.name == "state-000009.pt" and tree["upgraded_from"] == 1
    progress = tree["nodes"]["progress"]
    assert (progress["epochs_completed"], progress["steps_in_epoch"], progress["global_step"]) == (2, 2, 14)
    assert tree["classes"]["schedulers/0"] == "StepLR"
    assert {"callbacks/EarlyStopping", "callbacks/EarlyStopping#2", "callbacks/BestModelRestore"} <= set(
        tree["nodes"]
    )


def test_format_1_run_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(FIXTURE, resumed)
    expected = _train(tmp_path / "uninterrupted")
    actual = _train(resumed)
    assert_same_training_state(expected, actual)
    assert_same_run(tmp_path / "uninterrupted", resumed)
    states = load_newest_state(RunDirectory(resumed))[0]["nodes"]
    early_stop = "callbacks/experiment.callbacks.early_stopping.EarlyStopping"
    assert (
        states[f"{early_stop}#2"]
        == load_newest_state(RunDirectory(tmp_path / "uninterrupted"))[0]["nodes"][f"{early_stop}#2"]
    )
