"""A run directory on a read-only mount (results shared read-only; root cannot write there either):
what only reads works, what must write is refused with advice, and nothing changes on disk.

The tests for a directory made read-only by its permissions, for a user other than its owner, are in
test_errors.py and tests/inspection/test_cleaning.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from experiment.errors import DirectoryLockedError, RunDirectoryError
from experiment.store.directory import RunDirectory
from tests.support.cli import call_as_nobody
from tests.support.state_checks import snapshot_files
from tests.support.training import make_data, make_experiment, train_run

READ_ONLY = r"The run directory .*shared is on a read-only file system.*Copy the run somewhere writable"


def test_read_only_mount_predicts_with_the_saved_weights(read_only_run):
    source, view = read_only_run
    x, _ = make_data(20, seed=3)
    expected = make_experiment(source).predict(x, checkpoint="best")
    before = snapshot_files(source)

    exp = make_experiment(view)  # building an Experiment writes nothing
    outputs = exp.predict(x, checkpoint="best")
    logs = exp.evaluate(make_data(48, seed=2))  # the loaded weights, in memory

    assert torch.equal(outputs, expected)
    assert set(logs) >= {"test_loss", "test_acc"}
    assert snapshot_files(source) == before


def test_read_only_mount_test_is_refused_and_changes_nothing(read_only_run):
    source, view = read_only_run
    before = snapshot_files(source)

    with pytest.raises(RunDirectoryError, match=READ_ONLY + r".*predict\(x, checkpoint=\.\.\.\)"):
        make_experiment(view).test(make_data(48, seed=2), progress=False)

    assert snapshot_files(source) == before
    assert not (source / "test_log.tsv").exists()


def test_read_only_mount_training_is_refused_and_changes_nothing(read_only_run):
    source, view = read_only_run
    before = snapshot_files(source)

    with pytest.raises(RunDirectoryError, match=READ_ONLY):
        make_experiment(view).train(make_data(), epochs=3, progress=False)

    assert snapshot_files(source) == before


def test_read_only_mount_predict_waits_for_a_writer_of_the_same_files(read_only_run):
    """A process writing the run through another, writable mount keeps a reader of the read-only
    one out: the lock is on the file, whichever mount reaches it."""
    source, view = read_only_run
    x, _ = make_data(20, seed=3)
    exp = make_experiment(view)

    with RunDirectory(source).lock(), pytest.raises(DirectoryLockedError, match=r"shared is in use by"):
        exp.predict(x, checkpoint="best")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to read as another user; a non-root user reads its own runs, which it may write",
)
def test_read_only_for_another_user_predicts_with_the_saved_weights():
    """Another user's run (read-only for this one by its permissions) is read the same way."""
    with tempfile.TemporaryDirectory(dir="/tmp") as parent:
        Path(parent).chmod(0o755)  # traversable by nobody
        run_dir = Path(parent) / "run"
        train_run(run_dir, epochs=1, progress=False)
        exp = make_experiment(run_dir)
        before = snapshot_files(run_dir)

        kind, message = call_as_nobody(exp.predict, make_data(20, seed=3)[0], checkpoint="best")

        assert (kind, message) == ("none", "no error")
        assert snapshot_files(run_dir) == before
