"""parse_entry_point, entry_point_command and run_entry_point, as Python code calls them."""

from __future__ import annotations

import sys

import pytest

from experiment.errors import ConfigurationError
from experiment.inspection.entry_points import entry_point_command, parse_entry_point, run_entry_point
from experiment.store.relaunch import current_command


@pytest.mark.parametrize("spec", ["pkg", "pkg:", ":main", "pkg:1main", "my-pkg:main", "pkg:main:other"])
def test_entry_point_parse_refuses_what_is_not_module_colon_function(spec):
    with pytest.raises(ConfigurationError, match=r"entry point: received .*; expected MODULE:FUNCTION"):
        parse_entry_point(spec)


def test_entry_point_parse_accepts_dotted_names():
    assert parse_entry_point("pkg.sub:Trainer.main") == ("pkg.sub", "Trainer.main")


def test_entry_point_command_reruns_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    command = entry_point_command("pkg:main", "runs/a", ["--lr", "0.1"])

    assert command == {
        "argv": [sys.executable, "-m", "cli", "run", "pkg:main", "runs/a", "--", "--lr", "0.1"],
        "cwd": str(tmp_path),
    }


def test_entry_point_run_calls_the_function_while_recording_its_command(tmp_path, monkeypatch):
    module = tmp_path / "entry_point_module.py"
    module.write_text(
        "from experiment.store.relaunch import current_command\n"
        "def main(directory, *args):\n"
        "    return directory, args, current_command()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    directory, args, recorded = run_entry_point("entry_point_module:main", tmp_path / "run", ["x"])

    assert (directory, args) == (tmp_path / "run", ("x",))
    assert recorded["argv"][-4:] == ["entry_point_module:main", str(tmp_path / "run"), "--", "x"]
    assert current_command()["argv"][1:3] != ["-m", "cli"]  # only inside the call


def test_entry_point_run_reports_a_missing_function(tmp_path, monkeypatch):
    (tmp_path / "entry_point_empty.py").write_text("value = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigurationError, match=r"entry_point_empty has no callable 'value'"):
        run_entry_point("entry_point_empty:value", tmp_path / "run")
