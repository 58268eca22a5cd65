"""Callback and CallbackList: the one trainer guard, state keys, before_commit, the package's exports."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

import experiment
import experiment.callbacks as callbacks_package
from experiment.callbacks.base import Callback, CallbackList, state_key_of
from experiment.callbacks.early_stopping import EarlyStopping
from experiment.errors import ConfigurationError


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


def test_callbacks_package_exports_every_public_callback():
    for name in callbacks_package.__all__:
        assert getattr(callbacks_package, name) is not None
    assert callbacks_package.EarlyStopping is EarlyStopping
    assert experiment.ForwardingCallback is callbacks_package.ForwardingCallback
    assert experiment.DelayCallback is callbacks_package.DelayCallback


def test_callbacks_package_does_not_import_the_training_layer():
    probe = "import sys, experiment.callbacks; print(any(m.startswith('experiment.training') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
