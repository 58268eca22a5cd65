"""exp status, ls and resume on runs that a SLURM job trained (experiment.json's ``slurm``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from experiment.errors import RunDirectoryError
from experiment.inspection.resume import plan_resume
from experiment.inspection.summary import summarize
from tests.support.cli import write_fake_run

ARRAY_JOB = {"job_id": "41", "array": "40_3", "restart_count": 2, "partition": "gpu"}


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _job_run(directory: Path, job: dict[str, Any], **options: Any) -> Path:
    """A fake run whose experiment.json records ``job`` as a training call in SLURM does."""
    write_fake_run(directory, **options)
    metadata = json.loads((directory / "experiment.json").read_text())
    (directory / "experiment.json").write_text(json.dumps({**metadata, "slurm": job}))
    return directory


def test_summary_reads_the_slurm_job(tmp_path: Path) -> None:
    summary = summarize(_job_run(tmp_path / "run", ARRAY_JOB))
    assert summary.slurm == ARRAY_JOB
    assert summary.slurm_job() == "job 41 (array element 40_3), partition gpu, restart 2"
    assert summary.to_dict()["slurm"] == ARRAY_JOB
    assert summarize(write_fake_run(tmp_path / "plain")).slurm_job() is None


def test_cli_status_shows_the_slurm_job(tmp_path: Path) -> None:
    job = {"job_id": "7", "array": None, "restart_count": 0, "partition": "debug"}
    result = _invoke("status", str(_job_run(tmp_path / "run", job)))
    assert result.exit_code == 0, result.output
    assert "\nslurm       job 7, partition debug, restart 0\n" in result.output


def test_cli_ls_adds_a_slurm_job_column_where_some_run_has_a_job(tmp_path: Path) -> None:
    _job_run(tmp_path / "a", ARRAY_JOB)
    write_fake_run(tmp_path / "b")
    lines = [line.split() for line in _invoke("ls", str(tmp_path)).output.strip().splitlines()]
    assert lines[0] == ["RUN", "STATUS", "EPOCHS", "BEST", "UPDATED", "SLURM_JOB"]
    assert lines[1][0] == "a" and lines[1][-3:] == ["40_3", "(restart", "2)"]
    assert lines[2][0] == "b" and lines[2][-1] == "-"


def test_resume_refuses_a_slurm_run_and_says_how_to_requeue_it(tmp_path: Path) -> None:
    run_dir = _job_run(tmp_path / "run", ARRAY_JOB, status="interrupted")
    with pytest.raises(
        RunDirectoryError, match=r"trained in SLURM job 40_3.*`scontrol requeue 40_3`.*--here"
    ):
        plan_resume(run_dir)
    result = _invoke("resume", str(run_dir))
    assert result.exit_code == 1
    assert "scontrol requeue 40_3" in result.output


def test_resume_here_reruns_the_command_of_a_slurm_run(tmp_path: Path) -> None:
    command = {"argv": [sys.executable, "-c", "import sys; sys.exit(3)"], "cwd": str(tmp_path)}
    run_dir = _job_run(tmp_path / "run", ARRAY_JOB, status="interrupted", command=command)
    result = _invoke("resume", str(run_dir), "--here")
    assert result.exit_code == 3, result.output
