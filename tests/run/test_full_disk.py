"""A real full disk: a run directory on a small tmpfs fills up in the middle of a commit's torch.save.

No write is patched: the kernel answers ENOSPC partway through the state file. The run must raise
StorageError (not torch's RuntimeError), mark itself failed, leave no temporary file, and keep its
last durable commit loadable; once space is freed, resuming ends exactly as an uninterrupted run.
With asynchronous commits the background writer meets the full disk and the error comes back on the
training thread at the next commit point, with the same guarantees.

Mounting needs root; the tests are skipped where it is not available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from experiment import Callback, StorageError
from experiment.run.commits.background_writer import BackgroundWriter
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.state_checks import assert_same_run
from tests.support.training import train_run

#: Bytes left free when the disk fills up: fewer than a state file of the tiny model (about 22 kB),
#: more than experiment.json (about 2 kB), so the commit fails partway and the status can be written.
LEFT_FREE = 8192
#: TensorBoard is off: its event writer appends at epoch ends too, which would fail first.
OPTIONS: dict[str, Any] = {"experiment_options": {"tensorboard": False}, "progress": False}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test, unmounted afterwards whatever happens."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount_dir = tmp_path / "disk"
    mount_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_dir)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"could not mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_dir
    finally:
        if subprocess.run(["umount", str(mount_dir)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_dir)], check=True)  # still busy: detach it


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> list[BackgroundWriter]:
    """The background writers created during the test (one per asynchronous train call)."""
    created: list[BackgroundWriter] = []
    init = BackgroundWriter.__init__

    def recording_init(self: BackgroundWriter) -> None:
        init(self)
        created.append(self)

    monkeypatch.setattr(BackgroundWriter, "__init__", recording_init)
    return created


class FillDiskAt(Callback):
    """At the end of epoch ``epoch``, just before its commit, fills the disk of ``filler`` to
    :data:`LEFT_FREE` bytes of free space, once ``settle()`` has returned (it waits for the
    previous commit's background write, which must not be the one that meets the full disk)."""

    def __init__(self, filler: Path, epoch: int, settle: Callable[[], None]) -> None:
        super().__init__()
        self.filler, self.epoch, self.settle = filler, epoch, settle

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number != self.epoch:
            return
        self.settle()
        stats = os.statvfs(self.filler.parent)
        size = stats.f_bavail * stats.f_frsize - LEFT_FREE
        with open(self.filler, "wb") as file:
            file.write(bytes(size))


def temporary_files(run_dir: Path) -> list[Path]:
    return [path for path in run_dir.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("async_checkpoint", [False, True], ids=["synchronous", "asynchronous"])
def test_full_disk_during_commit_fails_cleanly_and_resumes_exactly(
    tmp_path, small_disk, writers, async_checkpoint
):
    straight, run_dir, filler = tmp_path / "straight", small_disk / "run", small_disk / "filler"
    train_run(straight, **OPTIONS)

    def settle() -> None:
        for writer in writers:
            writer.wait()

    with pytest.raises(
        StorageError, match=r"Could not write .*state-\d+\.pt.*No space left on device"
    ) as raised:
        train_run(
            run_dir,
            callbacks=lambda: [FillDiskAt(filler, 2, settle)],
            async_checkpoint=async_checkpoint,
            **OPTIONS,
        )
    assert not isinstance(raised.value, RuntimeError)  # torch's "unexpected pos" is not what surfaces

    metadata = json.loads((run_dir / "experiment.json").read_text())
    assert metadata["status"] == "failed"
    assert "StorageError" in metadata["message"]
    assert temporary_files(run_dir) == []
    found = load_newest_state(RunDirectory(run_dir))
    assert found is not None
    assert found[0]["nodes"]["progress"]["epochs_completed"] == 1  # epoch 2's commit never landed

    filler.unlink()  # space is back
    train_run(run_dir, async_checkpoint=async_checkpoint, **OPTIONS)
    assert json.loads((run_dir / "experiment.json").read_text())["status"] == "finished"
    assert temporary_files(run_dir) == []
    assert_same_run(straight, run_dir)
