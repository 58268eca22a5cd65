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
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Runs of tests/slurm/train_job.py never interrupted, outside SLURM, by number of processes:
    one process, and two under torchrun (both trained at once, while the first test waits)."""
    folder = tmp_path_factory.mktemp("slurm-references")
    commands = {
        1: [sys.executable, str(TRAIN_JOB), str(folder / "one")],
        2: torchrun_command(TRAIN_JOB, str(folder / "two")),
    }
    outputs = {size: open(folder / f"{size}.out", "wb") for size in commands}  # noqa: SIM115
    processes = {
        size: subprocess.Popen(command, env=job_environment(), stdout=outputs[size], stderr=subprocess.STDOUT)
        for size, command in commands.items()
    }
    for size, process in processes.items():
        code = process.wait(timeout=300)
        outputs[size].close()
        assert code == 0, (folder / f"{size}.out").read_text()
    return {1: folder / "one", 2: folder / "two"}


@pytest.fixture(scope="session")
def reference_run(references: dict[int, Path]) -> Path:
    """The run of tests/slurm/train_job.py in one process, never interrupted."""
    return references[1]


@pytest.fixture(scope="session")
def reference_two_ranks(references: dict[int, Path]) -> Path:
    """The same run in two processes under torchrun, never interrupted."""
    return references[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slurm)
