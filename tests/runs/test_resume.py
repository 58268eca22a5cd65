"""plan_resume: the checks made before a recorded command is run again (nothing is run here)."""

from __future__ import annotations

import json
import sys

import pytest

from experiment.errors import ConfigurationError, DirectoryLockedError, RunDirectoryError
from experiment.runs.resume import plan_resume
from experiment.store.directory import RunDirectory
from experiment.store.relaunch import EPOCHS_VARIABLE, RESUME_DIR_VARIABLE
from tests.support.cli import write_fake_run


def _run(tmp_path, **options):
    (tmp_path / "work").mkdir(exist_ok=True)
    command = {"argv": [sys.executable, "train.py", "--lr", "0.1"], "cwd": str(tmp_path / "work")}
    return write_fake_run(tmp_path / "run", command=command, **options)


def test_resume_plan_of_an_interrupted_run_keeps_its_target(tmp_path):
    run_dir = _run(tmp_path, status="interrupted", epochs_done=2, epochs=5)

    plan = plan_resume(run_dir)

    assert plan.argv == [sys.executable, "train.py", "--lr", "0.1"]
    assert plan.cwd == tmp_path / "work"
    assert plan.environment == {RESUME_DIR_VARIABLE: str(run_dir.resolve()), EPOCHS_VARIABLE: "5"}


def test_resume_plan_extends_a_finished_run_to_new_epochs(tmp_path):
    run_dir = _run(tmp_path, status="finished", epochs_done=3, epochs=3)

    assert plan_resume(run_dir, epochs=7).environment[EPOCHS_VARIABLE] == "7"


@pytest.mark.parametrize(
    ("epochs", "match"),
    [
        (0, r"plan_resume: epochs received 0; expected an integer >= 1 or None"),
        (2.5, r"plan_resume: epochs received 2\.5"),
        (True, r"plan_resume: epochs received True"),
        (3, r"--epochs: received 3; the run has already completed 3 epochs"),
    ],
)
def test_resume_plan_refuses_epochs_that_train_nothing(tmp_path, epochs, match):
    run_dir = _run(tmp_path, status="finished", epochs_done=3, epochs=3)

    with pytest.raises(ConfigurationError, match=match):
        plan_resume(run_dir, epochs=epochs)


@pytest.mark.parametrize(
    ("status", "match"),
    [
        ("finished", r"is finished \(3/3 epochs\); nothing to resume"),
        ("stopped", "stopped early by a callback"),
    ],
)
def test_resume_plan_refuses_a_run_that_is_over(tmp_path, status, match):
    run_dir = _run(tmp_path, status=status, epochs_done=3, epochs=3)

    with pytest.raises(ConfigurationError, match=match):
        plan_resume(run_dir)


def test_resume_plan_refuses_a_run_without_a_recorded_command(tmp_path):
    run_dir = _run(tmp_path, status="interrupted")
    metadata = json.loads((run_dir / "experiment.json").read_text())
    (run_dir / "experiment.json").write_text(json.dumps({**metadata, "command": None}))

    with pytest.raises(RunDirectoryError, match="records no command"):
        plan_resume(run_dir)


def test_resume_plan_refuses_a_run_held_by_a_live_process(tmp_path):
    run_dir = _run(tmp_path, status="running")

    with RunDirectory(run_dir).lock(), pytest.raises(DirectoryLockedError, match="in use by a live process"):
        plan_resume(run_dir)
