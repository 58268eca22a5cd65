"""The test cluster itself: a batch job runs with SLURM's environment and completes."""

from __future__ import annotations

from pathlib import Path

from tests.support.slurm import submit, wait_for_state


def test_cluster_runs_a_batch_job_with_slurm_environment(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/bash\necho "$SLURM_JOB_ID $SLURM_JOB_PARTITION" > out.txt\n')
    job = submit(script, "--output=/dev/null", cwd=tmp_path)
    fields = wait_for_state(job, ("COMPLETED", "FAILED"), timeout=30)
    assert fields["JobState"] == "COMPLETED"
    assert (tmp_path / "out.txt").read_text().split() == [job, "debug"]
