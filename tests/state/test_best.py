"""MonitoredBest and the run's BestTracker: improvements, NaN, min_delta, and a changed monitor on resume."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from experiment.errors import ConfigurationError, MonitorError
from experiment.state.best import (
    MonitoredBest,
    check_mode,
    is_improvement,
    missing_monitor_message,
    monitor_changed,
    monitored_value,
)
from experiment.state.best_tracker import BestTracker


def test_monitored_best_records_improvements_in_min_mode():
    best = MonitoredBest("val_loss", "min")
    assert [best.update(v, e) for e, v in enumerate([0.5, 0.7, 0.4], start=1)] == [True, False, True]
    assert (best.epoch, best.value) == (3, 0.4)


def test_monitored_best_records_improvements_in_max_mode():
    best = MonitoredBest("val_acc", "max")
    assert [best.update(v, e) for e, v in enumerate([50.0, 40.0, 60.0], start=1)] == [True, False, True]
    assert (best.epoch, best.value) == (3, 60.0)


def test_monitored_best_nan_never_improves():
    best = MonitoredBest("val_loss", "min")
    assert best.update(math.nan, 1) is False and best.epoch is None
    assert best.update(1.0, 2) is True
    assert best.update(math.nan, 3) is False and (best.epoch, best.value) == (2, 1.0)


def test_monitored_best_min_delta_is_a_margin_whatever_its_sign():
    best = MonitoredBest("val_loss", "min", min_delta=-0.1)
    best.update(1.0, 1)
    assert best.update(0.95, 2) is False and best.value == 1.0
    assert best.update(0.85, 3) is True and best.epoch == 3


def test_monitored_best_improves_changes_nothing():
    best = MonitoredBest("val_loss", "min")
    assert best.improves(0.3) is True and best.value is None


def test_monitored_best_state_is_plain_data_and_round_trips(tmp_path):
    best = MonitoredBest("val_loss", "min")
    best.update(0.25, 4)
    torch.save(best.state_dict(), tmp_path / "best.pt")
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert state == {"monitor": "val_loss", "mode": "min", "epoch": 4, "value": 0.25}
    fresh = MonitoredBest("val_loss", "min")
    fresh.load_state_dict(state)
    assert (fresh.epoch, fresh.value) == (4, 0.25)


def test_monitored_best_same_monitor_keeps_the_best_and_compares_with_it():
    best = MonitoredBest("val_loss", "min")
    best.update(0.25, 4)
    fresh = MonitoredBest("val_loss", "min")
    fresh.load_state_dict(best.state_dict())
    assert fresh.update(0.3, 5) is False and fresh.epoch == 4


@pytest.mark.parametrize(("monitor", "mode"), [("val_acc", "min"), ("val_loss", "max")])
def test_monitored_best_changed_monitor_or_mode_warns_and_starts_fresh(monitor, mode):
    saved = MonitoredBest("val_loss", "min", owner="Saver")
    saved.update(0.25, 4)
    live = MonitoredBest(monitor, mode, owner="Saver")
    with pytest.warns(UserWarning, match=r"Saver: .*watched 'val_loss' \(min\).*starts its own best"):
        live.load_state_dict(saved.state_dict())
    assert (live.epoch, live.value) == (None, None)
    assert live.update(123.0, 5) is True  # never compared with the other metric's value


def test_monitored_best_state_problems_lists_missing_keys():
    assert MonitoredBest("val_loss", "min").state_problems({"epoch": 1}) != []
    assert MonitoredBest("val_loss", "min").state_problems(MonitoredBest("x", "max").state_dict()) == []


def test_monitored_best_rejects_invalid_options():
    with pytest.raises(ConfigurationError, match="mode: received 'best'; expected 'min' or 'max'"):
        MonitoredBest("val_loss", "best")
    with pytest.raises(ConfigurationError, match="min_delta: received '0.1'; expected a number"):
        MonitoredBest("val_loss", "min", min_delta="0.1")  # type: ignore[arg-type]


def test_monitor_changed_is_false_for_the_same_monitor_and_mode():
    assert monitor_changed("X", {"monitor": "loss", "mode": "min"}, "loss", "min") is False


def test_monitor_helpers_check_modes_read_values_and_explain_a_missing_monitor():
    assert check_mode("max") == "max"
    assert is_improvement(0.5, None, "min")
    assert monitored_value({"loss": 1}, "loss") == 1.0
    assert "not among the logged keys ['loss']" in missing_monitor_message("acc", ["loss", "epoch"], "m")
    with pytest.raises(MonitorError, match="monitor_metric: received 'acc'"):
        monitored_value({"loss": 1.0}, "acc")


def test_best_helpers_and_the_run_tracker_have_one_module_each():
    assert BestTracker.__module__ == "experiment.state.best_tracker"
    assert monitored_value.__module__ == "experiment.state.best"
    assert importlib.util.find_spec("experiment.state.monitor") is None  # no second name for them


def test_monitor_error_is_a_key_error_whose_message_reads_plainly():
    with pytest.raises(KeyError) as caught:  # what Poutyne and Keras users catch
        monitored_value({"loss": 1.0}, "val_acc")
    assert isinstance(caught.value, MonitorError) and isinstance(caught.value, ConfigurationError)
    message = str(caught.value)
    assert message.startswith("monitor_metric: received 'val_acc', which is not among the logged keys")
    assert message == caught.value.args[0]  # not quoted as KeyError's str() would


def test_best_tracker_reads_epoch_and_value_from_logs():
    tracker = BestTracker("val_loss", "min")
    assert tracker.update({"epoch": 1, "val_loss": 0.5}) is True
    assert tracker.update({"epoch": 2, "val_loss": math.nan}) is False
    assert (tracker.epoch, tracker.value, tracker.monitor, tracker.mode) == (1, 0.5, "val_loss", "min")
    assert tracker.state_dict() == {"monitor": "val_loss", "mode": "min", "epoch": 1, "value": 0.5}


def test_best_tracker_mode_error_names_monitor_mode():
    with pytest.raises(ConfigurationError, match="monitor_mode: received 'up'"):
        BestTracker("val_loss", "up")


def test_best_tracker_resumed_with_the_same_monitor_keeps_the_best():
    tracker = BestTracker("val_loss", "min")
    tracker.update({"epoch": 3, "val_loss": 0.2})
    fresh = BestTracker("val_loss", "min")
    fresh.load_state_dict(tracker.state_dict())
    assert (fresh.epoch, fresh.value) == (3, 0.2)


def test_best_tracker_resumed_with_another_monitor_warns_and_starts_fresh():
    tracker = BestTracker("val_loss", "min")
    tracker.update({"epoch": 3, "val_loss": 0.2})
    fresh = BestTracker("val_acc", "max")
    with pytest.warns(UserWarning, match=r"watched 'val_loss' \(min\); this one watches 'val_acc' \(max\)"):
        fresh.load_state_dict(tracker.state_dict())
    assert (fresh.epoch, fresh.value) == (None, None)
    assert fresh.update({"epoch": 4, "val_acc": 0.1}) is True


@pytest.mark.parametrize(("key", "value"), [("value", "0.3"), ("epoch", 2.5), ("value", True)])
def test_monitored_best_state_problems_reports_values_of_the_wrong_type(key, value):
    best = MonitoredBest("val_loss", "min")
    state = {**best.state_dict(), key: value}
    (problem,) = best.state_problems(state)
    assert problem.startswith(f"MonitoredBest: the saved best {key} is {value!r}")
    assert best.state_problems("x") == ["MonitoredBest: the saved best is a str; expected a dict"]
