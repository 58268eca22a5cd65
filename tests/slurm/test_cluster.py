"""The test cluster itself: a batch job runs with SLURM's environment and completes; its script
starts idempotently."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.slurm import ROOT, submit, wait_for_state


def test_cluster_runs_a_batch_job_with_slurm_environment(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/bash\necho "$SLURM_JOB_ID $SLURM_JOB_PARTITION" > out.txt\n')
    job = submit(script, "--output=/dev/null", cwd=tmp_path)
    fields = wait_for_state(job, ("COMPLETED", "FAILED"), timeout=30)
    assert fields["JobState"] == "COMPLETED"
    assert (tmp_path / "out.txt").read_text().split() == [job, "debug"]


def test_cluster_script_start_is_idempotent_and_status_answers() -> None:
    script = ROOT / "scripts" / "slurm_test_cluster.sh"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=60)
    assert (started.returncode, started.stderr.strip()) == (0, "slurm_test_cluster: already running")
    status = subprocess.run([str(script), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "debug*" in status.stdout and "high" in status.stdout


def test_cluster_script_refuses_an_unknown_command() -> None:
    answer = subprocess.run(
        [str(ROOT / "scripts" / "slurm_test_cluster.sh"), "restart"], capture_output=True, text=True
    )
    assert (answer.returncode, answer.stderr.strip()) == (
        2,
        f"usage: {ROOT}/scripts/slurm_test_cluster.sh start|stop|status",
    )
