"""Several processes in one job: ``srun -n2`` without torchrun (the library forms the process group
from SLURM's variables) and torchrun inside a job. Either way a requeued run ends bit-identical to
an uninterrupted two-process run under torchrun. Each driver steers its job while the other tests'
jobs run (conftest.py); the test checks the job once it has ended."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slurm import TrainJob, assert_same_job_run


def two_ranks_signalled(folder: Path, command: str, signal: str, *options: str) -> TrainJob:
    """A 2-rank job of ``command`` (with sbatch ``options``) paused at step 5 and sent ``signal``
    (``--signal=B:SIGNAL@10``): both ranks stop together, the job is requeued once and completes."""
    job = TrainJob(folder, f"exec {command} --pause-at 5", "--requeue", *options, f"--signal=B:{signal}@10")
    job.wait_paused(5)
    job.signal(signal)
    assert_stopped_together(job, after=5)
    fields = job.end()
    assert (fields["JobState"], fields["Restarts"]) == ("COMPLETED", "1"), job.log()
    return job


def srun_two_ranks_warned(folder: Path) -> TrainJob:
    return two_ranks_signalled(folder, "srun {train}", "USR1", "-n2")  # srun starts two tasks


@pytest.mark.slurm_job(driver=srun_two_ranks_warned)
def test_srun_two_ranks_form_the_group_requeue_and_end_identical(
    slurm_job: TrainJob, reference_two_ranks: Path
) -> None:
    """``--signal=B:USR1``: the batch shell is srun, which passes USR1 on to both tasks."""
    assert_same_job_run(reference_two_ranks, slurm_job.run_dir)


def torchrun_in_a_job_terminated(folder: Path) -> TrainJob:
    return two_ranks_signalled(folder, "{torchrun}", "TERM")


@pytest.mark.slurm_job(driver=torchrun_in_a_job_terminated)
def test_torchrun_in_a_job_requeues_on_term_and_ends_identical(
    slurm_job: TrainJob, reference_two_ranks: Path
) -> None:
    """``--signal=B:TERM@T``: torchrun's agent passes SIGTERM on to its workers (it would die of USR1)."""
    assert_same_job_run(reference_two_ranks, slurm_job.run_dir)


def assert_stopped_together(job: TrainJob, *, after: int) -> None:
    """Both ranks committed at the same step (the first agreement at or after ``after``), exit 143."""
    reports = [job.exit_report(0, rank) for rank in (0, 1)]
    assert reports[0] == reports[1], reports
    assert reports[0]["exit_code"] == 143 and reports[0]["global_step"] >= after, reports
