"""`exp resume`: the recorded command is printed, run in its folder, and its exit code passed on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from experiment.errors import ConfigurationError
from experiment.inspection.resume import plan_resume
from experiment.store.directory import RunDirectory
from experiment.store.relaunch import EPOCHS_VARIABLE, RESUME_DIR_VARIABLE, epochs_from_environment
from tests.support.cli import exp_command, subprocess_env, write_fake_run, write_training_module
from tests.support.training import assert_same_training_state, train_run

#: A child that writes what exp resume gave it (working directory, environment) and exits with 3.
REPORTING_CHILD = (
    "import json, os, sys; json.dump({'cwd': os.getcwd(), 'dir': os.environ.get('EXPERIMENT_RESUME_DIR'),"
    " 'epochs': os.environ.get('EXPERIMENT_EPOCHS')}, open('child.json', 'w')); sys.exit(3)"
)


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _reporting_run(tmp_path: Path, **options: object) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = {"argv": [sys.executable, "-c", REPORTING_CHILD], "cwd": str(workdir)}
    return write_fake_run(tmp_path / "run", command=command, **options)  # type: ignore[arg-type]


def test_cli_resume_runs_the_recorded_command_in_its_folder_and_passes_its_exit_code(tmp_path):
    run_dir = _reporting_run(tmp_path, status="interrupted", epochs_done=2, epochs=5)

    result = _invoke("resume", str(run_dir))

    assert result.exit_code == 3
    assert result.output.splitlines()[0].startswith(f"cd {tmp_path / 'work'} && ")
    assert sys.executable in result.output.splitlines()[0]
    child = json.loads((tmp_path / "work" / "child.json").read_text())
    assert child == {"cwd": str(tmp_path / "work"), "dir": str(run_dir.resolve()), "epochs": "5"}


def test_cli_resume_epochs_raises_the_target_of_a_finished_run(tmp_path):
    run_dir = _reporting_run(tmp_path, status="finished", epochs_done=5, epochs=5)

    result = _invoke("resume", str(run_dir), "--epochs", "8")

    assert result.exit_code == 3
    assert "EXPERIMENT_EPOCHS=8" in result.output
    assert json.loads((tmp_path / "work" / "child.json").read_text())["epochs"] == "8"


def test_cli_resume_dry_run_prints_without_running(tmp_path):
    run_dir = _reporting_run(tmp_path, status="failed", message="ValueError: boom")

    result = _invoke("resume", str(run_dir), "--dry-run")

    assert result.exit_code == 0
    assert REPORTING_CHILD[:20] in result.output
    assert not (tmp_path / "work" / "child.json").exists()


def test_cli_resume_refuses_a_finished_run_without_epochs(tmp_path):
    run_dir = _reporting_run(tmp_path, status="finished", epochs_done=5, epochs=5)

    result = _invoke("resume", str(run_dir))

    assert result.exit_code == 1
    assert "is finished (5/5 epochs); nothing to resume. Pass --epochs N with N > 5" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_cli_resume_refuses_epochs_not_above_those_done(tmp_path):
    run_dir = _reporting_run(tmp_path, status="finished", epochs_done=5, epochs=5)

    result = _invoke("resume", str(run_dir), "--epochs", "5")

    assert result.exit_code == 1
    assert "--epochs: received 5; the run has already completed 5 epochs" in result.output


def test_cli_resume_refuses_a_run_stopped_early(tmp_path):
    run_dir = _reporting_run(tmp_path, status="stopped", epochs_done=3, epochs=10)

    result = _invoke("resume", str(run_dir), "--epochs", "20")

    assert result.exit_code == 1
    assert "was stopped early by a callback at epoch 3" in result.output


def test_cli_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = _invoke("resume", str(tmp_path))

    assert result.exit_code == 1
    assert (
        result.output == f"Error: {tmp_path} is not a run directory: it has no experiment.json. "
        "Pass the directory an Experiment was created with.\n"
    )


def test_cli_resume_refuses_a_run_locked_by_a_live_process(tmp_path):
    run_dir = _reporting_run(tmp_path, status="running")
    with RunDirectory(run_dir).lock():  # this process plays the live training process
        result = _invoke("resume", str(run_dir))

    assert result.exit_code == 1
    assert f"is in use by a live process (pid {os.getpid()} on host" in result.output
    assert not (tmp_path / "work" / "child.json").exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({}, "records no command"),
        (
            {"argv": ["/no/such/python", "train.py"], "cwd": "/"},
            "The recorded interpreter /no/such/python no longer exists",
        ),
        (
            {"argv": [sys.executable, "train.py"], "cwd": "/no/such/folder"},
            "The recorded working directory /no/such/folder no longer exists",
        ),
    ],
)
def test_cli_resume_refuses_a_command_that_cannot_run(tmp_path, command, message):
    run_dir = write_fake_run(tmp_path / "run", status="interrupted")
    metadata = json.loads((run_dir / "experiment.json").read_text())
    metadata["command"] = command
    (run_dir / "experiment.json").write_text(json.dumps(metadata))

    result = _invoke("resume", str(run_dir))

    assert result.exit_code == 1
    assert message in result.output


def test_cli_resume_bad_usage_exits_with_2(tmp_path):
    assert _invoke("resume").exit_code == 2
    assert _invoke("resume", str(tmp_path), "--epochs", "0").exit_code == 2


def test_cli_resume_help_warns_that_resuming_runs_the_recorded_command():
    result = _invoke("resume", "--help")

    assert result.exit_code == 0
    assert "resuming a directory you did not create runs" in " ".join(result.output.split())


def test_resume_plan_describes_the_command_with_its_variables(tmp_path):
    run_dir = _reporting_run(tmp_path, status="interrupted", epochs_done=1, epochs=4)

    plan = plan_resume(run_dir)

    assert plan.environment == {RESUME_DIR_VARIABLE: str(run_dir.resolve()), EPOCHS_VARIABLE: "4"}
    assert plan.cwd == tmp_path / "work"
    assert f"EXPERIMENT_EPOCHS=4 {sys.executable} -c" in plan.describe()


def test_resume_epochs_from_environment_applies_to_the_named_directory_only(tmp_path, monkeypatch):
    monkeypatch.setenv(RESUME_DIR_VARIABLE, str(tmp_path / "a"))
    monkeypatch.setenv(EPOCHS_VARIABLE, "9")
    monkeypatch.chdir(tmp_path)

    assert epochs_from_environment(Path("a"), 3) == 9
    assert epochs_from_environment(tmp_path / "b", 3) == 3
    monkeypatch.delenv(RESUME_DIR_VARIABLE)
    assert epochs_from_environment(tmp_path / "a", 3) == 3


def test_resume_epochs_from_environment_rejects_a_bad_value(tmp_path, monkeypatch):
    monkeypatch.setenv(RESUME_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setenv(EPOCHS_VARIABLE, "ten")

    with pytest.raises(ConfigurationError, match=r"EXPERIMENT_EPOCHS: received 'ten'; expected a positive"):
        epochs_from_environment(tmp_path, 3)


def test_resume_epochs_from_environment_extends_a_finished_run_like_a_longer_one(run_dirs, monkeypatch):
    straight, extended = run_dirs
    expected = train_run(straight, epochs=4)
    train_run(extended, epochs=3)
    monkeypatch.setenv(RESUME_DIR_VARIABLE, str(extended))
    monkeypatch.setenv(EPOCHS_VARIABLE, "4")

    actual = train_run(extended, epochs=3)  # the script still says 3; exp resume --epochs 4 says 4

    assert len(actual.logs) == 4
    assert json.loads((extended / "experiment.json").read_text())["settings"]["epochs"] == 4
    assert_same_training_state(expected, actual)


# ---------------------------------------------------------------------------- what is shown
DECOY = "\x1b[2K\r" + "echo harmless"


def _crafted_run(tmp_path: Path) -> Path:
    workdir = tmp_path / "work\nrm -rf ~"
    workdir.mkdir()
    command = {"argv": [sys.executable, "-c", "pass", f"rm -rf ~ #{DECOY}", "a\tb"], "cwd": str(workdir)}
    return write_fake_run(tmp_path / "run", status="interrupted", command=command)


def test_cli_resume_dry_run_escapes_control_characters(tmp_path):
    run_dir = _crafted_run(tmp_path)

    result = _invoke("resume", str(run_dir), "--dry-run")

    assert result.exit_code == 0, result.output
    assert not any(char in result.output for char in "\x1b\r\t")
    assert len(result.output.splitlines()) == 1
    assert r"$'rm -rf ~ #\x1b[2K\recho harmless'" in result.output
    assert f"cd $'{tmp_path}/work\\nrm -rf ~' && " in result.output
    assert plan_resume(run_dir).argv[3] == f"rm -rf ~ #{DECOY}"  # what runs is what was recorded


def test_cli_status_escapes_control_characters(tmp_path):
    run_dir = _crafted_run(tmp_path)

    result = _invoke("status", str(run_dir))

    assert result.exit_code == 0, result.output
    assert not any(char in result.output for char in "\x1b\r\t")
    assert r"\x1b[2K\recho harmless" in result.output and r"work\nrm -rf ~" in result.output


def test_cli_resume_of_a_copied_run_trains_the_copy(tmp_path):
    write_training_module(tmp_path)
    env = subprocess_env(PYTHONPATH=str(tmp_path))
    subprocess.run(
        exp_command("run", "tinytrain:main", "runs/a", "--", "--epochs", "1"),
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "b")
    before = (tmp_path / "runs" / "a" / "log.tsv").read_text()

    result = subprocess.run(
        exp_command("resume", "b", "--epochs", "2"), cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# b was created as {tmp_path / 'runs' / 'a'}: ")
    assert len((tmp_path / "b" / "log.tsv").read_text().splitlines()) == 3  # header and 2 epochs
    assert (tmp_path / "runs" / "a" / "log.tsv").read_text() == before
