"""checked_load: a callback's load_state_dict checks the whole saved state, then loads it."""

from __future__ import annotations

from typing import Any

import pytest

from experiment.callbacks.best_model_restore import BestModelRestore
from experiment.callbacks.checkpoint_savers import ModelCheckpoint
from experiment.callbacks.csv_logger import CSVLogger
from experiment.callbacks.early_stopping import EarlyStopping
from experiment.callbacks.gradient_tracker import GradientTracker
from experiment.callbacks.saved_state import check_saved_state, checked_load, missing_state_keys
from experiment.errors import StateMismatchError


class Counter:
    """A node with two counters, loaded one after the other."""

    def __init__(self) -> None:
        self.epochs, self.batches = 0, 0

    def state_problems(self, state: Any) -> list[str]:
        return missing_state_keys("Counter", state, ("epochs", "batches"))

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take both counters."""
        self.epochs = int(state["epochs"])
        self.batches = int(state["batches"])


def test_checked_load_loads_a_fitting_state():
    counter = Counter()
    counter.load_state_dict({"epochs": 2, "batches": 7})
    assert (counter.epochs, counter.batches) == (2, 7)
    assert Counter.load_state_dict.__doc__ == "Take both counters."


def test_checked_load_refuses_a_state_lacking_a_key_and_changes_nothing():
    counter = Counter()
    with pytest.raises(
        StateMismatchError, match=r"^Counter: the saved state lacks \['batches'\] \(it holds \['epochs'\]\)$"
    ):
        counter.load_state_dict({"epochs": 2})
    assert (counter.epochs, counter.batches) == (0, 0)


def test_checked_load_refuses_a_state_that_is_not_a_dict():
    with pytest.raises(StateMismatchError, match=r"Counter: the saved state is a list; expected a dict"):
        Counter().load_state_dict([2, 7])  # type: ignore[arg-type]


def test_check_saved_state_joins_every_problem_after_the_source_file():
    class TwoProblems:
        def state_problems(self, state: Any) -> list[str]:
            return ["first", "second"]

    with pytest.raises(StateMismatchError, match=r"^sched\.pt: first; second$"):
        check_saved_state(TwoProblems(), {}, source="sched.pt")
    with pytest.raises(StateMismatchError, match=r"^first; second$"):
        check_saved_state(TwoProblems(), {})


class PrintingTracker(GradientTracker):
    def log_gradient_statistics(self, epoch_number: int, statistics: Any, logs: dict[str, Any]) -> None:
        pass


def _mlflow_logger(tmp_path):
    pytest.importorskip("mlflow.tracking")
    from experiment.callbacks.mlflow_logger import MLFlowLogger

    return MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


# Callbacks that once loaded a state without checking it (a KeyError, after loading some keys).
CALLBACKS = {
    "CSVLogger": (lambda tmp_path: CSVLogger(tmp_path / "log.csv"), "size"),
    "PrintingTracker": (lambda tmp_path: PrintingTracker(), "count"),
    "MLFlowLogger": (_mlflow_logger, "pending"),
    "BestModelRestore": (lambda tmp_path: BestModelRestore(), "best_weights"),
    "EarlyStopping": (lambda tmp_path: EarlyStopping(), "stopped_epoch"),
    "ModelCheckpoint": (lambda tmp_path: ModelCheckpoint(tmp_path / "w{epoch}.pt"), "pending_removal"),
}


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_callback_load_state_dict_refuses_a_state_lacking_a_key_and_changes_nothing(tmp_path, name):
    make, key = CALLBACKS[name]
    callback = make(tmp_path)
    before = callback.state_dict()
    saved = {k: v for k, v in before.items() if k != key}
    with pytest.raises(StateMismatchError, match=rf"{name}: the saved state lacks \['{key}'\] \(it holds \["):
        callback.load_state_dict(saved)
    assert callback.state_dict() == before


def test_csv_logger_load_state_dict_of_a_state_without_its_size_keeps_its_columns(tmp_path):
    written = CSVLogger(tmp_path / "log.csv")
    written.columns, written.rows = ["epoch", "loss"], 3
    saved = {k: v for k, v in written.state_dict().items() if k != "size"}
    resumed = CSVLogger(tmp_path / "log.csv")
    with pytest.raises(StateMismatchError, match=r"CSVLogger: the saved state lacks \['size'\]"):
        resumed.load_state_dict(saved)
    assert (resumed.columns, resumed.rows) == (None, 0)
