"""The two file backends driven directly with hand-made commits, and the committer that joins a
backend to the policy and the restorer; real files, no Experiment.

Both backends leave the same files: the two newest states and the best weights they refer to. The
synchronous one reports each commit durable at once; the background one at the next wait, which
also raises its write's error.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from experiment.errors import CheckpointError, NonFiniteStateError
from experiment.run.commits import Committer, one_file_backend
from experiment.run.commits.background_backend import BackgroundFileBackend
from experiment.run.commits.commit import Commit
from experiment.run.commits.file_backend import FileBackend
from experiment.state.best_tracker import BestTracker
from experiment.state.progress import Progress
from experiment.state.tree import StateTree
from experiment.store.checkpoint_unit import Checkpoint
from experiment.store.directory import RunDirectory

BACKENDS = pytest.mark.parametrize("backend_class", [FileBackend, BackgroundFileBackend])


def _commit(
    serial: int, best_epoch: int | None, best_weights: int | None = None, value: float = 1.0
) -> Commit:
    state = {
        "format": 2,
        "serial": serial,
        "reason": "epoch",
        "nodes": {"model": {"w": torch.full((2,), value)}},
    }
    return Commit(
        state, best_epoch=best_epoch, best_weights=best_weights, non_finite_message="{culprit} {last}"
    )


def _names(run: RunDirectory) -> list[str]:
    """The committed files (a commit in progress may have a temporary file beside them)."""
    return sorted(path.name for path in run.checkpoints_dir.iterdir() if not path.name.startswith("."))


def _nothing() -> None:
    pass


@BACKENDS
def test_file_backend_keeps_two_states_and_the_best_weights_they_refer_to(tmp_path, backend_class):
    run = RunDirectory(tmp_path)
    run.prepare()
    durable: list[int] = []
    backend = backend_class(run, on_durable=durable.append)

    backend.write(_commit(1, best_epoch=1, best_weights=1, value=1.0), _nothing)
    backend.write(_commit(2, best_epoch=2, best_weights=2, value=2.0), _nothing)
    backend.write(_commit(3, best_epoch=2, value=3.0), _nothing)
    backend.write(_commit(4, best_epoch=4, best_weights=4, value=4.0), _nothing)
    backend.wait()

    assert durable == [1, 2, 3, 4]
    assert _names(run) == ["best-epoch0002.pt", "best-epoch0004.pt", "state-000003.pt", "state-000004.pt"]
    assert torch.equal(torch.load(run.best_path(2), weights_only=True)["w"], torch.full((2,), 2.0))
    assert torch.load(run.state_path(4), weights_only=True)["serial"] == 4


@BACKENDS
def test_file_backend_runs_before_once_the_previous_write_is_durable_and_before_this_one(
    tmp_path, backend_class
):
    run = RunDirectory(tmp_path)
    run.prepare()
    backend = backend_class(run)
    seen: list[list[str]] = []

    for serial in (1, 2):
        backend.write(_commit(serial, best_epoch=None), lambda: seen.append(_names(run)))
    backend.wait()

    assert seen == [[], ["state-000001.pt"]]


@BACKENDS
def test_file_backend_refuses_a_non_finite_state_with_the_last_checkpoint_intact(tmp_path, backend_class):
    run = RunDirectory(tmp_path)
    run.prepare()
    durable: list[int] = []
    backend = backend_class(run, on_durable=durable.append)
    backend.write(_commit(1, best_epoch=None), _nothing)
    poisoned = _commit(2, best_epoch=None, value=float("nan"))

    with pytest.raises(NonFiniteStateError, match=r"^network 'w' state-000001.pt$"):
        backend.write(poisoned, _nothing)
        backend.wait()  # a background write's error comes back here

    assert durable == [1] and _names(run) == ["state-000001.pt"]


def test_file_backend_resumed_from_converges_on_what_a_commit_leaves(tmp_path):
    run = RunDirectory(tmp_path)
    run.prepare()
    for number in range(1, 6):
        run.state_path(number).write_bytes(b"state")
        run.best_path(number).write_bytes(b"weights")
    backend = FileBackend(run)
    loaded = run.checkpoints()[2]  # state 3: the newer two did not load

    backend.resumed_from(loaded, best_epoch=1, epochs_completed=2)
    backend.write(_commit(6, best_epoch=2, best_weights=2), _nothing)
    backend.wait()

    # Resuming removed the state older than the fallback of the loaded one, and best weights past its
    # epoch; the commit after it kept its own best and the loaded one's.
    assert _names(run) == ["best-epoch0001.pt", "best-epoch0002.pt", "state-000005.pt", "state-000006.pt"]


def _saved_state(run: RunDirectory, serial: int, *, reason: str, epochs: int, steps: int = 0) -> Checkpoint:
    """A state file as a commit writes it, with the weights ``[serial, serial]``."""
    tree = {
        "format": 2,
        "serial": serial,
        "reason": reason,
        "nodes": {
            "model": {"w": torch.full((2,), float(serial))},
            "progress": {"epochs_completed": epochs, "steps_in_epoch": steps},
        },
    }
    torch.save(tree, run.state_path(serial))
    return run.checkpoints()[0]


@BACKENDS
def test_file_backend_resumed_from_writes_the_missing_best_weights_of_the_restored_epoch_end(
    tmp_path, backend_class
):
    run = RunDirectory(tmp_path)
    run.prepare()
    _saved_state(run, 1, reason="epoch", epochs=1)
    loaded = _saved_state(run, 2, reason="epoch", epochs=2)  # killed before its best weights

    backend_class(run).resumed_from(loaded, best_epoch=2, epochs_completed=2)

    assert _names(run) == ["best-epoch0002.pt", "state-000001.pt", "state-000002.pt"]
    assert torch.equal(torch.load(run.best_path(2), weights_only=True)["w"], torch.full((2,), 2.0))
    assert run.temporary_files() == []


@pytest.mark.parametrize(
    ("reason", "epochs", "steps", "best_epoch"),
    [("epoch", 3, 0, 2), ("step", 2, 4, 2), ("interrupt", 2, 1, 2), ("epoch", 2, 0, None)],
    ids=["older-best-epoch", "step-commit", "interrupt-commit", "no-best-yet"],
)
def test_file_backend_resumed_from_leaves_best_weights_the_restored_state_does_not_hold_missing(
    tmp_path, reason, epochs, steps, best_epoch
):
    run = RunDirectory(tmp_path)
    run.prepare()
    loaded = _saved_state(run, 5, reason=reason, epochs=epochs, steps=steps)

    FileBackend(run).resumed_from(loaded, best_epoch=best_epoch, epochs_completed=epochs)

    # Its weights are not those of the best epoch: as before best weights followed the state.
    assert _names(run) == ["state-000005.pt"]


def test_file_backend_resumed_from_a_damaged_state_raises_and_writes_nothing(tmp_path):
    run = RunDirectory(tmp_path)
    run.prepare()
    loaded = _saved_state(run, 1, reason="epoch", epochs=1)
    loaded.path.write_bytes(loaded.path.read_bytes()[:100])

    with pytest.raises(CheckpointError, match=r"state-000001\.pt is truncated or corrupt"):
        FileBackend(run).resumed_from(loaded, best_epoch=1, epochs_completed=1)
    assert _names(run) == ["state-000001.pt"]


class Nothing:
    def record(self, logs: dict[str, Any]) -> None:
        pass


def _committer(run: RunDirectory, first_commits: list[int], asynchronous: bool) -> Committer:
    progress = Progress()
    tree = StateTree()
    tree.add("progress", progress)
    return Committer(
        run,
        tree,
        progress=progress,
        best=BestTracker("loss", "min"),
        recorder=Nothing(),  # type: ignore[arg-type]
        backend=one_file_backend(asynchronous),
        on_first_commit=lambda: first_commits.append(1),
    )


@pytest.mark.parametrize("asynchronous", [False, True], ids=["synchronous", "asynchronous"])
def test_committer_calls_on_first_commit_once_the_first_commit_of_the_run_is_durable(tmp_path, asynchronous):
    run = RunDirectory(tmp_path)
    run.prepare()
    first: list[int] = []
    committer = _committer(run, first, asynchronous)

    committer.policy.commit("step")
    committer.wait()
    assert first == [1]
    committer.policy.commit("step")
    committer.wait()
    assert first == [1]

    resumed_first: list[int] = []
    resumed = _committer(run, resumed_first, asynchronous)
    assert resumed.restore(epochs=1) and resumed.policy.serial == 2
    resumed.policy.commit("step")
    resumed.wait()
    assert resumed_first == [] and run.state_paths() == [run.state_path(3), run.state_path(2)]
