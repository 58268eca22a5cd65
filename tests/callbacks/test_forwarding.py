"""ForwardingCallback: params, trainer, hooks, before_commit and inner states go to the inner callbacks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from experiment.callbacks.base import HOOKS, Callback
from experiment.callbacks.forwarding import ForwardingCallback


class Recorder(Callback):
    needs_batch_values = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.commits = 0

    def before_commit(self) -> None:
        self.commits += 1

    def state_dict(self) -> dict[str, Any]:
        return {"calls": list(self.calls)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = list(state["calls"])


def _record(hook: str):
    def method(self: Recorder, *args: Any) -> None:
        self.calls.append(hook)

    return method


class AllHooks(Recorder):
    pass


for _hook in HOOKS:  # a test double only: the library itself defines no methods this way
    setattr(AllHooks, _hook, _record(_hook))


class ReadsValues(Callback):
    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None: ...


class AddsLogs(Callback):
    adds_epoch_logs = True


def test_forwarding_callback_forwards_every_hook_in_order():
    inner = AllHooks()
    forwarding = ForwardingCallback([inner])
    for hook in HOOKS:
        args = (1,) if hook == "on_backward_end" else (1, {}) if "batch" in hook or "epoch" in hook else ({},)
        getattr(forwarding, hook)(*args)
    assert inner.calls == list(HOOKS)


def test_forwarding_callback_passes_params_and_trainer():
    inner = Recorder()
    forwarding = ForwardingCallback([inner])
    trainer = SimpleNamespace()
    forwarding.set_params({"epochs": 3})
    forwarding.set_trainer(trainer)  # type: ignore[arg-type]
    assert inner.params == {"epochs": 3} and inner.trainer is trainer and forwarding.trainer is trainer


def test_forwarding_callback_needs_batch_values_only_when_an_inner_callback_reads_them():
    assert ForwardingCallback([Recorder()]).needs_batch_values is False
    assert ForwardingCallback([Recorder(), ReadsValues()]).needs_batch_values is True


def test_forwarding_callback_adds_epoch_logs_when_an_inner_callback_does():
    assert ForwardingCallback([Recorder()]).adds_epoch_logs is False
    assert ForwardingCallback([AddsLogs()]).adds_epoch_logs is True


def test_forwarding_callback_before_commit_reaches_the_inner_callbacks():
    inner = Recorder()
    ForwardingCallback([inner, ReadsValues()]).before_commit()
    assert inner.commits == 1


def test_forwarding_callback_inner_states_round_trip_and_mismatches_are_problems():
    inner = AllHooks()
    inner.calls = ["on_train_begin"]
    forwarding = ForwardingCallback([inner, ReadsValues()])
    saved = forwarding.inner_states()
    assert saved == [{"calls": ["on_train_begin"]}, None]
    fresh = ForwardingCallback([AllHooks(), ReadsValues()])
    assert fresh.inner_state_problems(saved) == []
    fresh.load_inner_states(saved)
    assert fresh.callbacks.callbacks[0].calls == ["on_train_begin"]
    other = ForwardingCallback([ReadsValues(), AllHooks()])
    (problem,) = other.inner_state_problems(saved)
    assert "states for 2 inner callback(s)" in problem and "same order" in problem
