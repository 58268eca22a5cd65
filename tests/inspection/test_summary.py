"""summarize, summarize_all and find_runs: what notebooks and `exp ls` read from run directories."""

from __future__ import annotations

import json
import sys

import pytest

from experiment.errors import RunDirectoryError
from experiment.inspection.summary import RunSummary, find_runs, summarize, summarize_all
from tests.support.cli import write_fake_run
from tests.support.training import train_run


def test_summary_of_a_finished_run(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.3, 0.5], epochs=5, config={"lr": 0.01})

    summary = summarize(run_dir)

    assert (summary.path, summary.status, summary.message) == (run_dir, "finished", None)
    assert (summary.epochs_done, summary.epochs_planned, summary.steps_per_epoch) == (3, 5, 4)
    assert (summary.monitor, summary.monitor_mode) == ("val_loss", "min")
    assert (summary.best_epoch, summary.best_value) == (2, 0.3)
    assert summary.last_row["epoch"] == "3" and summary.last_row["val_loss"] == "0.5"
    assert summary.best_row["epoch"] == "2"
    assert summary.config == {"lr": 0.01}
    assert summary.last_checkpoint is None and summary.last_checkpoint_time is None
    assert summary.updated >= (run_dir / "log.tsv").stat().st_mtime


def test_summary_best_follows_the_monitor_mode(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", monitor="val_acc", mode="max", values=[60.0, 75.0, 70.0])

    summary = summarize(run_dir)

    assert (summary.monitor, summary.best_epoch, summary.best_value) == ("val_acc", 2, 75.0)


def test_summary_of_a_run_with_no_completed_epoch(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", epochs_done=0, status="failed", message="boom")

    summary = summarize(run_dir)

    assert (summary.status, summary.message) == ("failed", "boom")
    assert (summary.epochs_done, summary.best_epoch, summary.best_value) == (0, None, None)
    assert summary.last_row is None and summary.best_row is None


def test_summary_reports_a_running_run_without_its_process_as_interrupted(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", status="running")

    summary = summarize(run_dir)

    assert summary.status == "interrupted"
    assert summary.message == (
        "the process (pid 12345 on host fakehost) ended without a clean exit (killed or crashed)"
    )


def test_summary_to_dict_is_json_serialisable(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    data = json.loads(json.dumps(summarize(run_dir).to_dict()))

    assert data["path"] == str(run_dir)
    assert (data["epochs_done"], data["status"], data["config"]) == (3, "finished", {"lr": 0.1})


def test_summary_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(RunDirectoryError, match=r"is not a run directory: it has no experiment\.json"):
        summarize(tmp_path)


def test_summary_refuses_unreadable_metadata(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")
    (run_dir / "experiment.json").write_text("{ not json")

    with pytest.raises(RunDirectoryError, match=r"experiment\.json is not valid JSON"):
        summarize(run_dir)


def test_summary_find_runs_skips_hidden_folders_and_the_insides_of_runs(tmp_path):
    write_fake_run(tmp_path / "b")
    write_fake_run(tmp_path / "a" / "deep")
    write_fake_run(tmp_path / "a" / "deep" / "nested")  # inside a run: not listed
    write_fake_run(tmp_path / ".hidden")

    assert list(find_runs(tmp_path)) == [tmp_path / "a" / "deep", tmp_path / "b"]


def test_summary_all_reports_unreadable_runs_beside_the_others(tmp_path):
    write_fake_run(tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "experiment.json").write_text("[")

    found = summarize_all(tmp_path)

    summaries = [entry for entry in found if isinstance(entry, RunSummary)]
    broken = [entry for entry in found if not isinstance(entry, RunSummary)]
    assert [s.path for s in summaries] == [tmp_path / "good"]
    assert len(broken) == 1 and broken[0][0] == tmp_path / "broken"
    assert "is not valid JSON" in broken[0][1]


def test_summary_of_an_empty_root_is_empty(tmp_path):
    assert summarize_all(tmp_path) == []


def test_inspect_summary_matches_what_training_recorded(tmp_path):
    run = train_run(tmp_path / "run", epochs=3)
    logs = run.logs

    summary = summarize(tmp_path / "run")

    best = logs.loc[logs["val_loss"].idxmin()]
    assert (summary.epochs_done, summary.epochs_planned) == (3, 3)
    assert summary.best_epoch == int(best["epoch"]) and summary.best_value == best["val_loss"]
    assert summary.command is not None and summary.command["argv"][0] == sys.executable


@pytest.mark.parametrize(
    "fields", [{"settings": ["epochs", 5]}, {"command": "python train.py"}, {"config": 3}]
)
def test_summary_all_reports_metadata_of_the_wrong_shape_beside_the_others(tmp_path, fields):
    write_fake_run(tmp_path / "good")
    broken = write_fake_run(tmp_path / "odd")
    metadata = json.loads((broken / "experiment.json").read_text())
    (broken / "experiment.json").write_text(json.dumps({**metadata, **fields}))

    found = summarize_all(tmp_path)

    assert isinstance(found[0], RunSummary) and found[0].path == tmp_path / "good"
    assert found[1][0] == broken
    assert f'is not the metadata of a run: "{next(iter(fields))}" received' in found[1][1]
