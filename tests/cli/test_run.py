"""`exp run MODULE:FUNCTION DIR -- ARGS`: call a function of the user's code and record it for resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from experiment.errors import ConfigurationError
from experiment.inspection.entry_points import entry_point_command, load_entry_point, parse_entry_point
from experiment.store.relaunch import current_command, recording_command
from tests.support.cli import write_training_module


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The training module and a small module of broken entry points, in the working directory."""
    write_training_module(tmp_path)
    (tmp_path / "entries.py").write_text(
        "from experiment.errors import ConfigurationError\n"
        "def fail(directory, *args):\n"
        "    raise ConfigurationError(f'lr: received {args[0]!r};\\nexpected a float.')\n"
        "def show(directory, *args):\n"
        "    print(type(directory).__name__, directory, list(args))\n"
        "not_callable = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # exp run puts the working directory first
    for name in ("tinytrain", "entries"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_cli_run_calls_the_function_with_the_directory_and_arguments(user_code):
    result = CliRunner().invoke(cli, ["run", "entries:show", "runs/a", "--", "--lr", "0.1"])

    assert result.exit_code == 0, result.output
    assert result.output == "PosixPath runs/a ['--lr', '0.1']\n"


def test_cli_run_records_a_command_that_calls_the_entry_point_again(user_code):
    result = CliRunner().invoke(cli, ["run", "tinytrain:main", "runs/a", "--", "--epochs", "1"])

    assert result.exit_code == 0, result.output
    metadata = json.loads((user_code / "runs" / "a" / "experiment.json").read_text())
    assert metadata["command"] == {
        "argv": [sys.executable, "-m", "cli", "run", "tinytrain:main", "runs/a", "--", "--epochs", "1"],
        "cwd": str(user_code),
    }
    assert metadata["status"] == "finished" and metadata["settings"]["epochs"] == 1


def test_cli_run_turns_a_library_error_into_one_line(user_code):
    result = CliRunner().invoke(cli, ["run", "entries:fail", "runs/a", "--", "fast"])

    assert result.exit_code == 1
    assert result.output == "Error: lr: received 'fast'; expected a float.\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere:main", "cannot import 'nowhere'"),
        ("entries:missing", "entries has no callable 'missing'"),
        ("entries:not_callable", "entries has no callable 'not_callable'"),
    ],
)
def test_cli_run_reports_an_entry_point_that_cannot_be_loaded(user_code, spec, message):
    result = CliRunner().invoke(cli, ["run", spec, "runs/a"])

    assert result.exit_code == 1
    assert message in result.output
    assert not (user_code / "runs").exists()


@pytest.mark.parametrize("spec", ["entries", "entries:", ":main", "entries:ma-in", "1abc:main"])
def test_cli_run_rejects_a_malformed_entry_point_as_bad_usage(user_code, spec):
    result = CliRunner().invoke(cli, ["run", spec, "runs/a"])

    assert result.exit_code == 2
    assert "expected MODULE:FUNCTION" in result.output


def test_entry_point_parse_splits_module_and_function():
    assert parse_entry_point("pkg.train:main") == ("pkg.train", "main")
    assert parse_entry_point("pkg:Trainer.run") == ("pkg", "Trainer.run")
    with pytest.raises(ConfigurationError, match=r"received 'pkg'; expected MODULE:FUNCTION"):
        parse_entry_point("pkg")


def test_entry_point_load_returns_the_function(user_code):
    sys.path.insert(0, str(user_code))
    assert load_entry_point("tinytrain:main").__name__ == "main"


def test_entry_point_command_is_recorded_only_inside_the_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = entry_point_command("pkg:main", "runs/a", ["x"])
    with recording_command(command):
        assert current_command() == command
    assert current_command()["argv"][1:] == sys.orig_argv[1:]
