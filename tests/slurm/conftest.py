"""Every test in tests/slurm submits real jobs to the cluster of scripts/slurm_test_cluster.sh: it
is marked ``slurm``, and skipped where no cluster runs, or fails instead in CI (``CI_REQUIRE_SLURM=1``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.slurm import TRAIN_JOB, cluster_problem, job_environment, require_cluster
from tests.support.torchrun import torchrun_command

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def slurm_problem() -> str | None:
    """Why no cluster runs jobs here (checked once per session), or None."""
    return cluster_problem()


@pytest.fixture(autouse=True)
def slurm_cluster(slurm_problem: str | None) -> None:
    """A running cluster, else a skip, or a failure in CI."""
    require_cluster(slurm_problem)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of tests/slurm/train_job.py that was never interrupted, outside SLURM."""
    run_dir = tmp_path_factory.mktemp("slurm-reference") / "run"
    answer = subprocess.run(
        [sys.executable, str(TRAIN_JOB), str(run_dir)],
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    return run_dir


@pytest.fixture(scope="session")
def reference_two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run in two processes under torchrun, outside SLURM, never interrupted."""
    run_dir = tmp_path_factory.mktemp("slurm-reference-2") / "run"
    answer = subprocess.run(
        torchrun_command(TRAIN_JOB, str(run_dir)),
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    return run_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slurm)
