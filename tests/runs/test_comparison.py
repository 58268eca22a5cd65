"""compare_runs: two runs side by side, section by section, without loading a checkpoint."""

from __future__ import annotations

import pytest

from experiment.errors import RunDirectoryError
from experiment.runs.comparison import compare_runs
from tests.support.cli import write_fake_run, write_two_fake_runs


def test_comparison_rows_hold_both_values(tmp_path):
    a, b = write_two_fake_runs(tmp_path)

    rows = {(row.section, row.key): row for row in compare_runs(a, b)}

    assert (rows["config", "lr"].a, rows["config", "lr"].b) == (0.1, 0.01)
    assert not rows["config", "model.depth"].differs
    assert (rows["config", "seed"].b, rows["config", "wd"].a) == (None, None)
    assert (rows["final", "epoch"].a, rows["final", "epoch"].b) == (3, 2)
    assert (rows["best", "epoch"].a, rows["best", "val_loss"].a) == (2, 0.4)
    assert (rows["best", "epoch"].b, rows["best", "val_loss"].b) == (2, 0.7)


def test_comparison_sections_come_in_order(tmp_path):
    a, b = write_two_fake_runs(tmp_path)

    sections = list(dict.fromkeys(row.section for row in compare_runs(a, b)))

    assert sections == ["run", "config", "settings", "final", "best"]


def test_comparison_run_section_and_metrics(tmp_path):
    a = write_fake_run(tmp_path / "a", values=[0.5, 0.25])
    b = write_fake_run(tmp_path / "b", values=[0.5, 0.25], status="stopped")

    rows = {(row.section, row.key): row for row in compare_runs(a, b)}

    assert (rows["run", "status"].a, rows["run", "status"].b) == ("finished", "stopped")
    assert rows["run", "epochs"].a == rows["run", "epochs"].b == 2
    assert rows["run", "monitor"].a == "val_loss"
    assert (rows["final", "loss"].a, rows["final", "val_acc"].a) == (0.35, 41.0)
    assert ("final", "time") not in rows  # a wall-clock time is not a metric
    assert not any(row.differs for row in rows.values() if row.section in ("config", "final", "best"))


def test_comparison_of_a_run_without_epochs_has_no_metric_rows(tmp_path):
    a = write_fake_run(tmp_path / "a", epochs_done=0)
    b = write_fake_run(tmp_path / "b", epochs_done=0)

    rows = compare_runs(a, b)

    assert [row for row in rows if row.section in ("final", "best")] == []


def test_comparison_refuses_a_directory_that_is_not_a_run(tmp_path):
    a = write_fake_run(tmp_path / "a")
    (tmp_path / "empty").mkdir()

    with pytest.raises(RunDirectoryError, match=r"empty is not a run directory"):
        compare_runs(a, tmp_path / "empty")
