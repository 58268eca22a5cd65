"""Checkpoint-format migration driven directly: hand-made format-1 trees (each callback's old shape)
and the run's live callbacks; every migrated state loads into today's callback."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from experiment.callbacks.best_model_restore import BestModelRestore
from experiment.callbacks.checkpoint_savers import LRSchedulerCheckpoint, ModelCheckpoint
from experiment.callbacks.csv_logger import CSVLogger
from experiment.callbacks.delay import DelayCallback
from experiment.callbacks.early_stopping import EarlyStopping
from experiment.callbacks.lr_schedulers import StepLR
from experiment.errors import CheckpointError
from experiment.run.run_state import keyed_callbacks
from experiment.store.migration import TREE_FORMAT, migrate
from tests.support.format_1 import format_1_tree

EARLY_STOPPING = "callbacks/experiment.callbacks.early_stopping.EarlyStopping"
BEST_MODEL_RESTORE = "callbacks/experiment.callbacks.best_model_restore.BestModelRestore"
MODEL_CHECKPOINT = "callbacks/experiment.callbacks.checkpoint_savers.ModelCheckpoint"

#: Each callback's state as format 1 saved it.
OLD_EARLY_STOPPING = {"monitor": "val_loss", "mode": "min", "stopped_epoch": 0, "best": 0.5, "wait": 1}
OLD_SAVER = {"best_value": 0.3, "best_epoch": 2, "best_filename": "w2.pt", "pending_removal": None}


def _old_best_model_restore() -> dict:
    weights = {"weight": torch.ones(2, 3), "bias": torch.ones(2)}
    return {"monitor": "val_acc", "mode": "max", "best_value": 0.9, "best_epoch": 3, "best_weights": weights}


def _loads(callback, state) -> None:
    """``state`` fits ``callback`` (no problem found) and loads."""
    assert callback.state_problems(state) == []
    callback.load_state_dict(state)


def test_migrate_gives_a_format_1_tree_todays_layout():
    old = format_1_tree({"EarlyStopping": OLD_EARLY_STOPPING}, epochs_completed=3, steps_in_epoch=2)
    kept = copy.deepcopy(old)

    tree = migrate(old)

    assert (tree["format"], tree["serial"], tree["reason"]) == (TREE_FORMAT, 7, "step")
    assert tree["upgraded_from"] == 1
    assert tree["classes"] == {"model": "Linear", "optimizer": "SGD", "schedulers/0": "StepLR"}
    nodes = tree["nodes"]
    assert set(nodes) == {
        "model",
        "optimizer",
        "schedulers/0",
        "callbacks/EarlyStopping",
        "best",
        "progress",
        "rng",
        "train_metrics",
    }
    assert nodes["callbacks/EarlyStopping"] == OLD_EARLY_STOPPING  # without callbacks: as format 1 saved it
    progress = nodes["progress"]
    assert (progress["epochs_completed"], progress["steps_in_epoch"], progress["global_step"]) == (3, 2, 14)
    assert (nodes["rng"]["pass_step"], nodes["rng"]["pass_index"]) == (0, 3)
    assert nodes["train_metrics"] == {"samples": 0, "sums": None, "epoch_metrics": {}}
    assert old.keys() == kept.keys() and old["callbacks"] == kept["callbacks"]  # the input is unchanged


def test_migrate_gives_a_checkpoint_without_pass_index_the_index_of_its_pass():
    tree = migrate(format_1_tree(epochs_completed=3, steps_in_epoch=0))
    assert tree["nodes"]["rng"]["pass_index"] == 2  # at an epoch's end: the pass of that epoch
    del tree["upgraded_from"]
    assert migrate(tree) == tree  # today's format, pass index present: returned as it is


def test_migrate_refuses_a_tree_of_an_unreadable_format():
    with pytest.raises(CheckpointError, match=r"of format 1 or 2 \(received format 3\)"):
        migrate({"format": 3, "nodes": {}})
    with pytest.raises(CheckpointError, match=r"not a state checkpoint of format 1 or 2 \(received a list\)"):
        migrate([1, 2])


def test_migrate_moves_format_1_callback_states_to_the_keys_of_the_callbacks_given_now(tmp_path: Path):
    callbacks = [
        EarlyStopping(patience=5),
        CSVLogger(tmp_path / "log.csv"),
        EarlyStopping(monitor="val_acc", mode="max"),
        BestModelRestore(monitor="val_acc"),
    ]
    second = {**OLD_EARLY_STOPPING, "monitor": "val_acc", "mode": "max", "best": 0.8}
    csv_state = {"columns": ["epoch", "loss"], "size": 40, "rows": 3}
    old = format_1_tree(
        {
            "EarlyStopping": OLD_EARLY_STOPPING,
            "CSVLogger": csv_state,
            "EarlyStopping#2": second,
            "BestModelRestore": _old_best_model_restore(),
            "Gone": {"count": 1},
        }
    )

    tree = migrate(old, callbacks=keyed_callbacks(callbacks))

    nodes = tree["nodes"]
    assert "upgraded_from" not in tree
    assert nodes["callbacks/experiment.callbacks.csv_logger.CSVLogger"] == csv_state  # same shape then
    assert nodes[f"{EARLY_STOPPING}#2"]["best"]["value"] == 0.8
    assert nodes["callbacks/Gone"] == {"count": 1}  # no callback claims it: the state tree reports it
    old_keys = {"callbacks/EarlyStopping", "callbacks/EarlyStopping#2", "callbacks/BestModelRestore"}
    assert not old_keys & set(nodes)
    for key, callback in keyed_callbacks(callbacks).items():
        _loads(callback, nodes[f"callbacks/{key}"])


def test_migrate_gives_best_model_restore_todays_shape():
    restorer = BestModelRestore(monitor="val_acc", mode="max")
    old = _old_best_model_restore()

    state = migrate(format_1_tree({"BestModelRestore": old}), callbacks=keyed_callbacks([restorer]))["nodes"][
        BEST_MODEL_RESTORE
    ]

    assert state["best"] == {"monitor": "val_acc", "mode": "max", "epoch": 3, "value": 0.9}
    assert state["best_weights"] is old["best_weights"]
    _loads(restorer, state)
    assert (restorer.best_epoch, restorer.best_value) == (3, 0.9)


def test_migrate_gives_early_stopping_the_epoch_of_its_best_that_format_1_did_not_save():
    stopper = EarlyStopping(patience=3)
    old = format_1_tree({"EarlyStopping": OLD_EARLY_STOPPING}, epochs_completed=3, steps_in_epoch=1)

    state = migrate(old, callbacks=keyed_callbacks([stopper]))["nodes"][EARLY_STOPPING]

    # Epoch 3 was the last completed; one epoch without improvement since the best: epoch 2.
    assert state == {
        "best": {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.5},
        "wait": 1,
        "stopped_epoch": 0,
    }
    _loads(stopper, state)
    assert (stopper.best, stopper.wait) == (0.5, 1)


def test_migrate_leaves_the_epoch_of_an_early_stopping_without_best_unknown():
    old = format_1_tree({"EarlyStopping": {**OLD_EARLY_STOPPING, "best": None, "wait": 2}})
    state = migrate(old, callbacks=keyed_callbacks([EarlyStopping()]))["nodes"][EARLY_STOPPING]
    assert state["best"] == {"monitor": "val_loss", "mode": "min", "epoch": None, "value": None}


def test_migrate_gives_a_periodic_saver_the_monitor_and_mode_of_today(tmp_path: Path):
    saver = ModelCheckpoint(tmp_path / "w{epoch}.pt", monitor="val_acc", mode="max", save_best_only=True)
    scheduler_saver = LRSchedulerCheckpoint(StepLR(step_size=1), tmp_path / "sched.pt")
    old_scheduler_saver = {**OLD_SAVER, "best_value": None, "best_epoch": None, "lr_scheduler": {"step": 4}}
    callbacks = keyed_callbacks([saver, scheduler_saver])
    old = format_1_tree({"ModelCheckpoint": OLD_SAVER, "LRSchedulerCheckpoint": old_scheduler_saver})

    nodes = migrate(old, callbacks=callbacks)["nodes"]

    assert nodes[MODEL_CHECKPOINT] == {
        "best": {"monitor": "val_acc", "mode": "max", "epoch": 2, "value": 0.3},
        "best_filename": "w2.pt",
        "pending_removal": None,
    }
    state = nodes["callbacks/experiment.callbacks.checkpoint_savers.LRSchedulerCheckpoint"]
    assert state["best"] == {"monitor": "val_loss", "mode": "min", "epoch": None, "value": None}
    assert state["lr_scheduler"] == {"step": 4}
    _loads(saver, nodes[MODEL_CHECKPOINT])
    assert (saver.best_epoch, saver.best_value, saver.best_filename) == (2, 0.3, "w2.pt")


def test_migrate_gives_the_callbacks_a_delay_holds_their_shapes_of_today(tmp_path: Path):
    stopper, saver = EarlyStopping(patience=3), ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True)
    delay = DelayCallback([stopper, CSVLogger(tmp_path / "log.csv"), saver], epoch_delay=1)
    old_delay = {
        "epochs_counted": 3,
        "batches_counted": 12,
        "epoch_begun": False,
        "callbacks": [OLD_EARLY_STOPPING, {"columns": None, "size": 0, "rows": 0}, OLD_SAVER],
    }

    state = migrate(format_1_tree({"DelayCallback": old_delay}), callbacks=keyed_callbacks([delay]))["nodes"][
        "callbacks/experiment.callbacks.delay.DelayCallback"
    ]

    inner = state["callbacks"]
    assert inner[0]["best"] == {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.5}
    assert inner[1] == {"columns": None, "size": 0, "rows": 0}
    assert inner[2]["best"] == {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.3}
    _loads(delay, state)
    assert (stopper.best, saver.best_epoch) == (0.5, 2)


def test_migrate_twice_is_migrating_once():
    callbacks = keyed_callbacks([EarlyStopping(), BestModelRestore()])
    old = format_1_tree({"EarlyStopping": OLD_EARLY_STOPPING, "BestModelRestore": _old_best_model_restore()})

    read_first = migrate(old)  # what a reader of the directory sees, then the run
    once = migrate(read_first, callbacks=callbacks)

    assert migrate(once, callbacks=callbacks) == once
    assert once["nodes"].keys() == migrate(old, callbacks=callbacks)["nodes"].keys()
