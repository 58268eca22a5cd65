"""The `exp` group: help on every command, version, exit codes of bad usage."""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from cli.main import cli
from experiment import __version__
from tests.support.cli import exp_command, subprocess_env, write_fake_run

COMMANDS = ["resume", "run", "status", "ls", "logs", "plot", "diff", "clean"]


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])

    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: cli {command} ")
    assert len(result.output.splitlines()) > 4


def test_cli_group_lists_every_command_and_its_version():
    listing = CliRunner().invoke(cli, ["--help"])
    version = CliRunner().invoke(cli, ["--version"])

    assert all(f"  {command} " in listing.output for command in COMMANDS)
    assert version.output == f"exp, version {__version__}\n"


def test_cli_unknown_command_or_option_is_bad_usage():
    assert CliRunner().invoke(cli, ["frobnicate"]).exit_code == 2
    assert CliRunner().invoke(cli, ["status", "--colour"]).exit_code == 2


@pytest.mark.parametrize(
    "command", [["ls", "."], ["logs", "run"], ["logs", "run", "--csv"], ["status", "run"]]
)
def test_cli_exits_quietly_when_its_reader_is_gone(tmp_path, command):
    """`exp logs run | head`: once the reader has gone, writing fails with EPIPE; no traceback."""
    write_fake_run(tmp_path / "run", epochs_done=3000, epochs=3000)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has already gone: every write fails
    try:
        result = subprocess.run(
            exp_command(*command),
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)

    assert result.returncode == 1
    assert result.stderr == ""
