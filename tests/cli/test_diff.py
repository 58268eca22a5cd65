"""`exp diff DIR_A DIR_B`: configuration and final / best metrics side by side."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli
from tests.support.cli import write_two_fake_runs


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_cli_diff_shows_differences_and_all_metrics(tmp_path):
    a, b = write_two_fake_runs(tmp_path)

    result = _invoke("diff", str(a), str(b))

    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert lines[0] == ["SECTION", "KEY", str(a), str(b)]
    assert ["*", "config", "lr", "0.1", "0.01"] in lines
    assert ["*", "config", "seed", "1", "-"] in lines
    assert ["*", "best", "val_loss", "0.4", "0.7"] in lines
    assert ["best", "epoch", "2", "2"] in lines
    assert not any("model.depth" in line for line in lines)  # equal config is hidden without --all


def test_cli_diff_all_shows_equal_config(tmp_path):
    a, b = write_two_fake_runs(tmp_path)

    result = _invoke("diff", str(a), str(b), "--all")

    assert ["config", "model.depth", "2", "2"] in [line.split() for line in result.output.splitlines()]


def test_cli_diff_errors(tmp_path):
    a, _ = write_two_fake_runs(tmp_path)

    result = _invoke("diff", str(a), str(tmp_path))

    assert result.exit_code == 1 and "is not a run directory" in result.output
    assert _invoke("diff", str(a)).exit_code == 2
