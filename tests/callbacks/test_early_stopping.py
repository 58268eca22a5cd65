"""EarlyStopping and its PatienceChecker: fake logs first, then real runs interrupted and resumed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from experiment.callbacks.early_stopping import EarlyStopping, PatienceChecker
from experiment.errors import ConfigurationError, MonitorError, StateMismatchError
from tests.support.format_1 import migrated_state
from tests.support.training import assert_same_training_state, train_run


def _updates(checker: PatienceChecker, values: list[float]) -> list[bool]:
    return [checker.update(value) for value in values]


def test_patience_checker_stops_after_patience_values_without_improvement():
    checker = PatienceChecker("min", patience=2)
    assert _updates(checker, [1.0, 0.5, 0.7, 0.4, 0.6, 0.45]) == [False] * 5 + [True]
    assert checker.best == 0.4 and checker.wait == 2


def test_patience_checker_zero_patience_stops_at_the_first_non_improvement():
    assert _updates(PatienceChecker("max", patience=0), [1.0, 2.0, 2.0]) == [False, False, True]


def test_patience_checker_small_changes_do_not_count_as_improvements():
    checker = PatienceChecker("max", min_delta=-0.1, patience=2)  # the sign of min_delta is ignored
    assert _updates(checker, [1.0, 1.05, 1.2]) == [False, False, False]
    assert checker.best == 1.2 and checker.wait == 0
    assert _updates(checker, [1.25, 1.29]) == [False, True]


def test_patience_checker_nan_is_never_an_improvement():
    checker = PatienceChecker("min", patience=1)
    assert _updates(checker, [math.nan, 1.0, math.nan]) == [True, False, True]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "lowest"}, "received 'lowest'; expected 'min' or 'max'"),
        ({"patience": -1}, r"patience: received -1; expected an integer >= 0"),
        ({"patience": 1.5}, r"patience: received 1.5"),
        ({"min_delta": "0.1"}, r"min_delta: received '0.1'; expected a number"),
    ],
)
def test_early_stopping_rejects_invalid_options(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        EarlyStopping(**kwargs)


def _stopper(**kwargs) -> EarlyStopping:
    stopper = EarlyStopping(**kwargs)
    stopper.set_trainer(SimpleNamespace(stop_training=False))  # type: ignore[arg-type]
    return stopper


def test_early_stopping_sets_stop_training_and_remembers_the_epoch():
    stopper = _stopper(monitor="val_acc", mode="max", patience=2)
    for epoch, value in enumerate([50.0, 60.0, 55.0], start=1):
        stopper.on_epoch_end(epoch, {"epoch": epoch, "val_acc": value})
    assert stopper.trainer.stop_training is False and stopper.wait == 1
    stopper.on_epoch_end(4, {"epoch": 4, "val_acc": 60.0})
    assert stopper.trainer.stop_training is True
    assert stopper.stopped_epoch == 4 and stopper.best == 60.0


def test_early_stopping_missing_monitor_lists_the_logged_keys():
    stopper = _stopper(monitor="val_acc")
    with pytest.raises(MonitorError, match=r"EarlyStopping monitor: received 'val_acc'.*\['loss'\]"):
        stopper.on_epoch_end(1, {"epoch": 1, "time": 0.1, "loss": 1.0})


def test_early_stopping_missing_monitor_in_training_is_caught_as_a_key_error(tmp_path):
    stopper = lambda: [EarlyStopping(monitor="val_precision", mode="max")]  # noqa: E731
    with pytest.raises(KeyError, match=r"received 'val_precision', which is not among the logged keys"):
        train_run(tmp_path / "run", epochs=2, callbacks=stopper)


def test_early_stopping_state_round_trips_as_plain_data(tmp_path):
    stopper = _stopper(patience=3)
    for epoch, value in enumerate([1.0, 0.8, 0.9], start=1):
        stopper.on_epoch_end(epoch, {"val_loss": value})
    torch.save(stopper.state_dict(), tmp_path / "state.pt")
    fresh = EarlyStopping(patience=3)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (fresh.best, fresh.wait, fresh.stopped_epoch) == (0.8, 1, 0)


def test_early_stopping_state_of_another_monitor_warns_and_starts_afresh():
    stopper = _stopper(patience=3)
    stopper.on_epoch_end(1, {"val_loss": 1.0})
    other = EarlyStopping(monitor="val_acc", mode="max")
    with pytest.warns(UserWarning, match="watched 'val_loss'.*starts afresh"):
        other.load_state_dict(stopper.state_dict())
    assert other.best is None and other.wait == 0


# val_loss falls at every epoch of this run, so in "max" mode epochs 2 and 3 do not improve and a
# patience of 2 stops the run at the end of epoch 3.
def _stopper_factory():
    return [EarlyStopping(monitor="val_loss", mode="max", patience=2)]


def test_early_stopping_resumed_inside_the_patience_window_stops_at_the_same_epoch(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=6, callbacks=_stopper_factory)
    assert len(expected.loop.history) == 3
    # step 15 is in epoch 3; the last commit before it is the end of epoch 2 (wait == 1)
    interrupted = train_run(
        resumed, epochs=6, callbacks=_stopper_factory, interrupt_at=15, checkpoint_every=4
    )
    assert interrupted.loop.global_step == 15 and not interrupted.loop.stop_training
    actual = train_run(resumed, epochs=6, callbacks=_stopper_factory, checkpoint_every=4)
    assert_same_training_state(expected, actual)
    assert actual.loop.stop_training and actual.loop.epochs_completed == 3
    assert actual.directory.read_metadata()["status"] == "stopped"


def test_early_stopping_stop_is_remembered_by_a_later_train_call(tmp_path):
    first = train_run(tmp_path, epochs=6, callbacks=_stopper_factory)
    stopper = EarlyStopping(monitor="val_loss", mode="max", patience=2)
    again = train_run(tmp_path, epochs=6, callbacks=lambda: [stopper])
    assert again.loop.epochs_completed == 3 and again.loop.global_step == first.loop.global_step
    assert stopper.stopped_epoch == 3 and stopper.wait == 2
    assert again.directory.read_metadata()["status"] == "stopped"
    assert len(again.logs) == 3


def test_early_stopping_resumed_with_the_same_monitor_keeps_best_and_wait():
    stopper = _stopper(patience=3)
    for epoch, value in enumerate([1.0, 0.8, 0.9], start=1):
        stopper.on_epoch_end(epoch, {"val_loss": value})
    state = stopper.state_dict()
    assert state["best"] == {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.8}
    fresh = _stopper(patience=3)
    assert fresh.state_problems(state) == []
    fresh.load_state_dict(state)
    fresh.on_epoch_end(4, {"val_loss": 0.85})
    assert (fresh.best, fresh.wait) == (0.8, 2)


def test_early_stopping_changed_monitor_forgets_a_stop_of_the_old_one():
    stopper = _stopper(patience=0)
    stopper.on_epoch_end(1, {"val_loss": 1.0})
    stopper.on_epoch_end(2, {"val_loss": 2.0})
    assert stopper.stopped_epoch == 2
    other = EarlyStopping(monitor="val_acc", mode="max")
    with pytest.warns(UserWarning, match="starts its own best"):
        other.load_state_dict(stopper.state_dict())
    assert other.stopped_epoch == 0 and other.best is None


def test_early_stopping_min_delta_applies_to_the_monitored_best():
    stopper = _stopper(patience=1, min_delta=0.1)
    stopper.on_epoch_end(1, {"val_loss": 1.0})
    stopper.on_epoch_end(2, {"val_loss": 0.95})
    assert stopper.best == 1.0 and stopper.trainer.stop_training is True


def test_early_stopping_state_problems_reports_missing_keys():
    (problem,) = EarlyStopping().state_problems({"best": None})
    assert "EarlyStopping: the saved state lacks ['wait', 'stopped_epoch']" in problem


def test_early_stopping_loads_a_migrated_format_1_state_with_the_epoch_of_its_best():
    old = {"monitor": "val_loss", "mode": "min", "best": 0.5, "wait": 1, "stopped_epoch": 0}
    stopper = _stopper(patience=3)
    state = migrated_state(stopper, old, epochs_completed=3)
    assert stopper.state_problems(state) == []
    stopper.load_state_dict(state)
    assert (stopper.best, stopper.wait) == (0.5, 1)
    assert stopper.checker.tracked.epoch == 2  # known at once, not only at the next epoch's end
    stopper.on_epoch_end(4, {"val_loss": 0.6})  # epoch 3 was the last seen: the best was epoch 2
    assert stopper.state_dict()["best"] == {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.5}


def test_early_stopping_refuses_a_format_1_state_that_was_not_migrated():
    old = {"monitor": "val_loss", "mode": "min", "best": 0.5, "wait": 1, "stopped_epoch": 0}
    stopper = _stopper(patience=3)
    with pytest.raises(
        StateMismatchError, match=r"EarlyStopping: the saved best is a float; expected a dict"
    ):
        stopper.load_state_dict(old)
    assert (stopper.best, stopper.wait) == (None, 0)
