"""Preemption: a job in the high-priority partition needs the whole node, so SLURM preempts the
training jobs (``PreemptMode=REQUEUE``). With the job's ``--signal`` (sent at preemption under
``preempt_send_user_signal``) the run commits on the warning and requeues itself; without, SIGTERM
alone arrives and SLURM requeues the job itself. Either way it resumes exactly.

One urgent job preempts both training jobs at once (one of each kind); it needs the node to itself,
so its driver runs once the other tests' jobs have ended (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slurm import TrainJob, assert_same_job_run, cancel, submit, wait_for_state

#: The training jobs' options, by the signal that must stop them at preemption.
OPTIONS = {"SIGUSR1": ("--signal=B:USR1@10",), "SIGTERM": ()}


def preempted_both_kinds(folder: Path) -> dict[str, TrainJob]:
    jobs = {
        name: TrainJob(folder / name, "exec {train} --pause-at 9", "--requeue", *options)
        for name, options in OPTIONS.items()
    }
    for job in jobs.values():
        job.wait_paused(9)
    urgent = folder / "urgent.sh"
    urgent.write_text("#!/bin/bash\ntrue\n")
    high = submit(urgent, "--partition=high", "--ntasks=16", "--output=/dev/null", cwd=folder)
    try:
        for signal_name, job in jobs.items():
            assert job.exit_report(0) == {"exit_code": 143, "global_step": 9}
            stopped = job.metadata()["message"]
            assert stopped.startswith(f"{signal_name} at epoch 1, step 9; job {job.job_id} "), stopped
            assert "requeued" in stopped and "not requeued" not in stopped, stopped
        wait_for_state(high, ("COMPLETED",), timeout=60)
        for job in jobs.values():
            fields = job.end()
            assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) >= 1, job.log()
    finally:
        cancel(high)
    return jobs


@pytest.mark.parametrize(
    "signal_name", [pytest.param("SIGUSR1", id="user-signal"), pytest.param("SIGTERM", id="sigterm")]
)
@pytest.mark.slurm_job(driver=preempted_both_kinds, alone=True)
def test_preempted_job_commits_is_requeued_and_ends_identical(
    slurm_job: dict[str, TrainJob], reference_run: Path, signal_name: str
) -> None:
    assert_same_job_run(reference_run, slurm_job[signal_name].run_dir)
