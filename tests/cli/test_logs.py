"""`exp logs DIR`: the epoch log as a table, CSV or JSON, through pandas."""

from __future__ import annotations

import io
import json

import pandas as pd
from click.testing import CliRunner

from cli.main import cli
from tests.support.cli import write_fake_run


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_cli_logs_prints_a_table_of_every_epoch(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5, 0.7])

    result = _invoke("logs", str(run_dir))

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["epoch", "time", "lr", "loss", "acc", "val_loss", "val_acc"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[2].split()[5] == "0.5"


def test_cli_logs_tail_keeps_the_last_epochs(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5, 0.7, 0.4])

    result = _invoke("logs", str(run_dir), "--tail", "2")

    assert [line.split()[0] for line in result.output.strip().splitlines()[1:]] == ["3", "4"]


def test_cli_logs_csv_reads_back_as_the_log(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5])

    result = _invoke("logs", str(run_dir), "--csv")

    assert pd.read_csv(io.StringIO(result.output)).equals(pd.read_csv(run_dir / "log.tsv", sep="\t"))


def test_cli_logs_json_lists_one_record_per_epoch(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5])

    result = _invoke("logs", str(run_dir), "--json", "--tail", "1")

    assert json.loads(result.output) == [
        {"epoch": 2, "time": 0.5, "lr": 0.1, "loss": 0.6, "acc": 51.0, "val_loss": 0.5, "val_acc": 41.0}
    ]


def test_cli_logs_of_a_run_without_epochs(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[])

    assert _invoke("logs", str(run_dir)).output == f"{run_dir} has no completed epoch yet.\n"
    assert json.loads(_invoke("logs", str(run_dir), "--json").output) == []


def test_cli_logs_errors(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    not_a_run = _invoke("logs", str(tmp_path))
    both = _invoke("logs", str(run_dir), "--csv", "--json")

    assert not_a_run.exit_code == 1 and "is not a run directory" in not_a_run.output
    assert both.exit_code == 2 and "--csv and --json are exclusive" in both.output
    assert _invoke("logs", str(run_dir), "--tail", "0").exit_code == 2


def test_cli_logs_of_a_damaged_log_is_one_line_error(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5])
    (run_dir / "log.tsv").write_bytes((run_dir / "log.tsv").read_bytes().replace(b"0.5", b"0.\xff"))

    result = _invoke("logs", str(run_dir))

    assert result.exit_code == 1
    assert "log.tsv is damaged: it holds bytes that are not UTF-8" in result.output
    assert len(result.output.splitlines()) == 1
