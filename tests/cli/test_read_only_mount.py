"""The `exp` commands on a run directory on a read-only mount: the readers work as on the run
itself, `exp clean` is refused with advice and removes nothing."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli
from experiment.store.directory import RunDirectory
from tests.support.cli import write_fake_run
from tests.support.mounts import read_only_mount
from tests.support.state_checks import snapshot_files


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _lines(output: str, source: object, view: object) -> list[str]:
    """The output with the view's path written as the source's, line by line, but for lines that
    change with the clock (an age, a time of day)."""
    text = output.replace(str(view), str(source))
    return [line for line in text.splitlines() if not line.startswith(("updated", "checkpoint"))]


def test_read_only_mount_status_logs_ls_and_diff_read_as_on_the_run(read_only_run, tmp_path):
    source, view = read_only_run
    before = snapshot_files(source)

    for command in (["status"], ["logs"], ["logs", "--json"]):
        on_view, on_source = _invoke(*command, str(view)), _invoke(*command, str(source))
        assert on_view.exit_code == 0, on_view.output
        assert _lines(on_view.output, source, view) == _lines(on_source.output, source, view)
    listed = json.loads(_invoke("ls", str(view), "--json").output)
    compared = _invoke("diff", str(source), str(view))
    plotted = _invoke("plot", str(view), "-o", str(tmp_path / "curves.png"))

    assert [(run["run"], run["status"], run["epochs_done"]) for run in listed] == [(str(view), "finished", 2)]
    assert compared.exit_code == 0 and "*" not in compared.output  # the same run, seen twice
    assert plotted.exit_code == 0 and (tmp_path / "curves.png").stat().st_size > 0
    assert snapshot_files(source) == before


def test_read_only_mount_clean_is_refused_and_removes_nothing(read_only_run):
    source, view = read_only_run
    (source / "checkpoints" / "best-epoch0099.pt").write_bytes(b"a file clean would remove")
    before = snapshot_files(source)

    result = _invoke("clean", str(view))

    assert result.exit_code == 1
    assert f"Error: The run directory {view} is on a read-only file system" in result.output
    assert "Copy the run somewhere writable" in result.output
    assert snapshot_files(source) == before


def test_read_only_mount_status_sees_the_writer_of_a_running_run(tmp_path):
    """A run trained through a writable path and watched through a read-only mount is running, not
    interrupted: the lock's probe needs no write."""
    source = write_fake_run(tmp_path / "source", status="running")
    with read_only_mount(source, tmp_path / "shared") as view, RunDirectory(source).lock():
        result = _invoke("status", str(view))

    assert result.exit_code == 0, result.output
    status = next(line for line in result.output.splitlines() if line.startswith("status "))
    assert status.split(None, 1)[1].startswith("running: pid ")
