"""A real time limit (1 minute, enforced on SLURM's 30 s tick): the training, paused at a step, gets
SIGTERM at the limit, commits, requeues the job (its state is COMPLETING with Reason=TimeLimit, not a
cancellation) and the rerun ends bit-identical. The job has no --signal: with a 1-minute limit the
warning would come at every run's first tick (SLURM warns when the time left is at most T + 60 s).

The job waits for its limit while the other tests' jobs run (conftest.py): it costs the session
little more than its own minute and a half."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slurm import TrainJob, assert_same_job_run


def paused_until_the_time_limit(folder: Path) -> TrainJob:
    job = TrainJob(folder, "exec {train} --pause-at 9 --pause-timeout 200", "--requeue", "--time=1")
    job.wait_paused(9)
    assert job.exit_report(0, timeout=150) == {"exit_code": 143, "global_step": 9}
    message = job.metadata()["message"]
    assert message == f"SIGTERM at epoch 1, step 9; job {job.job_id} requeued (restart 1 next)", message
    fields = job.end()
    assert (fields["JobState"], fields["Restarts"]) == ("COMPLETED", "1"), job.log()
    return job


@pytest.mark.slow
@pytest.mark.slurm_job(driver=paused_until_the_time_limit, first=True)
def test_time_limit_sigterm_requeues_and_the_job_ends_identical(
    slurm_job: TrainJob, reference_run: Path
) -> None:
    assert_same_job_run(reference_run, slurm_job.run_dir)
