"""Every test in tests/slurm submits real jobs to the cluster of scripts/slurm_test_cluster.sh: it
is marked ``slurm``, and skipped where no cluster runs, or fails instead in CI (``CI_REQUIRE_SLURM=1``).

A test whose jobs wait for SLURM names their driver with ``@pytest.mark.slurm_job(driver=...)``
(with ``first=True`` or ``alone=True``: see ``Start`` in tests/support/slurm.py) and reads what it
returned from the ``slurm_job`` fixture: the drivers of every selected test start together when the
first of them is needed (``JobDrivers``), so that their jobs' waits overlap.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.slurm import (
    TRAIN_JOB,
    JobDrivers,
    Start,
    cluster_problem,
    job_environment,
    require_cluster,
)
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
def slurm_jobs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, slurm_problem: str | None
) -> Iterator[JobDrivers]:
    """The drivers named by the ``slurm_job`` marks of the selected tests, started."""
    require_cluster(slurm_problem)
    marks = (item.get_closest_marker("slurm_job") for item in request.session.items)
    drivers = [
        (
            mark.kwargs["driver"],
            Start(**{key: value for key, value in mark.kwargs.items() if key != "driver"}),
        )
        for mark in marks
        if mark is not None
    ]
    jobs = JobDrivers(tmp_path_factory.mktemp("slurm-jobs"), drivers)
    yield jobs
    jobs.close()


@pytest.fixture
def slurm_job(request: pytest.FixtureRequest, slurm_jobs: JobDrivers) -> Any:
    """What the driver of this test's ``slurm_job`` mark returned once its jobs ended."""
    mark = request.node.get_closest_marker("slurm_job")
    assert mark is not None, f"{request.node.name} uses slurm_job without a slurm_job mark"
    return slurm_jobs.result(mark.kwargs["driver"])


@pytest.fixture(scope="session")
def references(slurm_jobs: JobDrivers, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Runs of tests/slurm/train_job.py never interrupted, outside SLURM, by number of processes:
    one process, and two under torchrun (both trained at once, while the jobs of ``slurm_jobs``,
    started first, wait)."""
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
