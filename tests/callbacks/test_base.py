"""Callback and CallbackList: the one trainer guard, state keys, before_commit, the package's exports."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

import experiment
import experiment.callbacks as callbacks_package
from experiment.callbacks import base
from experiment.callbacks.base import Callback, state_key_of
from experiment.callbacks.callback_list import CallbackList
from experiment.callbacks.delay import DelayCallback
from experiment.callbacks.early_stopping import EarlyStopping
from experiment.callbacks.forwarding import ForwardingCallback
from experiment.errors import ConfigurationError
from tests.support.training import train_run


class Probe(Callback):
    needs_batch_values = False

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def before_commit(self) -> None:
        self.commits += 1

    def state_dict(self) -> dict[str, Any]:
        return {"commits": self.commits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.commits = state["commits"]


def test_callback_trainer_without_a_loop_raises_one_error_saying_how_to_use_it():
    with pytest.raises(
        ConfigurationError, match=r"Probe has no trainer: pass it to Experiment.train\(callbacks="
    ):
        _ = Probe().trainer
    with pytest.raises(ConfigurationError, match=r"Probe received no trainer.*set_trainer"):
        _ = Probe().model


def test_callback_has_trainer_and_model_alias_follow_set_trainer():
    probe = Probe()
    assert probe.has_trainer is False
    trainer = SimpleNamespace(stop_training=False)
    probe.set_trainer(trainer)  # type: ignore[arg-type]
    assert probe.has_trainer and probe.trainer is trainer and probe.model is trainer


def test_callback_subclass_without_init_still_reports_no_trainer():
    class Bare(Callback):
        def __init__(self) -> None:  # skips Callback.__init__
            pass

    assert Bare().has_trainer is False
    with pytest.raises(ConfigurationError, match="Bare has no trainer"):
        _ = Bare().trainer


def test_callback_state_key_defaults_to_the_qualified_class_name():
    assert EarlyStopping().state_key == "experiment.callbacks.early_stopping.EarlyStopping"
    assert Probe().state_key == f"{__name__}.Probe"


def test_callback_state_key_can_be_set_on_an_instance_or_the_class():
    probe = Probe()
    probe.state_key = "warmup-probe"
    assert probe.state_key == "warmup-probe" and Probe().state_key == f"{__name__}.Probe"

    class Keyed(Probe):
        state_key = "keyed"

    assert Keyed().state_key == "keyed" and state_key_of(Keyed()) == "keyed"


@pytest.mark.parametrize("key", ["", "a/b", "a#2", 3])
def test_callback_state_key_rejects_names_the_tree_cannot_hold(key):
    with pytest.raises(ConfigurationError, match="state_key: received"):
        Probe().state_key = key


def test_state_key_of_an_object_that_is_not_a_callback_is_its_qualified_class_name():
    assert state_key_of(SimpleNamespace()) == "types.SimpleNamespace"


def test_callback_list_before_commit_calls_the_callbacks_that_have_one():
    probe = Probe()
    CallbackList([probe, EarlyStopping()]).before_commit()
    assert probe.commits == 1


def test_callback_list_setup_gives_params_and_trainer():
    probe, trainer = Probe(), SimpleNamespace()
    CallbackList([probe]).setup({"epochs": 2}, trainer)  # type: ignore[arg-type]
    assert probe.params == {"epochs": 2} and probe.trainer is trainer


class Recorder(Callback):
    """Records the hooks it receives, with the trainer it had then."""

    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.name, self.events = name, events

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.events.append((self.name, f"train_begin {self.params['epochs']} epochs"))

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if batch_number == 1:
            self.events.append((self.name, f"batch 1 of epoch {self.trainer.epochs_completed + 1}"))

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.events.append((self.name, f"epoch_end {epoch_number}"))


def test_callback_list_iterates_and_has_a_length():
    first, second = Probe(), EarlyStopping()
    callbacks = CallbackList([first, second])
    assert list(callbacks) == [first, second] and len(callbacks) == 2
    assert [type(cb).__name__ for cb in callbacks] == ["Probe", "EarlyStopping"]
    assert len(CallbackList([])) == 0


def test_callback_list_append_indexes_the_hooks_of_the_new_callback():
    events: list[tuple[str, str]] = []
    callbacks = CallbackList([Probe()])
    assert callbacks.listeners("on_epoch_end") == [] and callbacks.needs_batch_values is False
    callbacks.append(Recorder("late", events))
    assert len(callbacks) == 2 and callbacks.needs_batch_values is True
    callbacks.call("on_epoch_end", 1, {})
    assert events == [("late", "epoch_end 1")]


def test_callback_list_append_after_setup_gives_the_same_params_and_trainer():
    trainer = SimpleNamespace(epochs_completed=0)
    callbacks = CallbackList([Probe()])
    callbacks.setup({"epochs": 3}, trainer)  # type: ignore[arg-type]
    late = Recorder("late", [])
    callbacks.append(late)
    assert late.params == {"epochs": 3} and late.trainer is trainer


def test_callback_list_append_while_training_runs_raises(tmp_path):
    class AppendsWhileRunning(ForwardingCallback):
        def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
            self.callbacks.append(Probe())

    with pytest.raises(
        ConfigurationError, match=r"CallbackList.append: received Probe while training or testing runs"
    ):
        train_run(tmp_path / "run", epochs=1, callbacks=lambda: [AppendsWhileRunning([Probe()])])


def test_callback_list_appended_before_training_runs_with_the_trainer_in_real_training(tmp_path):
    events: list[tuple[str, str]] = []
    delayed = DelayCallback(Recorder("first", events), epoch_delay=1)
    delayed.callbacks.append(Recorder("appended", events))  # as a Poutyne user does
    train_run(tmp_path / "run", epochs=2, callbacks=lambda: [delayed])
    assert events == [
        ("first", "train_begin 2 epochs"),
        ("appended", "train_begin 2 epochs"),
        ("first", "batch 1 of epoch 2"),
        ("appended", "batch 1 of epoch 2"),
        ("first", "epoch_end 2"),
        ("appended", "epoch_end 2"),
    ]


def test_callback_list_takes_callbacks_again_once_training_ended():
    callbacks = CallbackList([Probe()])
    callbacks.call("on_train_begin", {})
    with pytest.raises(ConfigurationError, match="while training or testing runs"):
        callbacks.append(Probe())
    callbacks.call("on_train_end", {})
    callbacks.append(Probe())
    assert len(callbacks) == 2


def test_callbacks_package_exports_every_public_callback():
    for name in callbacks_package.__all__:
        assert getattr(callbacks_package, name) is not None
    assert callbacks_package.EarlyStopping is EarlyStopping
    assert experiment.ForwardingCallback is callbacks_package.ForwardingCallback
    assert experiment.DelayCallback is callbacks_package.DelayCallback


def test_callback_list_has_a_module_of_its_own_and_is_exported_by_the_package():
    assert CallbackList.__module__ == "experiment.callbacks.callback_list"
    assert callbacks_package.CallbackList is CallbackList
    assert not hasattr(base, "CallbackList")  # one name for one class


def test_callbacks_package_does_not_import_the_training_layer():
    probe = "import sys, experiment.callbacks; print(any(m.startswith('experiment.training') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
