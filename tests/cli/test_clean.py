"""`exp clean DIR`: remove what neither resuming nor the best model needs, and report the bytes freed."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from cli.main import cli
from experiment.store.directory import RunDirectory
from tests.support.cli import write_fake_run
from tests.support.training import assert_same_training_state, train_run


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def _interrupted_run(run_dir):
    """Interrupted in epoch 3 with two state files and two best files (the former best kept)."""
    train_run(run_dir, epochs=4, interrupt_at=15, checkpoint_every=4)
    assert _names(run_dir) == ["best-epoch0001.pt", "best-epoch0002.pt", "state-000004.pt", "state-000005.pt"]


def test_cli_clean_keeps_what_resume_needs_and_the_best_weights(run_dirs):
    straight, cleaned = run_dirs
    _interrupted_run(cleaned)
    (cleaned / "checkpoints" / ".state-000007.pt.0badc0de.tmp").write_bytes(b"x" * 100)  # a crash's leftover
    (cleaned / "checkpoints" / "notes.txt").write_text("mine")
    freed = sum(
        (cleaned / "checkpoints" / name).stat().st_size
        for name in ("best-epoch0001.pt", "state-000004.pt", ".state-000007.pt.0badc0de.tmp")
    )

    result = _invoke("clean", str(cleaned))

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"Freed {freed / 1000:.1f} kB ({freed} bytes) in 3 file(s)."
    assert _names(cleaned) == ["best-epoch0002.pt", "notes.txt", "state-000005.pt"]
    expected = train_run(straight, epochs=4, checkpoint_every=4)
    assert_same_training_state(expected, train_run(cleaned, epochs=4, checkpoint_every=4))


def test_cli_clean_keep_last_removes_the_best_weights_and_still_resumes(run_dirs):
    straight, cleaned = run_dirs
    _interrupted_run(cleaned)

    result = _invoke("clean", str(cleaned), "--keep", "last")

    assert result.exit_code == 0, result.output
    assert _names(cleaned) == ["state-000005.pt"]
    expected = train_run(straight, epochs=4, checkpoint_every=4)
    assert_same_training_state(expected, train_run(cleaned, epochs=4, checkpoint_every=4))


def test_cli_clean_keep_best_leaves_only_the_best_weights_of_a_finished_run(tmp_path):
    run = train_run(tmp_path / "run", epochs=3, checkpoint_every=4)
    best_epoch = int(run.logs.loc[run.logs["val_loss"].idxmin(), "epoch"])
    best_weights = torch.load(RunDirectory(tmp_path / "run").best_path(best_epoch), weights_only=True)

    result = _invoke("clean", str(tmp_path / "run"), "--keep", "best")

    assert result.exit_code == 0, result.output
    assert _names(tmp_path / "run") == [f"best-epoch{best_epoch:04d}.pt"]
    kept = torch.load(RunDirectory(tmp_path / "run").best_path(best_epoch), weights_only=True)
    assert all(torch.equal(kept[key], value) for key, value in best_weights.items())


def test_cli_clean_keep_best_run_can_be_tested_but_not_trained_again(tmp_path):
    import pytest

    from experiment.errors import RunDirectoryError
    from tests.support.training import make_data, make_experiment

    train_run(tmp_path / "run", epochs=3, checkpoint_every=4)
    assert _invoke("clean", str(tmp_path / "run"), "--keep", "best").exit_code == 0
    log_before = (tmp_path / "run" / "log.tsv").read_bytes()

    exp = make_experiment(tmp_path / "run")
    assert "test_loss" in exp.test(make_data(48, seed=2), progress=False)
    with pytest.raises(RunDirectoryError, match="cleaned to its best weights.*not resumed"):
        exp.train(make_data(), epochs=4, progress=False)
    assert (tmp_path / "run" / "log.tsv").read_bytes() == log_before


def test_cli_clean_keep_best_refuses_a_run_that_may_be_resumed(tmp_path):
    _interrupted_run(tmp_path / "run")

    result = _invoke("clean", str(tmp_path / "run"), "--keep", "best")

    assert result.exit_code == 1
    assert "whose status is 'failed'; it would remove what resuming needs" in result.output
    assert len(_names(tmp_path / "run")) == 4


def test_cli_clean_keep_best_refuses_a_run_without_best_weights(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()

    result = _invoke("clean", str(run_dir), "--keep", "best")

    assert result.exit_code == 1 and "holds no best-weights file to keep" in result.output


def test_cli_clean_dry_run_removes_nothing(tmp_path):
    _interrupted_run(tmp_path / "run")

    result = _invoke("clean", str(tmp_path / "run"), "--dry-run")

    assert result.exit_code == 0
    assert (
        result.output.splitlines()[0]
        == f"Would remove {tmp_path / 'run' / 'checkpoints' / 'state-000004.pt'}"
    )
    assert result.output.splitlines()[-1].startswith("Would free ")
    assert len(_names(tmp_path / "run")) == 4


def test_cli_clean_refuses_a_locked_run(tmp_path):
    _interrupted_run(tmp_path / "run")
    with RunDirectory(tmp_path / "run").lock():
        report = _invoke("clean", str(tmp_path / "run"))
    assert report.exit_code == 1
    assert "is in use by another process" in report.output
    assert len(_names(tmp_path / "run")) == 4


def test_cli_clean_errors(tmp_path):
    not_a_run = _invoke("clean", str(tmp_path))

    assert not_a_run.exit_code == 1 and "is not a run directory" in not_a_run.output
    assert _invoke("clean", str(tmp_path), "--keep", "some").exit_code == 2
