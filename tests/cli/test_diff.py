"""`exp diff DIR_A DIR_B`: configuration and final / best metrics side by side."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli
from experiment import Experiment
from tests.support.cli import write_two_fake_runs
from tests.support.training import make_data, make_network, train_run


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


def test_cli_diff_shows_what_the_runs_were_created_with(tmp_path):
    train_run(tmp_path / "a", epochs=1)  # SGD(lr=0.1, momentum=0.9), batches of 16
    exp = Experiment(
        tmp_path / "b",
        make_network(),
        optimizer="adam",
        loss_function="cross_entropy",
        accumulate_grad_batches=2,
    )
    exp.train(make_data(), epochs=1, batch_size=16, progress=False)

    lines = [
        line.split() for line in _invoke("diff", str(tmp_path / "a"), str(tmp_path / "b")).output.splitlines()
    ]
    every = _invoke("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--all").output
    every_line = [line.split() for line in every.splitlines()]

    assert ["*", "created_with", "optimizer_class", "torch.optim.sgd.SGD", "torch.optim.adam.Adam"] in lines
    assert ["*", "created_with", "optimizer.lr", "0.1", "0.001"] in lines
    assert ["*", "created_with", "optimizer.momentum", "0.9", "-"] in lines
    assert ["*", "created_with", "accumulate_grad_batches", "1", "2"] in lines
    assert not any(line[1:3] == ["created_with", "precision"] for line in lines)  # equal: hidden
    assert ["created_with", "precision", "32-true", "32-true"] in every_line
    assert ["created_with", "data.train_data.batch_size", "16", "16"] in every_line
