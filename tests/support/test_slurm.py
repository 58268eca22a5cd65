"""The gate of the SLURM tests: a skip with the reason on a laptop, a failure in CI."""

from __future__ import annotations

import pytest

from tests.support.slurm import REQUIRE, cluster_problem, require_cluster


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
