"""BestModelRestore: fake logs and a fake trainer first, then real runs interrupted and resumed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from experiment.callbacks.best_model_restore import BestModelRestore
from experiment.errors import ConfigurationError, MonitorError, StateMismatchError
from tests.support.format_1 import migrated_state
from tests.support.training import assert_same_training_state, train_run


def _restorer(**kwargs) -> BestModelRestore:
    restorer = BestModelRestore(**kwargs)
    torch.manual_seed(0)
    restorer.set_trainer(SimpleNamespace(network=nn.Linear(3, 2)))  # type: ignore[arg-type]
    return restorer


def _set_weights(network: nn.Module, value: float) -> None:
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(value)


def test_best_model_restore_loads_the_best_epoch_at_train_end():
    restorer = _restorer()
    network = restorer.trainer.network
    for epoch, (weight, loss) in enumerate([(1.0, 0.9), (2.0, 0.5), (3.0, 0.7)], start=1):
        _set_weights(network, weight)
        restorer.on_epoch_end(epoch, {"epoch": epoch, "val_loss": loss})
    assert restorer.best_epoch == 2 and restorer.best_value == 0.5
    assert torch.all(network.weight == 3.0)
    restorer.on_train_end({})
    assert torch.all(network.weight == 2.0) and torch.all(network.bias == 2.0)


def test_best_model_restore_keeps_a_copy_not_a_view():
    restorer = _restorer(monitor="val_acc", mode="max")
    network = restorer.trainer.network
    _set_weights(network, 1.0)
    restorer.on_epoch_end(1, {"val_acc": 10.0})
    _set_weights(network, 5.0)
    restorer.on_epoch_end(2, {"val_acc": 9.0})
    assert torch.all(restorer.best_weights["weight"] == 1.0)


def test_best_model_restore_without_an_epoch_changes_nothing():
    restorer = _restorer()
    before = restorer.trainer.network.weight.clone()
    with pytest.warns(UserWarning, match="nothing to restore"):
        restorer.on_train_end({})
    assert torch.equal(restorer.trainer.network.weight, before)


def test_best_model_restore_warns_when_no_epoch_gave_a_value():
    restorer = _restorer()
    restorer.on_epoch_end(1, {"epoch": 1, "val_loss": float("nan")})  # NaN never improves
    with pytest.warns(
        UserWarning, match=r"BestModelRestore\(monitor='val_loss'\): no epoch gave a best value"
    ):
        restorer.on_train_end({})
    assert restorer.best_epoch is None


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), np.int64(1)])
def test_best_model_restore_accepts_numpy_scalars_in_the_logs(tmp_path, value):
    restorer = _restorer()
    restorer.on_epoch_end(1, {"epoch": 1, "val_loss": value})
    assert restorer.best_epoch == 1 and restorer.best_value == float(value)
    assert type(restorer.best_value) is float
    torch.save(restorer.state_dict(), tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["best"]["value"] == float(value)


def test_best_model_restore_missing_monitor_lists_the_logged_keys():
    with pytest.raises(MonitorError, match=r"BestModelRestore monitor: received 'val_acc'.*\['loss'"):
        _restorer(monitor="val_acc").on_epoch_end(1, {"epoch": 1, "loss": 0.1, "lr": 0.1})


def test_best_model_restore_rejects_an_unknown_mode():
    with pytest.raises(ConfigurationError, match="received 'best'; expected 'min' or 'max'"):
        BestModelRestore(mode="best")


def test_best_model_restore_without_trainer_says_how_to_use_it():
    with pytest.raises(ConfigurationError, match=r"Experiment.train\(callbacks="):
        BestModelRestore().on_epoch_end(1, {"val_loss": 0.1})


def test_best_model_restore_state_round_trips_with_weights_only_load(tmp_path):
    restorer = _restorer()
    _set_weights(restorer.trainer.network, 4.0)
    restorer.on_epoch_end(1, {"val_loss": 0.3})
    torch.save(restorer.state_dict(), tmp_path / "state.pt")
    fresh = _restorer()
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert fresh.best_epoch == 1 and fresh.best_value == 0.3
    fresh.on_train_end({})
    assert torch.all(fresh.trainer.network.weight == 4.0)


def test_best_model_restore_state_of_another_monitor_warns_and_starts_afresh():
    restorer = _restorer()
    restorer.on_epoch_end(1, {"val_loss": 0.3})
    other = BestModelRestore(monitor="val_loss", mode="max")
    with pytest.warns(UserWarning, match="watched 'val_loss' \\(min\\).*searched afresh"):
        other.load_state_dict(restorer.state_dict())
    assert other.best_epoch is None and other.best_weights is None


# val_loss falls after the first epochs of this run, so in "max" mode the best epoch is an early one
# and the restored weights differ from the last ones.
def _factory():
    return [BestModelRestore(monitor="val_loss", mode="max")]


def test_best_model_restore_resumed_run_restores_the_same_weights(run_dirs):
    straight, resumed = run_dirs
    options = {"monitor_metric": "val_loss", "monitor_mode": "max"}
    expected = train_run(straight, epochs=4, callbacks=_factory, experiment_options=options)
    best_epoch = int(expected.logs["val_loss"].idxmax()) + 1
    assert best_epoch < 4
    best_file = torch.load(expected.directory.best_path(best_epoch), weights_only=True)
    for name, tensor in expected.network.state_dict().items():
        assert torch.equal(tensor, best_file[name]), name
    for step in (10, 20):  # mid-epoch 2, then mid-epoch 4
        train_run(
            resumed,
            epochs=4,
            callbacks=_factory,
            experiment_options=options,
            interrupt_at=step,
            checkpoint_every=5,
        )
    actual = train_run(resumed, epochs=4, callbacks=_factory, experiment_options=options, checkpoint_every=5)
    assert_same_training_state(expected, actual)
    last_weights = torch.load(actual.directory.state_paths()[0], weights_only=True)["nodes"]["model"]
    assert not torch.equal(actual.network.state_dict()["0.weight"], last_weights["0.weight"])


def test_best_model_restore_state_problems_reports_a_best_that_is_not_a_dict():
    (problem,) = BestModelRestore().state_problems({"best": 0.3, "best_weights": None})
    assert problem == "BestModelRestore: the saved best is a float; expected a dict"


def test_best_model_restore_same_monitor_keeps_the_best_and_compares_with_it():
    restorer = _restorer()
    restorer.on_epoch_end(1, {"val_loss": 0.3})
    fresh = _restorer()
    fresh.load_state_dict(restorer.state_dict())
    _set_weights(fresh.trainer.network, 9.0)
    fresh.on_epoch_end(2, {"val_loss": 0.4})
    assert fresh.best_epoch == 1 and not torch.all(fresh.best_weights["weight"] == 9.0)


def test_best_model_restore_loads_a_migrated_format_1_state():
    weights = {"weight": torch.ones(2, 3), "bias": torch.ones(2)}
    old = {"monitor": "val_loss", "mode": "min", "best_value": 0.3, "best_epoch": 2, "best_weights": weights}
    restorer = _restorer()
    state = migrated_state(restorer, old)
    assert restorer.state_problems(state) == []
    restorer.load_state_dict(state)
    assert (restorer.best_epoch, restorer.best_value) == (2, 0.3) and restorer.best_weights is weights


def test_best_model_restore_refuses_a_format_1_state_that_was_not_migrated():
    old = {"monitor": "val_loss", "mode": "min", "best_value": 0.3, "best_epoch": 2, "best_weights": None}
    restorer = _restorer()
    with pytest.raises(StateMismatchError, match=r"BestModelRestore: the saved state lacks \['best'\]"):
        restorer.load_state_dict(old)
    assert restorer.best_epoch is None
