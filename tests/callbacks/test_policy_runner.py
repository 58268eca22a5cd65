"""PolicyRunner: its saved state is checked against the policies given now before it is loaded."""

from __future__ import annotations

from typing import Any

import pytest

from experiment.callbacks.policy_runner import PolicyRunner
from experiment.errors import StateMismatchError
from experiment.schedules.value_policies import Constant, Policy


class Counter(Policy):
    """A stateful policy counting the epochs it saw start."""

    def __init__(self) -> None:
        self.started = 0

    def epoch_started(self, epoch: int) -> None:
        self.started += 1

    def state_dict(self) -> dict[str, Any]:
        return {"started": self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.started = state["started"]


class CheckedCounter(Counter):
    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return [] if state.get("started", -1) >= 0 else [f"Counter: received {state!r}"]


def test_policy_runner_state_round_trips_with_its_stateful_policies():
    runner = PolicyRunner({"lr": Constant(0.1), "counter": Counter()})
    runner.policies["counter"].started = 3
    fresh = PolicyRunner({"lr": Constant(0.1), "counter": Counter()})
    assert fresh.state_problems(runner.state_dict()) == []
    fresh.load_state_dict(runner.state_dict())
    assert fresh.policies["counter"].started == 3


def test_policy_runner_state_problems_reports_other_stateful_policies():
    saved = PolicyRunner({"counter": Counter()}).state_dict()
    fresh = PolicyRunner({"other": Counter()})
    (problem,) = fresh.state_problems(saved)
    assert "holds states of the policies ['counter']" in problem and "['other']" in problem
    with pytest.raises(StateMismatchError, match="holds states of the policies"):
        fresh.load_state_dict(saved)


def test_policy_runner_state_problems_asks_the_policies_that_check_their_state():
    runner = PolicyRunner({"counter": CheckedCounter()})
    state = {**runner.state_dict(), "policies": {"counter": {"started": -1}}}
    assert runner.state_problems(state) == ["Counter: received {'started': -1}"]
    assert runner.policies["counter"].started == 0


def test_policy_runner_state_problems_reports_missing_keys():
    (problem,) = PolicyRunner({}).state_problems({"started_epoch": 0})
    assert "PolicyRunner: the saved state lacks ['train_losses', 'stopped_by', 'policies']" in problem
