"""clean_run: what it removes, what a dry run reports, and what it refuses."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiment.errors import ConfigurationError, DirectoryLockedError, RunDirectoryError
from experiment.inspection.cleaning import clean_run
from experiment.store.directory import RunDirectory
from tests.support.cli import call_as_nobody, write_fake_run
from tests.support.training import train_run


def _names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def _fake_run_with_leftovers(run_dir):
    """A fake run (best epoch 3) with the best file of a former best and a crash's temporary file."""
    write_fake_run(run_dir, values=[0.9, 0.5, 0.2])
    (run_dir / "checkpoints" / "best-epoch0002.pt").write_bytes(b"x" * 100)
    (run_dir / "checkpoints" / ".state-000007.pt.0123abcd.tmp").write_bytes(b"y" * 50)
    (run_dir / "notes.txt").write_text("mine")
    return run_dir


def test_cleaning_dry_run_reports_and_removes_nothing(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")
    before = _names(run_dir)

    report = clean_run(run_dir, dry_run=True)

    assert report.dry_run
    assert [p.name for p in report.removed] == ["best-epoch0002.pt", ".state-000007.pt.0123abcd.tmp"]
    assert report.bytes_freed == 150
    assert _names(run_dir) == before


def test_cleaning_removes_what_the_dry_run_listed(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")
    planned = clean_run(run_dir, dry_run=True)

    report = clean_run(run_dir)

    assert not report.dry_run
    assert (report.removed, report.bytes_freed) == (planned.removed, planned.bytes_freed)
    assert _names(run_dir) == ["best-epoch0003.pt"]
    assert (run_dir / "notes.txt").read_text() == "mine"  # files the library did not write stay


def test_cleaning_keep_last_removes_every_best_file(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")

    report = clean_run(run_dir, keep="last", dry_run=True)

    assert sorted(p.name for p in report.removed) == sorted(
        ["best-epoch0002.pt", "best-epoch0003.pt", ".state-000007.pt.0123abcd.tmp"]
    )


def test_cleaning_keep_best_marks_the_run_not_resumable(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")

    clean_run(run_dir, keep="best")

    assert _names(run_dir) == ["best-epoch0003.pt"]
    assert json.loads((run_dir / "experiment.json").read_text())["resumable"] is False


def test_cleaning_refuses_an_unknown_keep(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    with pytest.raises(
        ConfigurationError, match=r"keep: received 'all'; expected one of 'both', 'last', 'best'"
    ):
        clean_run(run_dir, keep="all")


def test_cleaning_keep_best_refuses_a_run_that_may_be_resumed(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", status="interrupted")

    with pytest.raises(ConfigurationError, match=r"whose status is 'interrupted'; it would remove"):
        clean_run(run_dir, keep="best", dry_run=True)


def test_cleaning_keep_best_refuses_a_run_without_best_weights(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", epochs_done=0)

    with pytest.raises(ConfigurationError, match=r"holds no best-weights file to keep"):
        clean_run(run_dir, keep="best")


def test_cleaning_refuses_a_locked_run(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")

    with RunDirectory(run_dir).lock(), pytest.raises(DirectoryLockedError, match="in use by another process"):
        clean_run(run_dir, dry_run=True)


def test_cleaning_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(RunDirectoryError, match="is not a run directory"):
        clean_run(tmp_path)


def _interrupted_run(run_dir):
    """Interrupted in epoch 3 with two state files and two best files (the former best kept)."""
    train_run(run_dir, epochs=4, interrupt_at=15, checkpoint_every=4)
    assert _names(run_dir) == ["best-epoch0001.pt", "best-epoch0002.pt", "state-000004.pt", "state-000005.pt"]


def test_cleaning_report_lists_the_files(tmp_path):
    _interrupted_run(tmp_path / "run")

    report = clean_run(tmp_path / "run", keep="last", dry_run=True)

    assert [p.name for p in report.removed] == ["state-000004.pt", "best-epoch0001.pt", "best-epoch0002.pt"]
    assert report.bytes_freed == sum(p.stat().st_size for p in report.removed)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder that user 'nobody' can traverse (pytest's tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as parent:
        Path(parent).chmod(0o755)
        yield Path(parent)


@pytest.mark.parametrize("read_only", ["run", "checkpoints"])
def test_cleaning_a_read_only_run_refuses_and_removes_nothing(shared_tmp, read_only):
    run_dir = _fake_run_with_leftovers(shared_tmp / "run")
    RunDirectory(run_dir).lock().acquire()  # .lock and .lock.holder exist, as after any training
    for name in (".lock", ".lock.holder"):
        (run_dir / name).chmod(0o666)
    before = _names(run_dir)
    for writable in (run_dir, run_dir / "checkpoints"):
        writable.chmod(0o777)  # writable by 'nobody' too, but for the one made read-only
    folder = run_dir if read_only == "run" else run_dir / "checkpoints"
    folder.chmod(0o555)
    try:
        kind, message = call_as_nobody(clean_run, run_dir)
    finally:
        folder.chmod(0o755)

    assert kind == "RunDirectoryError", message
    expected = f"Cannot lock {run_dir}: it is read-only" if read_only == "run" else f"{folder} is read-only"
    assert expected in message
    assert _names(run_dir) == before


def test_cleaning_refuses_a_symlinked_checkpoints_folder(tmp_path):
    run_dir = _fake_run_with_leftovers(tmp_path / "run")
    os.replace(run_dir / "checkpoints", tmp_path / "elsewhere")
    (run_dir / "checkpoints").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(RunDirectoryError, match=r"run/checkpoints is a symbolic link"):
        clean_run(run_dir)
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        ".state-000007.pt.0123abcd.tmp",
        "best-epoch0002.pt",
        "best-epoch0003.pt",
    ]


def test_cleaning_ignores_a_file_named_almost_like_a_newer_checkpoint(tmp_path):
    _interrupted_run(tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.copy(checkpoints / "state-000005.pt", checkpoints / "state-999999.pt\n")

    report = clean_run(tmp_path / "run")

    assert [p.name for p in report.removed] == ["state-000004.pt", "best-epoch0001.pt"]
    assert (checkpoints / "state-000005.pt").exists() and (checkpoints / "state-999999.pt\n").exists()
