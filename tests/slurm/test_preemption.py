"""Preemption: a job in the high-priority partition needs the whole node, so SLURM preempts the
training job (``PreemptMode=REQUEUE``). With the job's ``--signal`` (sent at preemption under
``preempt_send_user_signal``) the run commits on the warning and requeues itself; without, SIGTERM
alone arrives and SLURM requeues the job itself. Either way it resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slurm import TrainJob, assert_same_job_run, cancel, submit, wait_for_state


@pytest.mark.parametrize(
    ("options", "signal_name"),
    [
        pytest.param(("--signal=B:USR1@10",), "SIGUSR1", id="user-signal"),
        pytest.param((), "SIGTERM", id="sigterm"),
    ],
)
def test_preempted_job_commits_is_requeued_and_ends_identical(
    tmp_path: Path, reference_run: Path, options: tuple[str, ...], signal_name: str
) -> None:
    job = TrainJob(tmp_path / "train", "exec {train} --pause-at 9", "--requeue", *options)
    job.wait_paused(9)
    urgent = tmp_path / "urgent.sh"
    urgent.write_text("#!/bin/bash\ntrue\n")
    high = submit(urgent, "--partition=high", "--ntasks=16", "--output=/dev/null", cwd=tmp_path)
    try:
        assert job.exit_report(0) == {"exit_code": 143, "global_step": 9}
        stopped = job.metadata()["message"]
        assert stopped.startswith(f"{signal_name} at epoch 1, step 9; job {job.job_id} "), stopped
        assert "requeued" in stopped and "not requeued" not in stopped, stopped
        wait_for_state(high, ("COMPLETED",), timeout=60)
        fields = job.end()
    finally:
        cancel(high)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) >= 1, job.log()
    assert_same_job_run(reference_run, job.run_dir)
