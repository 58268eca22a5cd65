"""The real one-node SLURM cluster of scripts/slurm_test_cluster.sh, seen from the tests: whether it
runs (skip, or fail in CI), submitting a batch job, reading its state, and waiting for it.

Job states are read with ``scontrol show job`` (the test cluster has no accounting, so no sacct);
finished jobs stay visible for ``MinJobAge`` = 10 minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: The environment variable that turns "no cluster" from a skip into a failure (.ci/run sets it).
REQUIRE = "CI_REQUIRE_SLURM"
START = "scripts/slurm_test_cluster.sh start"


def cluster_problem() -> str | None:
    """Why no SLURM cluster can run jobs here, or None when one can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "the SLURM commands (sinfo, sbatch) are not installed"
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 10 s"
    states = answer.stdout.split()
    if answer.returncode != 0:
        return f"sinfo failed: {answer.stderr.strip()}"
    if not any(state.startswith(("idle", "mixed", "alloc")) for state in states):
        return f"no node is usable (sinfo states: {states})"
    return None


def require_cluster(problem: str | None) -> None:
    """Skip the test with ``problem`` as the reason, or fail it when CI requires the cluster."""
    if problem is None:
        return
    message = f"no SLURM cluster: {problem}; start one with `{START}` (as root)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message}; {REQUIRE}=1 requires it", pytrace=False)
    pytest.skip(message)


def submit(script: Path, *options: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """``sbatch --parsable`` of ``script`` with ``options``; the job id (``12``, or ``12_3``)."""
    answer = subprocess.run(
        ["sbatch", "--parsable", *options, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
        check=True,
    )
    return answer.stdout.strip().split(";")[0]


def job_fields(job_id: str) -> dict[str, str]:
    """The ``Key=Value`` fields of ``scontrol show job`` (JobState, Restarts, ExitCode...)."""
    answer = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30, check=True
    )
    return dict(re.findall(r"(\w+)=(\S*)", answer.stdout))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s until true; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_for_state(job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, str]:
    """The job's fields once its state is one of ``states``."""
    fields: dict[str, str] = {}

    def reached() -> bool:
        nonlocal fields
        fields = job_fields(job_id)
        return fields.get("JobState") in states

    wait_until(reached, timeout, f"job {job_id} to be {'/'.join(states)} (last seen: {fields})")
    return fields


def cancel(job_id: str) -> None:
    """Cancel the job and its steps, whatever its state (cleanup)."""
    subprocess.run(["scancel", "--full", job_id], capture_output=True, timeout=30)
