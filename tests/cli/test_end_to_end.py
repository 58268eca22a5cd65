"""Real processes: SIGKILL a training run, `exp resume` it, compare bit for bit with an uninterrupted run.

Two ways to start the run: a training script (its command line is recorded) and `exp run
MODULE:FUNCTION` (the entry point is recorded). Both must resume to the same final state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import (
    exp_command,
    start_and_kill,
    subprocess_env,
    wait_until_ready,
    write_fake_run,
    write_training_module,
)
from tests.support.state_checks import assert_same_run

pytestmark = pytest.mark.slow

#: Checkpoints are committed every 3 steps (4 steps per epoch): step 7 is done after the commit of
#: step 6, in the middle of epoch 2, so the resume is a mid-epoch one.
KILL_AFTER_STEP = 7


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training module and an uninterrupted reference run (3 epochs), shared by the tests."""
    folder = tmp_path_factory.mktemp("e2e")
    write_training_module(folder)
    subprocess.run(
        [sys.executable, "tinytrain.py", "reference"],
        cwd=folder,
        env=subprocess_env(),
        check=True,
        capture_output=True,
    )
    return folder


def _exp(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        exp_command(*args),
        cwd=folder,
        env=subprocess_env(PYTHONPATH=str(folder)),
        capture_output=True,
        text=True,
    )


def test_cli_end_to_end_script_killed_then_resumed_matches_uninterrupted(workdir: Path) -> None:
    code = start_and_kill(
        [sys.executable, "tinytrain.py", "script-run"], cwd=workdir, block_at=KILL_AFTER_STEP
    )
    assert code == -signal.SIGKILL
    status = _exp(workdir, "status", "script-run")
    assert (
        "interrupted" in status.stdout and "6 / 12 optimizer steps (epoch 2: 2 / 4 batches)" in status.stdout
    )

    resumed = _exp(workdir, "resume", "script-run")

    assert resumed.returncode == 0, resumed.stderr
    first_line = resumed.stdout.splitlines()[0]
    assert first_line.endswith(f"{sys.executable} tinytrain.py script-run")
    assert_same_run(workdir / "reference", workdir / "script-run")
    assert json.loads((workdir / "script-run" / "experiment.json").read_text())["status"] == "finished"


def test_cli_end_to_end_entry_point_killed_then_resumed_matches_uninterrupted(workdir: Path) -> None:
    code = start_and_kill(
        exp_command("run", "tinytrain:main", "entry-run", "--", "--epochs", "3"),
        cwd=workdir,
        block_at=KILL_AFTER_STEP,
        PYTHONPATH=str(workdir),
    )
    assert code == -signal.SIGKILL
    recorded = json.loads((workdir / "entry-run" / "experiment.json").read_text())["command"]
    assert recorded == {
        "argv": [sys.executable, "-m", "cli", "run", "tinytrain:main", "entry-run", "--", "--epochs", "3"],
        "cwd": str(workdir),
    }

    resumed = _exp(workdir, "resume", "entry-run")

    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(workdir / "reference", workdir / "entry-run")


#: A stand-in for a training process: reports that it started, commits on SIGTERM, exits with 143.
SIGTERM_CHILD = """
import signal, sys
def stop(signum, frame):
    open("terminated", "w").write("checkpoint committed")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("READY", flush=True)
signal.pause()
"""


def test_cli_end_to_end_resume_passes_sigterm_on_and_returns_the_exit_code(tmp_path: Path) -> None:
    run_dir = write_fake_run(
        tmp_path / "run",
        status="interrupted",
        command={"argv": [sys.executable, "-c", SIGTERM_CHILD], "cwd": str(tmp_path)},
    )
    process = subprocess.Popen(
        exp_command("resume", str(run_dir)),
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until_ready(process)

    process.send_signal(signal.SIGTERM)  # to exp only, as a scheduler's kill would

    process.communicate()
    assert process.returncode == 143
    assert (tmp_path / "terminated").read_text() == "checkpoint committed"
