"""The state comparison skips volatile values by their place in the tree, never by name alone."""

from __future__ import annotations

import pytest
import torch

from tests.support.state_checks import assert_same_tree, is_volatile


def _format2_tree(*, serial: int, seconds: float, weight: float = 1.0) -> dict:
    csv_key = "experiment.callbacks.csv_logger.CSVLogger"
    return {
        "format": 2,
        "serial": serial,
        "reason": "epoch",
        "classes": {"model": "Linear"},
        "nodes": {
            "model": {"weight": torch.tensor([weight])},
            "progress": {
                "epochs_completed": 2,
                "history": [{"epoch": 1, "time": seconds, "loss": 0.5}, {"epoch": 2, "time": seconds}],
                "epoch_time": seconds,
            },
            f"callbacks/{csv_key}": {"columns": ["epoch", "time"], "size": int(seconds * 100), "rows": 2},
            "train_metrics": {"time": 0.25},  # a metric named "time" is not a wall-clock time
        },
    }


def test_state_checks_volatile_paths_are_matched_by_place():
    assert is_volatile(("serial",))
    assert is_volatile(("nodes", "progress", "history", "3", "time"))
    assert is_volatile(("loop", "history", "0", "time"))
    assert is_volatile(("nodes", "callbacks", "x.DelayCallback", "callbacks", "y.CSVLogger#2", "size"))
    assert not is_volatile(("nodes", "progress", "serial"))
    assert not is_volatile(("nodes", "train_metrics", "time"))
    assert not is_volatile(("time",))


def test_state_checks_skip_times_and_commit_counts():
    assert_same_tree(_format2_tree(serial=3, seconds=0.25), _format2_tree(serial=9, seconds=0.75))


def test_state_checks_compare_a_key_named_time_outside_the_volatile_paths():
    a, b = _format2_tree(serial=3, seconds=0.25), _format2_tree(serial=3, seconds=0.25)
    b["nodes"]["train_metrics"]["time"] = 0.5
    with pytest.raises(AssertionError, match=r"\['train_metrics'\]\['time'\]: 0.25 != 0.5"):
        assert_same_tree(a, b)


def test_state_checks_compare_tensors_bit_for_bit():
    with pytest.raises(AssertionError, match=r"\['model'\]\['weight'\]: tensors differ"):
        assert_same_tree(
            _format2_tree(serial=1, seconds=1.0), _format2_tree(serial=1, seconds=1.0, weight=2.0)
        )
