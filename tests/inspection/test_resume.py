"""plan_resume: the checks made before a recorded command is run again (nothing is run here)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from experiment.errors import ConfigurationError, DirectoryLockedError, RunDirectoryError
from experiment.inspection.resume import plan_resume
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


# ------------------------------------------------------------------------ moved or copied runs
def _recorded_in(run_dir, *, directory=None, argv_dir="runs/original", **command):
    """Make run_dir's experiment.json say it was created as ``directory`` by ``train.py ARGV_DIR``."""
    metadata = json.loads((run_dir / "experiment.json").read_text())
    metadata["command"] = {"argv": [sys.executable, "train.py", argv_dir, "--lr", "0.1"], **command}
    if directory is not None:
        metadata["directory"] = str(directory)
    (run_dir / "experiment.json").write_text(json.dumps(metadata))
    return run_dir


def _moved(tmp_path, *, keep_original=False, **options):
    work = tmp_path / "work"
    original = write_fake_run(work / "runs" / "original", status="interrupted", epochs_done=2, epochs=5)
    _recorded_in(original, directory=original.resolve(), cwd=str(work), **options)
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    shutil.copytree(original, moved)
    if not keep_original:
        shutil.rmtree(original)
    return original, moved


@pytest.mark.parametrize("keep_original", [False, True])  # moved, or copied
def test_resume_plan_of_a_moved_run_names_its_new_directory(tmp_path, keep_original):
    original, moved = _moved(tmp_path, keep_original=keep_original)

    plan = plan_resume(moved)

    assert plan.argv == [sys.executable, "train.py", str(moved.resolve()), "--lr", "0.1"]
    assert plan.environment[RESUME_DIR_VARIABLE] == str(moved.resolve())
    assert f"was created as {original.resolve()}" in plan.note
    assert plan.describe().startswith(f"# {plan.note}\ncd ")


def test_resume_plan_of_a_run_in_place_has_no_note(tmp_path):
    original, _ = _moved(tmp_path, keep_original=True)

    plan = plan_resume(original)

    assert plan.argv[2] == "runs/original" and plan.note is None
    assert plan.describe().startswith("cd ")


@pytest.mark.parametrize(
    "argv_dir",
    ["runs/other", "runs/original/../original/"],  # names no such directory / the same one twice below
)
def test_resume_plan_of_a_moved_run_refuses_a_command_it_cannot_rewrite(tmp_path, argv_dir):
    work = tmp_path / "work"
    original = write_fake_run(work / "runs" / "original", status="interrupted", epochs_done=2, epochs=5)
    _recorded_in(original, directory=original.resolve(), cwd=str(work), argv_dir=argv_dir)
    if argv_dir.endswith("/"):  # a second word naming the directory: which one to replace?
        metadata = json.loads((original / "experiment.json").read_text())
        metadata["command"]["argv"] += ["--log-dir", "runs/original"]
        (original / "experiment.json").write_text(json.dumps(metadata))
    moved = tmp_path / "moved"
    shutil.move(original, moved)

    with pytest.raises(ConfigurationError, match=r"was moved or copied: it was created as .*original"):
        plan_resume(moved)


def test_resume_plan_of_an_older_copy_without_a_recorded_directory_finds_its_original(tmp_path):
    work = tmp_path / "work"
    original = write_fake_run(work / "runs" / "original", status="interrupted", epochs_done=2, epochs=5)
    _recorded_in(original, cwd=str(work))  # runs created before "directory" was recorded
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    write_fake_run(work / "runs" / "init", status="finished")
    unrelated = _recorded_in(work / "runs" / "init", cwd=str(work), argv_dir="runs/init")

    plan = plan_resume(copy)

    assert plan.argv[2] == str(copy.resolve()) and "was created as" in plan.note
    assert plan_resume(original).note is None
    assert plan_resume(unrelated, epochs=9).note is None


def test_resume_plan_of_an_older_run_ignores_another_run_its_command_names(tmp_path):
    work = tmp_path / "work"
    write_fake_run(work / "runs" / "original", status="finished")  # say, the weights it starts from
    run_dir = write_fake_run(tmp_path / "finetune", status="interrupted", epochs_done=2, epochs=5)
    _recorded_in(run_dir, cwd=str(work))  # train.py runs/original, its own directory hard-coded

    assert plan_resume(run_dir).argv[2] == "runs/original"


def test_resume_plan_of_a_torchrun_run_reruns_torchrun(tmp_path):
    (tmp_path / "work").mkdir()
    argv = [sys.executable, "/usr/bin/torchrun", "--nproc_per_node=2", "train.py", "runs/x"]
    run_dir = write_fake_run(
        tmp_path / "run", command={"argv": argv, "cwd": str(tmp_path / "work")}, status="interrupted"
    )

    assert plan_resume(run_dir).argv == argv


def test_resume_plan_of_a_run_on_several_nodes_says_to_resubmit_the_job(tmp_path):
    (tmp_path / "work").mkdir()
    argv = [sys.executable, "/usr/bin/torchrun", "--nnodes=2", "--nproc_per_node=8", "train.py"]
    command = {"argv": argv, "cwd": str(tmp_path / "work"), "nodes": 2}
    run_dir = write_fake_run(tmp_path / "run", command=command, status="interrupted")

    with pytest.raises(RunDirectoryError, match=r"2 nodes.*resubmit the job.*--nnodes=2"):
        plan_resume(run_dir)
