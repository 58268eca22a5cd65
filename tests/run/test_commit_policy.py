"""The commit policy driven directly with small fakes: when it commits, and what each commit holds.

A fake backend records the commits it is handed (running the policy's ``before`` first, as a
writing rank does), a fake recorder the epoch rows; no Experiment, no file.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from experiment.errors import NonFiniteStateError
from experiment.run.commits.commit import Commit, own_share
from experiment.run.commits.policy import CommitPolicy
from experiment.state.best_tracker import BestTracker
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.training.distributed import World


class Counter:
    """A node holding a count; ``before_commit`` adds one (a buffer flushed just before a commit)."""

    def __init__(self, count: int = 0, *, flushes: bool = False) -> None:
        self.count, self.flushes = count, flushes

    def before_commit(self) -> None:
        if self.flushes:
            self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


class FakeBackend:
    """Records each commit in ``events`` after running the policy's ``before``."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.commits: list[Commit] = []

    def write(self, commit: Commit, before: Any) -> None:
        before()
        self.events.append(f"write {commit.serial} ({commit.reason})")
        self.commits.append(commit)


class FakeRecorder:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def record(self, logs: dict[str, Any]) -> None:
        self.events.append(f"record epoch {logs['epoch']}")


class TwoRanks(World):
    """Rank 0 of two processes whose gather hands back rank 1's per-rank states as rank 0's plus 100."""

    def __init__(self) -> None:
        super().__init__(size=2, rank=0)

    def gather(self, value: Any) -> list[Any]:
        return [value, {name: {"count": state["count"] + 100} for name, state in value.items()}]


def _policy(
    events: list[str], *, world: World | None = None, run_id: Any = None, **options: Any
) -> tuple[CommitPolicy, FakeBackend, Progress]:
    progress = Progress()
    best = BestTracker("loss", "min")
    tree = StateTree()
    tree.add("counter", Counter(flushes=True))
    tree.add("best", best)
    tree.add("progress", progress)
    tree.add("rng", Counter(7))
    tree.add("train_metrics", Counter(8))
    backend = FakeBackend(events)
    policy = CommitPolicy(
        tree,
        backend,
        progress=progress,
        best=best,
        recorder=FakeRecorder(events),  # type: ignore[arg-type]
        world=world or World(),
        run_id=run_id,
        **options,
    )
    return policy, backend, progress


def test_commit_policy_step_checkpoints_are_due_every_checkpoint_every_optimizer_steps():
    every_three, _, _ = _policy([], checkpoint_every=3)
    never, _, _ = _policy([])

    assert [step for step in range(1, 10) if every_three.due(step)] == [3, 6, 9]
    assert not any(never.due(step) for step in range(1, 10))


def test_commit_policy_epoch_end_records_its_row_before_the_state_and_tracks_the_best():
    events: list[str] = []
    policy, backend, progress = _policy(events, checkpoint_every=2)

    progress.epoch_done({"epoch": 1, "loss": 0.5})
    policy.commit("epoch")
    progress.global_step = 2
    policy.commit("step")
    progress.epoch_done({"epoch": 2, "loss": 0.7})  # worse: epoch 1 stays the best
    policy.commit("epoch")

    assert events == [
        "record epoch 1",
        "write 1 (epoch)",
        "write 2 (step)",
        "record epoch 2",
        "write 3 (epoch)",
    ]
    first, step, second = backend.commits
    assert (first.best_epoch, first.best_weights) == (1, 1)  # a new best: its weights are written
    assert (step.best_epoch, step.best_weights) == (1, None)
    assert (second.best_epoch, second.best_weights) == (1, None)
    assert second.state["nodes"]["best"]["epoch"] == 1


def test_commit_policy_commit_holds_the_whole_tree_after_before_commit_and_the_run_id_of_its_time():
    run_ids = iter(["first", "second"])
    policy, backend, _ = _policy([], run_id=lambda: next(run_ids))

    policy.commit("interrupt")
    policy.commit("interrupt")

    first, second = (commit.state for commit in backend.commits)
    assert {key: first[key] for key in ("format", "serial", "reason", "run_id", "world_size")} == {
        "format": 2,
        "serial": 1,
        "reason": "interrupt",
        "run_id": "first",
        "world_size": 1,
    }
    assert first["classes"]["counter"] == "Counter" and set(first["nodes"]) == {
        "counter",
        "best",
        "progress",
        "rng",
        "train_metrics",
    }
    assert (first["nodes"]["counter"], second["nodes"]["counter"]) == ({"count": 1}, {"count": 2})
    assert (second["serial"], second["run_id"]) == (2, "second")


def test_commit_policy_resumed_at_numbers_the_next_commit_after_the_restored_one():
    policy, backend, _ = _policy([])

    policy.resumed_at(41)
    policy.commit("step")

    assert backend.commits[0].serial == 42 and backend.commits[0].state["serial"] == 42


def test_commit_policy_checks_finiteness_unless_training_is_stopping():
    policy, backend, progress = _policy([])
    progress.global_step = 12

    policy.commit("step")
    progress.stop_training = True  # a callback (TerminateOnNaN) stops: the state is written as it is
    policy.commit("step")

    checked, unchecked = backend.commits
    assert checked.non_finite_message is not None and unchecked.non_finite_message is None
    assert checked.non_finite_message.startswith("The {culprit} holds NaN or infinity at global step 12 ")


def test_commit_policy_hands_this_ranks_state_which_gathered_holds_every_ranks_per_rank_nodes():
    policy, backend, _ = _policy([], world=TwoRanks())

    policy.commit("step")

    assert backend.commits[0].state["nodes"]["rng"] == {"count": 7}  # this rank's: not yet gathered
    state = backend.commits[0].gathered(TwoRanks()).state
    assert state["world_size"] == 2 and state["nodes"]["counter"] == {"count": 1}
    assert state["nodes"]["rng"] == {"world_size": 2, "ranks": [{"count": 7}, {"count": 107}]}
    assert own_share(state, 1)["nodes"]["train_metrics"] == {"count": 108}
    assert own_share(state, 0)["nodes"]["rng"] == {"count": 7}


def test_commit_refuses_a_non_finite_state_naming_the_node_and_the_last_checkpoint():
    state = {"serial": 3, "reason": "step", "nodes": {"model": {"w": torch.tensor([1.0, float("nan")])}}}
    asked: list[str] = []

    def last() -> str:
        asked.append("last")
        return "state-000002.pt"

    Commit(state).refuse_non_finite(last)  # no message: not checked
    finite = Commit(
        {**state, "nodes": {"model": {"w": torch.ones(2)}}}, non_finite_message="{culprit} {last}"
    )
    finite.refuse_non_finite(last)
    assert asked == []  # the newest checkpoint is looked up only for the error
    with pytest.raises(NonFiniteStateError, match=r"^network 'w' state-000002.pt$"):
        Commit(state, non_finite_message="{culprit} {last}").refuse_non_finite(last)
    with pytest.raises(NonFiniteStateError, match="none yet"):
        Commit(state, non_finite_message="{last}").refuse_non_finite(lambda: None)
