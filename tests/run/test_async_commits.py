"""Asynchronous commits: a background thread writes each commit from reused CPU buffers.

The run must end exactly as with synchronous commits, whatever the interruptions; the previous
commit stays on disk until the next is durable; only the writer thread removes checkpoint files;
a write error comes back on the training thread as a StorageError with the last durable commit
intact; and the write in flight ends before the status changes and the lock is released.
"""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment import Callback
from experiment.errors import NonFiniteLossError, StorageError
from experiment.run.commits import file_backend as file_backend_module
from experiment.run.commits.background_backend import BackgroundFileBackend
from experiment.run.commits.commit import Commit
from experiment.state.snapshot import Snapshot
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.files import atomic_writer
from tests.support.state_checks import assert_same_run, state_files
from tests.support.training import assert_same_training_state, train_run


def test_async_commits_end_as_synchronous_ones(run_dirs):
    straight, background = run_dirs
    expected = train_run(straight, epochs=3, checkpoint_every=4)
    actual = train_run(background, epochs=3, checkpoint_every=4, async_checkpoint=True)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, background)


def test_async_commits_resume_exactly_after_interruptions_at_many_steps(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=3, checkpoint_every=2, async_checkpoint=True)
    for step in (3, 6, 7, 11, 16):
        train_run(resumed, epochs=3, checkpoint_every=2, async_checkpoint=True, interrupt_at=step)
    actual = train_run(resumed, epochs=3, checkpoint_every=2, async_checkpoint=True)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


def test_async_snapshot_reuses_its_buffers_and_copies_live_lists():
    snapshot = Snapshot()
    weights, history = torch.ones(3), [{"loss": 1.0}]
    first = snapshot.take({"w": weights, "history": history})
    weights.add_(1)
    history.append({"loss": 2.0})
    assert torch.equal(first["w"], torch.ones(3)) and first["history"] == [{"loss": 1.0}]
    second = snapshot.take({"w": weights, "history": history})
    assert second["w"].data_ptr() == first["w"].data_ptr()  # the same buffer, refilled
    assert torch.equal(second["w"], torch.full((3,), 2.0)) and snapshot.nbytes == 12


def test_async_only_the_writer_thread_removes_checkpoint_files(tmp_path: Path, monkeypatch):
    removers: list[str] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.parent.name == "checkpoints" and self.suffix == ".pt":
            removers.append(threading.current_thread().name)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    train_run(tmp_path, epochs=3, checkpoint_every=2, async_checkpoint=True)
    assert removers and set(removers) == {"experiment-commit-writer"}
    assert len(state_files(tmp_path)) == 2


def test_async_write_in_flight_ends_before_the_status_is_finished(tmp_path: Path, monkeypatch):
    log: list[str] = []
    release = threading.Event()
    real_write = BackgroundFileBackend._write
    real_write_metadata = RunDirectory.write_metadata

    def slow_write(self, commit: Commit, *args: Any) -> None:
        state = commit.state
        if state["reason"] == "epoch" and state["nodes"]["progress"]["epochs_completed"] == 2:
            release.wait(timeout=30)  # held until the training thread has returned from on_train_end
        real_write(self, commit, *args)
        log.append(f"written {state['serial']}")

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        log.append(f"status {metadata['status']}")
        real_write_metadata(self, metadata)

    class Release(Callback):
        def on_train_end(self, logs: dict[str, Any]) -> None:
            release.set()

    monkeypatch.setattr(BackgroundFileBackend, "_write", slow_write)
    monkeypatch.setattr(RunDirectory, "write_metadata", write_metadata)
    train_run(tmp_path, epochs=2, async_checkpoint=True, callbacks=lambda: [Release()])
    assert log.index("status finished") > log.index("written 2")
    assert not any(name.startswith(".") for name in (p.name for p in (tmp_path / "checkpoints").iterdir()))


def test_async_write_error_comes_back_at_the_next_commit_with_the_last_commit_intact(
    tmp_path: Path, monkeypatch
):
    real_save = file_backend_module.save_tensors
    calls = {"state": 0}

    def failing_save(path: Path, obj: Any, *, sync_dir: bool = True) -> None:
        if path.name.startswith("state-"):
            calls["state"] += 1
            if calls["state"] == 3:  # the disk fills up halfway through the third state file
                with atomic_writer(path) as file:
                    file.write(b"half a checkpoint")
                    raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, obj, sync_dir=sync_dir)

    monkeypatch.setattr(file_backend_module, "save_tensors", failing_save)
    with pytest.raises(StorageError, match="No space left on device"):
        train_run(tmp_path, epochs=3, checkpoint_every=2, async_checkpoint=True)
    metadata = json.loads((tmp_path / "experiment.json").read_text())
    assert metadata["status"] == "failed" and "No space left" in metadata["message"]
    tree, path = load_newest_state(RunDirectory(tmp_path))
    assert path.name == "state-000002.pt" and tree["nodes"]["progress"]["global_step"] == 4
    assert RunDirectory(tmp_path).temporary_files() == []
    monkeypatch.setattr(file_backend_module, "save_tensors", real_save)
    expected = train_run(tmp_path / "straight", epochs=3, checkpoint_every=2)
    actual = train_run(tmp_path, epochs=3, checkpoint_every=2, async_checkpoint=True)
    assert_same_training_state(expected, actual)


def test_async_non_finite_state_is_never_written(tmp_path: Path):
    class PoisonsGradients(Callback):
        def on_backward_end(self, batch_number: int) -> None:
            if self.trainer.global_step + 1 == 8:
                for parameter in self.trainer.network.parameters():
                    parameter.grad.fill_(float("nan"))

    # The writer refuses the poisoned state of step 8; the NaN loss of the steps after it is seen
    # at the epoch's end first, and the writer's refusal is logged behind it. Nothing is written.
    with pytest.raises(NonFiniteLossError, match="Nothing of it was committed"):
        train_run(
            tmp_path,
            epochs=3,
            checkpoint_every=4,
            async_checkpoint=True,
            callbacks=lambda: [PoisonsGradients()],
        )
    tree, _ = load_newest_state(RunDirectory(tmp_path))
    assert tree["nodes"]["progress"]["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in tree["nodes"]["model"].values())
    assert json.loads((tmp_path / "experiment.json").read_text())["status"] == "failed"
