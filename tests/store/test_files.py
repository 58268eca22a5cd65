"""Crash safety of the files of a run: failed writes, damaged checkpoints and unsafe pickles."""

from __future__ import annotations

import errno
import os
import pickle
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment import Callback, CheckpointError, StorageError, UnsafeCheckpointError
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.files import atomic_write_bytes, save_tensors
from experiment.store.safe_load import load_tensors
from tests.support.state_checks import assert_same_run, newest_state, snapshot_files, state_files
from tests.support.training import assert_same_training_state, train_run

LOCK_FILES = (".lock", ".lock.holder")


def no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temporary_files(run_dir: Path) -> list[Path]:
    return [path for path in run_dir.rglob("*") if path.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_storage_failed_write_keeps_previous_content_and_no_temporary_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"committed")
    monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(StorageError, match=r"Could not write .*file\.bin: No space left on device"):
        atomic_write_bytes(path, b"new content that never lands")
    monkeypatch.undo()
    assert path.read_bytes() == b"committed"
    assert temporary_files(tmp_path) == []


def test_storage_save_and_load_round_trip_plain_data(tmp_path):
    tree = {"weights": torch.arange(6.0).reshape(2, 3), "step": 3, "names": ["a", "b"], "none": None}
    save_tensors(tmp_path / "tree.pt", tree)
    loaded = load_tensors(tmp_path / "tree.pt")
    assert torch.equal(loaded["weights"], tree["weights"])
    assert {k: v for k, v in loaded.items() if k != "weights"} == {
        "step": 3,
        "names": ["a", "b"],
        "none": None,
    }


def wait_for_epochs_committed(run_dir: Path, epochs: int, timeout: float = 60.0) -> None:
    """Block until the newest loadable state of ``run_dir`` has ``epochs`` epochs completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = load_newest_state(RunDirectory(run_dir))
        if found is not None and found[0]["nodes"]["progress"]["epochs_completed"] >= epochs:
            return
        time.sleep(0.01)
    pytest.fail(f"no commit of {epochs} epochs became durable in {run_dir} within {timeout} s")


class FailWritesFrom(Callback):
    """Patches ``os.<name>`` to fail with ENOSPC when epoch ``epoch`` ends (the disk fills up), once
    the previous epoch's commit is durable: the writer thread makes it durable while the next epoch
    trains, and on a loaded machine it may still be in flight when this epoch ends."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        name: str,
        epoch: int,
        only: str = "",
        run_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.monkeypatch, self.name, self.epoch, self.only = monkeypatch, name, epoch, only
        self.run_dir = run_dir

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number != self.epoch:
            return
        if self.run_dir is not None:
            wait_for_epochs_committed(self.run_dir, epoch_number - 1)
        real = getattr(os, self.name)
        only = self.only

        def fail(*args: Any, **kwargs: Any) -> Any:
            if only and only not in str(args[-1]):
                return real(*args, **kwargs)
            no_space()

        self.monkeypatch.setattr(os, self.name, fail)


@pytest.mark.parametrize(
    ("failing", "only"),
    [
        ("fsync", ""),  # every durable write fails from the end of epoch 2 on
        ("replace", "state-"),  # the state checkpoint is written in full, but its commit fails
    ],
)
@pytest.mark.parametrize("checkpoint_every", [None, 4])
def test_storage_full_disk_during_commit_keeps_previous_checkpoint(
    run_dirs, monkeypatch, failing, only, checkpoint_every
):
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=checkpoint_every)
    with pytest.raises(StorageError, match=r"No space left on device") as raised:
        train_run(
            resumed,
            checkpoint_every=checkpoint_every,
            callbacks=lambda: [FailWritesFrom(monkeypatch, failing, 2, only, run_dir=resumed)],
        )
    monkeypatch.undo()
    # The error names the write that failed at the commit, not a later status update.
    assert "experiment.json" not in str(raised.value)
    if only:
        assert re.search(
            r"Could not write .*state-\d+\.pt.*previous version of the file is intact", str(raised.value)
        )
    assert temporary_files(resumed) == []
    tree, _ = load_newest_state(RunDirectory(resumed))
    assert tree["nodes"]["progress"]["epochs_completed"] == 1
    train_run(resumed, checkpoint_every=checkpoint_every)
    assert_same_run(straight, resumed)


# ----------------------------------------------------------------------- damaged checkpoints
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def flip_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF  # inside the tensor records, past the pickle
    path.write_bytes(bytes(data))


DAMAGES = {"truncated": truncate, "empty": empty, "flipped_byte": flip_tensor_byte}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_storage_damaged_latest_checkpoint_falls_back_with_warning(run_dirs, damage):
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=2)
    train_run(resumed, checkpoint_every=2, interrupt_at=9)
    latest = state_files(resumed)[-1]
    assert len(state_files(resumed)) == 2
    DAMAGES[damage](latest)
    with pytest.warns(UserWarning, match=rf"Skipped unreadable checkpoint\(s\) .*{latest.name}"):
        train_run(resumed, checkpoint_every=2)
    assert_same_run(straight, resumed)


def test_storage_all_checkpoints_damaged_is_an_error_not_a_fresh_start(tmp_path):
    train_run(tmp_path, checkpoint_every=2, interrupt_at=9)
    for path in state_files(tmp_path):
        truncate(path)
    before = snapshot_files(tmp_path, ignore=LOCK_FILES)
    with pytest.raises(
        CheckpointError, match=r"No checkpoint of .* can be loaded: state-\d+\.pt: .*truncated"
    ):
        train_run(tmp_path, checkpoint_every=2)
    assert snapshot_files(tmp_path, ignore=LOCK_FILES) == before


# ------------------------------------------------------------------------------ unsafe pickles
class RunsCommand:
    """Unpickling this object would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def write_with_torch(path: Path, payload: Any) -> None:
    torch.save(payload, path)


def write_with_pickle(path: Path, payload: Any) -> None:
    path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("writer", [write_with_torch, write_with_pickle])
def test_storage_checkpoint_that_would_run_code_is_refused(tmp_path, writer):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    train_run(run_dir, epochs=2)
    latest = state_files(run_dir)[-1]
    writer(latest, {"format": 1, "model": RunsCommand(f"touch {marker}")})
    with pytest.raises(
        UnsafeCheckpointError, match=r"would call (posix|os)\.system. Nothing from it was executed"
    ):
        train_run(run_dir, epochs=3)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_newest_state(RunDirectory(run_dir))
    assert not marker.exists()


def test_storage_best_weights_that_would_run_code_are_refused(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    exp = train_run(run_dir, epochs=2)
    best = run_dir / "checkpoints" / f"best-epoch{newest_state(run_dir)['nodes']['best']['epoch']:04d}.pt"
    torch.save(RunsCommand(f"touch {marker}"), best)
    with pytest.raises(UnsafeCheckpointError, match=best.name):
        exp.test((torch.randn(8, 6), torch.randint(0, 3, (8,))))
    assert not marker.exists()


def test_storage_checkpoints_load_with_plain_torch(tmp_path):
    """What the library writes is readable by torch.load(weights_only=True), without the library."""
    train_run(tmp_path, epochs=2, checkpoint_every=4)
    tree = newest_state(tmp_path)
    assert tree["nodes"]["progress"]["epochs_completed"] == 2
    best = tmp_path / "checkpoints" / f"best-epoch{tree['nodes']['best']['epoch']:04d}.pt"
    weights = torch.load(best, weights_only=True)
    assert set(weights) == set(tree["nodes"]["model"])


def test_storage_leftover_temporary_files_are_removed_when_training_resumes(run_dirs):
    straight, resumed = run_dirs
    train_run(resumed, epochs=3, interrupt_at=7, checkpoint_every=2)
    leftovers = [
        resumed / "checkpoints" / ".state-000009.pt.0badc0de.tmp",  # what a kill during a write leaves
        resumed / ".experiment.json.12345678.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    mine = resumed / "checkpoints" / "notes.tmp"  # not named like the library's temporary files
    mine.write_text("kept")

    actual = train_run(resumed, epochs=3, checkpoint_every=2)

    assert not any(path.exists() for path in leftovers)
    assert mine.read_text() == "kept"
    assert_same_training_state(train_run(straight, epochs=3, checkpoint_every=2), actual)
