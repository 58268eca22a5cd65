"""DelayCallback: the hook sequence of a fake training, then real runs interrupted and resumed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from experiment.callbacks.base import Callback
from experiment.callbacks.delay import DelayCallback
from experiment.errors import ConfigurationError, StateMismatchError
from tests.support.training import train_run


class Recorder(Callback):
    """Records every hook it receives; its record is its state."""

    needs_batch_values = False

    def __init__(self) -> None:
        super().__init__()
        self.events: list[list[Any]] = []

    def _add(self, *event: Any) -> None:
        step = self.trainer.global_step if self.has_trainer else None
        self.events.append([*event, step])

    def on_train_begin(self, logs):
        self._add("train_begin")

    def on_train_end(self, logs):
        self._add("train_end")

    def on_epoch_begin(self, epoch_number, logs):
        self._add("epoch_begin", epoch_number)

    def on_epoch_end(self, epoch_number, logs):
        self._add("epoch_end", epoch_number)

    def on_train_batch_begin(self, batch_number, logs):
        self._add("batch_begin", batch_number)

    def on_train_batch_end(self, batch_number, logs):
        self._add("batch_end", batch_number)

    def on_backward_end(self, batch_number):
        self._add("backward_end", batch_number)

    def on_valid_begin(self, logs):
        self._add("valid_begin")

    def on_valid_end(self, logs):
        self._add("valid_end")

    def on_test_begin(self, logs):
        self._add("test_begin")

    def state_dict(self) -> dict[str, Any]:
        return {"events": [list(event) for event in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = [list(event) for event in state["events"]]


class ReadsValues(Callback):
    def on_train_batch_end(self, batch_number, logs): ...


def _simulate(callback: Callback, epochs: int, batches: int) -> None:
    """Call the hooks in the loop's order, without training."""
    callback.on_train_begin({})
    for epoch in range(1, epochs + 1):
        callback.on_epoch_begin(epoch, {})
        for batch in range(1, batches + 1):
            callback.on_train_batch_begin(batch, {})
            callback.on_backward_end(batch)
            callback.on_train_batch_end(batch, {"batch": batch, "loss": 0.5})
        callback.on_valid_begin({})
        callback.on_valid_end({})
        callback.on_epoch_end(epoch, {"epoch": epoch})
    callback.on_train_end({})


def _names(recorder: Recorder) -> list[tuple[Any, ...]]:
    return [tuple(event[:-1]) for event in recorder.events]


def _epoch_events(epoch: int, batches: range) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    for batch in batches:
        events += [("batch_begin", batch), ("backward_end", batch), ("batch_end", batch)]
    return events + [("valid_begin",), ("valid_end",), ("epoch_end", epoch)]


def test_delay_callback_epoch_delay_skips_whole_epochs():
    recorder = Recorder()
    _simulate(DelayCallback(recorder, epoch_delay=2), epochs=3, batches=2)
    expected = [("train_begin",), ("epoch_begin", 3), *_epoch_events(3, range(1, 3)), ("train_end",)]
    assert _names(recorder) == expected


def test_delay_callback_batch_delay_expiring_mid_epoch_begins_the_epoch_first():
    recorder = Recorder()
    _simulate(DelayCallback([recorder], batch_delay=3), epochs=2, batches=2)
    expected = [("train_begin",), ("epoch_begin", 2), *_epoch_events(2, range(2, 3)), ("train_end",)]
    assert _names(recorder) == expected


def test_delay_callback_batch_delay_expiring_at_an_epoch_end_begins_the_next_epoch_once():
    recorder = Recorder()
    _simulate(DelayCallback(recorder, batch_delay=2), epochs=2, batches=2)
    expected = [("train_begin",), ("epoch_begin", 2), *_epoch_events(2, range(1, 3)), ("train_end",)]
    assert _names(recorder) == expected


def test_delay_callback_the_larger_delay_wins():
    by_epochs, by_batches = Recorder(), Recorder()
    _simulate(DelayCallback(by_epochs, epoch_delay=2, batch_delay=1), epochs=3, batches=2)
    _simulate(DelayCallback(by_batches, epoch_delay=1, batch_delay=5), epochs=3, batches=2)
    assert _names(by_epochs)[1] == ("epoch_begin", 3) and _names(by_epochs)[2] == ("batch_begin", 1)
    assert _names(by_batches)[1] == ("epoch_begin", 3) and _names(by_batches)[2] == ("batch_begin", 2)


def test_delay_callback_without_delay_forwards_everything():
    direct, delayed = Recorder(), Recorder()
    _simulate(direct, epochs=2, batches=2)
    _simulate(DelayCallback(delayed), epochs=2, batches=2)
    assert direct.events == delayed.events


def test_delay_callback_test_hooks_are_not_delayed():
    recorder = Recorder()
    DelayCallback(recorder, epoch_delay=10).on_test_begin({})
    assert _names(recorder) == [("test_begin",)]


def test_delay_callback_needs_batch_values_only_when_a_delayed_callback_does():
    assert DelayCallback(Recorder()).needs_batch_values is False
    assert DelayCallback([Recorder(), ReadsValues()]).needs_batch_values is True


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epoch_delay": -1}, "epoch_delay: received -1"), ({"batch_delay": 2.5}, "batch_delay: received 2.5")],
)
def test_delay_callback_rejects_invalid_delays(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        DelayCallback(Recorder(), **kwargs)


def test_delay_callback_state_holds_counters_and_delayed_states(tmp_path):
    delayed = DelayCallback([Recorder(), ReadsValues()], batch_delay=3)
    _simulate(delayed, epochs=2, batches=2)
    torch.save(delayed.state_dict(), tmp_path / "state.pt")
    fresh = DelayCallback([Recorder(), ReadsValues()], batch_delay=3)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (fresh.epochs_counted, fresh.batches_counted) == (2, 4)
    assert fresh.callbacks.callbacks[0].events == delayed.callbacks.callbacks[0].events


def test_delay_callback_state_for_other_callbacks_is_refused():
    state = DelayCallback([Recorder(), ReadsValues()]).state_dict()
    fresh = DelayCallback([ReadsValues(), Recorder()])
    with pytest.raises(StateMismatchError, match=r"states for 2 delayed callback\(s\).*same order"):
        fresh.load_state_dict(state)
    assert fresh.callbacks.callbacks[1].events == []


def test_delay_callback_resumed_run_wakes_at_the_same_step(run_dirs):
    straight, resumed = run_dirs
    delays: dict[str, DelayCallback] = {}

    def factory(name: str):
        def build() -> list[Callback]:
            delays[name] = DelayCallback(Recorder(), epoch_delay=1, batch_delay=9)
            return [delays[name]]

        return build

    train_run(straight, epochs=3, callbacks=factory("straight"))
    for step in (8, 11):  # before the delay expires (step 10, mid-epoch 2), then after it
        train_run(resumed, epochs=3, callbacks=factory("resumed"), interrupt_at=step, checkpoint_every=3)
    train_run(resumed, epochs=3, callbacks=factory("resumed"), checkpoint_every=3)
    expected = delays["straight"].callbacks.callbacks[0].events
    assert expected[1] == ["epoch_begin", 2, 9] and expected[2] == ["batch_begin", 4, 9]
    actual = [e for e in delays["resumed"].callbacks.callbacks[0].events if e[0] != "train_begin"]
    assert actual == [e for e in expected if e[0] != "train_begin"]
    assert delays["resumed"].state_dict()["batches_counted"] == 18


def test_delay_callback_state_problems_reports_other_callbacks_without_changing_anything():
    state = DelayCallback([Recorder(), ReadsValues()]).state_dict()
    fresh = DelayCallback([ReadsValues(), Recorder()])
    (problem,) = fresh.state_problems(state)
    assert "states for 2 delayed callback(s)" in problem and "same order" in problem
    assert fresh.callbacks.callbacks[1].events == [] and fresh.epochs_counted == 0


def test_delay_callback_state_problems_reports_missing_keys():
    (problem,) = DelayCallback(Recorder()).state_problems({"epochs_counted": 1})
    assert "DelayCallback: the saved state lacks ['batches_counted'" in problem


def test_delay_callback_a_state_without_problems_loads():
    delayed = DelayCallback(Recorder(), epoch_delay=1)
    _simulate(delayed, epochs=2, batches=1)
    fresh = DelayCallback(Recorder(), epoch_delay=1)
    assert fresh.state_problems(delayed.state_dict()) == []
    fresh.load_state_dict(delayed.state_dict())
    assert fresh.epochs_counted == 2


def test_delay_callback_forwards_before_commit_to_delayed_callbacks(tmp_path):
    from experiment.callbacks.csv_logger import CSVLogger

    logger = CSVLogger(tmp_path / "log.csv")
    flushed = []
    logger.flush = lambda: flushed.append(True)  # type: ignore[method-assign]
    DelayCallback(logger, epoch_delay=1).before_commit()
    assert flushed == [True]
