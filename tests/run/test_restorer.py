"""The restorer driven directly: real checkpoint files of a small state tree, no Experiment.

It chooses the newest checkpoint that loads (the previous one when the newest is damaged), checks
the world size, every node and what the caller adds before applying anything, and on a rank other
than 0 loads the checkpoint rank 0 chose and takes its own share of the per-rank nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiment.errors import StateMismatchError
from experiment.run.commits.restorer import Restorer
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.training.distributed import World


class Counter:
    """A node holding a count; a negative count does not fit."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return [f"count {state['count']} is negative"] if state["count"] < 0 else []

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


class SecondRank(World):
    """Rank 1 of two processes, to which rank 0 broadcasts its choice ``chosen``."""

    def __init__(self, chosen: Checkpoint) -> None:
        super().__init__(size=2, rank=1)
        self.chosen = chosen

    def on_main(self, action: Any) -> None:
        return None  # rank 0 chooses and checks

    def broadcast(self, value: Any) -> Any:
        return self.chosen


def _tree() -> tuple[StateTree, Counter, Counter]:
    counter, rng = Counter(), Counter()
    tree = StateTree()
    tree.add("counter", counter)
    tree.add("progress", Progress())
    tree.add("rng", rng)
    return tree, counter, rng


def _commit(run: RunDirectory, serial: int, count: int, *, world_size: int = 1, **header: Any) -> Path:
    """Write the checkpoint ``serial`` of a run whose counter is at ``count``."""
    progress = Progress()
    progress.global_step = serial
    rng: dict[str, Any] = {"count": serial}
    if world_size > 1:
        rng = {
            "world_size": world_size,
            "ranks": [{"count": 10 * serial + rank} for rank in range(world_size)],
        }
    state = {
        "format": 2,
        "serial": serial,
        "reason": "step",
        "world_size": world_size,
        "classes": {"counter": "Counter", "progress": "Progress", "rng": "Counter"},
        "nodes": {"counter": {"count": count}, "progress": progress.state_dict(), "rng": rng},
        **header,
    }
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(run.state_path(serial), state)
    return run.state_path(serial)


def test_restorer_loads_the_newest_checkpoint_and_says_which(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10)
    _commit(run, 2, count=20, run_id="abc")
    tree, counter, _ = _tree()
    restorer = Restorer(run, tree)

    restored = restorer.restore(epochs=3)

    assert restored is not None and counter.count == 20
    assert (restored.checkpoint.name, restored.serial, restored.run_id) == ("state-000002.pt", 2, "abc")
    assert restorer.restored_from() == {
        "checkpoint": "state-000002.pt",
        "checkpoint_time": run.state_path(2).stat().st_mtime,
    }


def test_restorer_finds_nothing_in_an_empty_directory(tmp_path):
    tree, counter, _ = _tree()
    restorer = Restorer(RunDirectory(tmp_path), tree)

    assert restorer.restore(epochs=3) is None and counter.count == 0
    assert restorer.restored_from() == {"checkpoint": None, "checkpoint_time": None}


def test_restorer_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10)
    newest = _commit(run, 2, count=20)
    newest.write_bytes(newest.read_bytes()[:100])  # cut short
    tree, counter, _ = _tree()

    with pytest.warns(
        UserWarning, match=r"Skipped unreadable checkpoint\(s\).*resuming from state-000001.pt"
    ):
        restored = Restorer(run, tree).restore(epochs=3)

    assert restored is not None and restored.serial == 1 and counter.count == 10


def test_restorer_refuses_a_checkpoint_of_another_world_size_and_applies_nothing(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10, world_size=2)
    tree, counter, _ = _tree()

    with pytest.raises(StateMismatchError, match=r"written with world size 2 .* this run has world size 1"):
        Restorer(run, tree).restore(epochs=3)
    assert counter.count == 0


def test_restorer_of_an_elastic_run_shares_out_a_checkpoint_of_another_world_size(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10, world_size=2)
    tree, counter, rng = _tree()
    asked = []

    def reshare(saved: dict[str, Any], rank: int) -> dict[str, Any]:
        asked.append((saved["world_size"], rank))
        ranks = saved["nodes"]["rng"]["ranks"]
        return {**saved, "nodes": {**saved["nodes"], "rng": {"count": sum(r["count"] for r in ranks)}}}

    restored = Restorer(run, tree, reshare=reshare).restore(epochs=3)

    assert restored is not None and (counter.count, rng.count) == (10, 10 + 11)
    assert set(asked) == {(2, 0)}


def test_restorer_of_an_elastic_run_takes_its_own_share_on_the_same_world_size(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10)
    tree, counter, rng = _tree()

    def reshare(saved: dict[str, Any], rank: int) -> dict[str, Any]:
        raise AssertionError("the same number of processes wrote it")

    assert Restorer(run, tree, reshare=reshare).restore(epochs=3) is not None
    assert (counter.count, rng.count) == (10, 1)


def test_restorer_lists_every_problem_of_the_nodes_and_of_the_caller_and_applies_nothing(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=-1, run_id="other")
    tree, counter, _ = _tree()

    def another_run(saved: dict[str, Any]) -> list[str]:
        return [f"the checkpoint belongs to run {saved['run_id']}"]

    with pytest.raises(
        StateMismatchError,
        match=r"does not fit .*\n  - count -1 is negative\n  - the checkpoint belongs to run other",
    ):
        Restorer(run, tree).restore(epochs=3, check=another_run)
    assert counter.count == 0


def test_restorer_on_another_rank_loads_the_checkpoint_rank_0_chose_and_takes_its_share(tmp_path):
    run = RunDirectory(tmp_path)
    _commit(run, 1, count=10, world_size=2)
    _commit(run, 2, count=20, world_size=2)  # newer, but rank 0 chose the first
    tree, counter, rng = _tree()
    # Rank 0 names the unit by its own path (another node may mount the run elsewhere).
    chosen = Checkpoint(1, Path("/mounted/elsewhere/checkpoints/state-000001.pt"))

    restored = Restorer(run, tree, world=SecondRank(chosen)).restore(epochs=3)

    assert restored is not None and restored.serial == 1 and restored.checkpoint.path == run.state_path(1)
    assert (counter.count, rng.count) == (10, 11)  # rank 1's own random state
