"""The gate of the SLURM tests: a skip with the reason on a laptop, a failure in CI; and the\nthreads that steer several tests' jobs at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.slurm import REQUIRE, JobDrivers, Start, cluster_problem, require_cluster


def test_require_cluster_skips_with_the_reason_where_no_cluster_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(
        pytest.skip.Exception, match="no SLURM cluster: sinfo failed.*slurm_test_cluster.sh start"
    ):
        require_cluster("sinfo failed")


def test_require_cluster_fails_instead_of_skipping_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="CI_REQUIRE_SLURM=1 requires it"):
        require_cluster("sinfo failed")


def test_require_cluster_passes_when_a_cluster_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE, "1")
    require_cluster(None)


def test_cluster_problem_names_missing_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cluster_problem() == "the SLURM commands (sinfo, sbatch) are not installed"


def test_job_drivers_start_first_then_together_then_alone_and_give_each_result(tmp_path: Path) -> None:
    """A ``first`` driver's job pauses before the others start; an ``alone`` one starts once they
    have ended."""
    seen: list[str] = []
    together_may_end = threading.Event()

    def first(folder: Path) -> str:
        (folder / "pause").mkdir(parents=True)
        (folder / "pause" / "ready-9").write_text("0")
        together_may_end.wait(timeout=30)
        return "first"

    def together(folder: Path) -> str:
        seen.append(f"together started, first paused: {(tmp_path / 'first' / 'pause' / 'ready-9').exists()}")
        together_may_end.set()
        return "together"

    def alone(folder: Path) -> list[str]:
        return [*seen, "alone started"]

    drivers = JobDrivers(
        tmp_path, [(alone, Start(alone=True)), (together, Start()), (first, Start(first=True))]
    )
    try:
        assert drivers.result(first) == "first"
        assert drivers.result(together) == "together"
        assert drivers.result(alone) == ["together started, first paused: True", "alone started"]
    finally:
        drivers.close()


def test_job_drivers_raise_what_failed_in_a_driver(tmp_path: Path) -> None:
    def failing(folder: Path) -> None:
        raise AssertionError(f"job of {folder.name} seen at step 7")

    drivers = JobDrivers(tmp_path, [(failing, Start())])
    try:
        with pytest.raises(AssertionError, match="job of failing seen at step 7"):
            drivers.result(failing)
    finally:
        drivers.close()
