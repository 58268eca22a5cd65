"""compare_runs: two runs side by side, section by section, without loading a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiment.errors import RunDirectoryError
from experiment.inspection.comparison import compare_runs
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


def _with_creation(run_dir: Path, **created_with: Any) -> Path:
    path = run_dir / "experiment.json"
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "created_with": created_with}))
    return run_dir


def test_comparison_flattens_what_the_runs_were_created_with(tmp_path):
    sgd = {"lr": 0.1, "momentum": 0.9, "betas": None}
    a = _with_creation(
        write_fake_run(tmp_path / "a"),
        optimizer_class="torch.optim.sgd.SGD",
        optimizer=[sgd],
        precision="32-true",
        accumulate_grad_batches=1,
        data={"train_data": {"batch_size": 16}},
    )
    b = _with_creation(
        write_fake_run(tmp_path / "b"),
        optimizer_class="torch.optim.sgd.SGD",
        optimizer=[{**sgd, "lr": 0.05}],
        precision="bf16-mixed",
        accumulate_grad_batches=4,
        data={"train_data": {"batch_size": 16}},
    )

    rows = {row.key: row for row in compare_runs(a, b) if row.section == "created_with"}

    assert (rows["optimizer.lr"].a, rows["optimizer.lr"].b) == (0.1, 0.05)
    assert rows["accumulate_grad_batches"].differs and rows["precision"].differs
    assert not rows["optimizer_class"].differs and not rows["optimizer.momentum"].differs
    assert rows["data.train_data.batch_size"].a == 16 and not rows["data.train_data.batch_size"].differs


def test_comparison_numbers_the_parameter_groups_of_several(tmp_path):
    a = _with_creation(write_fake_run(tmp_path / "a"), optimizer=[{"lr": 0.1}, {"lr": 0.01}])
    b = _with_creation(write_fake_run(tmp_path / "b"), optimizer=[{"lr": 0.1}, {"lr": 0.02}])

    rows = {row.key: row for row in compare_runs(a, b) if row.section == "created_with"}

    assert list(rows) == ["optimizer.0.lr", "optimizer.1.lr"]
    assert not rows["optimizer.0.lr"].differs and (rows["optimizer.1.lr"].a, rows["optimizer.1.lr"].b) == (
        0.01,
        0.02,
    )


def test_comparison_of_runs_made_before_created_with_has_no_such_rows(tmp_path):
    a, b = write_two_fake_runs(tmp_path)

    assert [row for row in compare_runs(a, b) if row.section == "created_with"] == []
