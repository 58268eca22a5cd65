"""Real jobs on the test cluster: a stop signal commits, the job requeues itself (or ends) and the
requeued job resumes exactly. Each test pauses training at known steps and signals the job's batch
shell directly (``scancel --signal=... --batch``), instead of waiting for a time limit.

Each test's driver steers its job while it runs (and asserts what must be seen then); the drivers of
all the tests run at once (conftest.py), and each test checks its job once it has ended.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.slurm import TrainJob, assert_same_job_run, job_fields

#: A batch script as the README shows it (the warning itself is sent by the tests).
EXEC = "exec {train} --pause-at {steps}"


def warning_then_sigterm(folder: Path) -> TrainJob:
    job = TrainJob(folder, EXEC.format(train="{train}", steps="5,22"), "--requeue", "--signal=B:USR1@10")
    for restart, (step, name) in enumerate(((5, "USR1"), (22, "TERM"))):
        assert job.wait_paused(step) == str(restart)
        job.signal(name)
        assert job.exit_report(restart) == {"exit_code": 143, "global_step": step}
        stop = job.metadata()["message"]
        assert stop.endswith(f"; job {job.job_id} requeued (restart {restart + 1} next)"), stop
    fields = job.end()
    assert (fields["JobState"], fields["Restarts"]) == ("COMPLETED", "2"), job.log()
    return job


@pytest.mark.slurm_job(driver=warning_then_sigterm)
def test_warning_then_sigterm_requeue_the_job_twice_and_it_ends_identical(
    slurm_job: TrainJob, reference_run: Path
) -> None:
    """The warning signal in the first run; SIGTERM alone in the second (a time limit or a stop
    without a warning: no --signal needed). Each commits, requeues, and the third run ends."""
    job = slurm_job
    assert job.exit_report(2) == {"exit_code": 0, "global_step": 36}
    metadata = job.metadata()
    assert metadata["status"] == "finished"
    assert metadata["slurm"] == {
        "job_id": job.job_id,
        "array": None,
        "restart_count": 2,
        "partition": "debug",
    }
    # The weights bit-identical, each log.tsv row and TensorBoard scalar exactly once.
    assert_same_job_run(reference_run, job.run_dir)


def scancel_at_step_9(folder: Path) -> TrainJob:
    job = TrainJob(folder, EXEC.format(train="{train}", steps="9"), "--requeue")
    job.wait_paused(9)
    user_scancel(job.job_id)
    assert job.exit_report(0) == {"exit_code": 143, "global_step": 9}
    fields = job.end()
    assert (fields["JobState"], fields["Restarts"]) == ("CANCELLED", "0"), job.log()
    return job


@pytest.mark.slurm_job(driver=scancel_at_step_9)
def test_scancel_ends_the_job_interrupted_without_requeue(slurm_job: TrainJob) -> None:
    job = slurm_job
    metadata = job.metadata()
    assert metadata["status"] == "interrupted"
    assert metadata["message"] == (
        f"SIGTERM at epoch 1, step 9; job {job.job_id} was cancelled (state COMPLETING): not requeued"
    )


def no_requeue_warning_at_step_9(folder: Path) -> TrainJob:
    job = TrainJob(folder, EXEC.format(train="{train}", steps="9"), "--no-requeue")
    job.wait_paused(9)
    job.signal("USR1")
    assert job.exit_report(0) == {"exit_code": 143, "global_step": 9}
    fields = job.end()
    assert (fields["JobState"], fields["Restarts"], fields["ExitCode"]) == ("FAILED", "0", "143:0")
    return job


@pytest.mark.slurm_job(driver=no_requeue_warning_at_step_9)
def test_no_requeue_job_commits_and_says_why(slurm_job: TrainJob) -> None:
    job = slurm_job
    metadata = job.metadata()
    assert metadata["status"] == "interrupted"
    assert metadata["message"].startswith(
        f"SIGUSR1 at epoch 1, step 9; not requeued: `scontrol requeue {job.job_id}` failed with exit code 1"
    ), metadata["message"]


def array_element_warned(folder: Path) -> TrainJob:
    body = (
        'pause=""; [ "$SLURM_ARRAY_TASK_ID" = 1 ] && pause="--pause-at 9"\n'
        "exec {train}-$SLURM_ARRAY_TASK_ID $pause"
    )
    job = TrainJob(folder, body, "--requeue", "--array=0-1")
    job.run_dir = folder / "run-1"
    element = f"{job.job_id}_1"
    job.wait_paused(9)
    job.signal("USR1", job_id=element)
    first = job.end(job_id=f"{job.job_id}_0")
    fields = job.end(job_id=element)
    assert (first["JobState"], first["Restarts"]) == ("COMPLETED", "0"), job.log()
    assert (fields["JobState"], fields["Restarts"]) == ("COMPLETED", "1"), job.log()
    return job


@pytest.mark.slurm_job(driver=array_element_warned)
def test_array_element_requeues_itself_only(slurm_job: TrainJob, reference_run: Path) -> None:
    job = slurm_job
    assert job.metadata()["slurm"]["array"] == f"{job.job_id}_1"
    assert_same_job_run(reference_run, job.folder / "run-0")
    assert_same_job_run(reference_run, job.folder / "run-1")


def user_scancel(job_id: str) -> None:
    """A user's plain ``scancel``: SIGCONT+SIGTERM to every process of the job, SIGKILL later."""
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert job_fields(job_id)["JobState"] in ("CANCELLED", "COMPLETING")
