"""RunDirectory: the names it takes for checkpoints, the metadata it accepts, links it never follows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiment.errors import ConfigurationError, RunDirectoryError
from experiment.store.directory import RunDirectory
from tests.support.cli import write_fake_run


@pytest.mark.parametrize("path", [None, 3, ""])
def test_directory_refuses_what_is_not_a_path(path):
    with pytest.raises(ConfigurationError, match=rf"directory: received {path!r}; expected a path"):
        RunDirectory(path)


# --------------------------------------------------------------------------- checkpoint names
def _checkpoints(tmp_path: Path, *names: str) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    for name in names:
        (run.checkpoints_dir / name).write_bytes(b"x")
    return run


@pytest.mark.parametrize(
    "decoy",
    [
        "state-999999.pt\n",  # a trailing newline: `$` of re.match accepts it
        "state-\u0669\u0669\u0669\u0669\u0669\u0669.pt",  # Arabic-Indic digits: \d accepts them
        "state-999999.pt.bak",
        "xstate-999999.pt",
    ],
)
def test_directory_state_paths_are_only_names_the_library_writes(tmp_path, decoy):
    run = _checkpoints(tmp_path, "state-000001.pt", "state-000002.pt", decoy)

    assert [path.name for path in run.state_paths()] == ["state-000002.pt", "state-000001.pt"]


def test_directory_checkpoints_are_committed_units_newest_first(tmp_path):
    run = _checkpoints(tmp_path, "state-000001.pt", "state-000012.pt", "best-epoch0001.pt")
    (run.checkpoints_dir / "state-000012.pt").write_bytes(b"twelve")

    newest, oldest = run.checkpoints()
    assert (newest.serial, newest.name, oldest.serial) == (12, "state-000012.pt", 1)
    assert newest.tree_path == newest.path == run.state_path(12)
    assert newest.size() == 6 and newest.modified() == os.stat(newest.path).st_mtime
    newest.remove()
    newest.remove()  # gone already: nothing happens
    assert (newest.size(), newest.modified()) == (0, None)
    assert run.checkpoints() == [oldest] and run.state_paths() == [oldest.path]


@pytest.mark.parametrize("decoy", ["best-epoch9999.pt\n", "best-epoch\uff19\uff19.pt"])
def test_directory_best_paths_are_only_names_the_library_writes(tmp_path, decoy):
    run = _checkpoints(tmp_path, "best-epoch0003.pt", decoy)

    assert run.best_paths() == {3: run.checkpoints_dir / "best-epoch0003.pt"}


def test_directory_ignores_a_fifo_or_a_link_named_like_a_checkpoint(tmp_path):
    run = _checkpoints(tmp_path, "state-000001.pt", "best-epoch0001.pt")
    os.mkfifo(run.checkpoints_dir / "state-000009.pt")  # opening it would block forever
    os.mkfifo(run.checkpoints_dir / ".state-000009.pt.0123abcd.tmp")
    (run.checkpoints_dir / "best-epoch0009.pt").symlink_to(tmp_path / "elsewhere.pt")
    (run.checkpoints_dir / "state-000008.pt").mkdir()

    assert [path.name for path in run.state_paths()] == ["state-000001.pt"]
    assert list(run.best_paths()) == [1]
    assert run.temporary_files() == []


def test_directory_temporary_files_are_only_names_the_library_writes(tmp_path):
    run = _checkpoints(tmp_path, ".state-000002.pt.0123abcd.tmp", ".state-000002.pt.0123abcd.tmp\n")

    assert [path.name for path in run.temporary_files()] == [".state-000002.pt.0123abcd.tmp"]


# -------------------------------------------------------------------------------------- links
@pytest.mark.parametrize("name", [".lock", ".lock.holder"])
def test_directory_lock_refuses_a_symlinked_lock_file(tmp_path, name):
    outside = tmp_path / "outside"
    outside.write_text("precious")
    run = RunDirectory(tmp_path / "run")
    run.prepare()
    (run.path / name).symlink_to(outside)

    with pytest.raises(RunDirectoryError, match=rf"{name} is a symbolic link"), run.lock():
        pass
    assert outside.read_text() == "precious"
    assert not run.is_locked()


@pytest.mark.parametrize("name", ["log.tsv", "test_log.tsv", "checkpoints", "experiment.json"])
def test_directory_lock_refuses_a_run_whose_own_files_are_links(tmp_path, name):
    run_dir = write_fake_run(tmp_path / "run")
    target = tmp_path / f"outside-{name}"
    os.replace(run_dir / name, target) if (run_dir / name).exists() else target.write_text("")
    (run_dir / name).symlink_to(target)

    with pytest.raises(RunDirectoryError, match=rf"run/{name} is a symbolic link"):
        RunDirectory(run_dir).lock().acquire()


def test_directory_write_metadata_refuses_a_symlinked_experiment_json(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    run = RunDirectory(tmp_path / "run")
    run.prepare()
    run.metadata_path.symlink_to(outside)

    with pytest.raises(RunDirectoryError, match=r"experiment\.json is a symbolic link"):
        run.write_metadata({"status": "running"})
    assert run.metadata_path.is_symlink() and outside.read_text() == "{}"


# ----------------------------------------------------------------------------------- metadata
def _metadata_of(tmp_path: Path, **fields: object) -> RunDirectory:
    run_dir = write_fake_run(tmp_path / "run")
    metadata = json.loads((run_dir / "experiment.json").read_text())
    (run_dir / "experiment.json").write_text(json.dumps({**metadata, **fields}))
    return RunDirectory(run_dir)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[1, 2]", r"holds a list; expected a JSON object"),
        ("null", r"holds null; expected a JSON object"),
        ('"run"', r"holds a str; expected a JSON object"),
    ],
)
def test_directory_read_metadata_refuses_a_document_that_is_not_an_object(tmp_path, content, match):
    run_dir = write_fake_run(tmp_path / "run")
    (run_dir / "experiment.json").write_text(content)

    with pytest.raises(RunDirectoryError, match=match):
        RunDirectory(run_dir).read_metadata()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"settings": [1]}, r'"settings" received a list; expected a JSON object \(mapping\) or null'),
        ({"config": "lr=0.1"}, r'"config" received a str; expected a JSON object'),
        ({"command": ["python"]}, r'"command" received a list; expected a JSON object'),
        ({"command": {"argv": [1, 2], "cwd": "/"}}, r'"command\.argv" received \[1, 2\]; expected a list'),
        ({"command": {"argv": ["python"], "cwd": 3}}, r'"command\.cwd" received 3; expected a string'),
        ({"status": "done"}, r'"status" received \'done\'; expected one of'),
        ({"settings": {"epochs": "5"}}, r'"settings\.epochs" received \'5\'; expected an integer'),
        ({"pid": "12"}, r'"pid" received \'12\'; expected an integer'),
        ({"run_id": 7}, r'"run_id" received 7; expected a string'),
        ({"directory": []}, r'"directory" received \[\]; expected a string'),
        ({"resumable": "no"}, r'"resumable" received \'no\'; expected true or false'),
    ],
)
def test_directory_read_metadata_names_the_field_of_the_wrong_shape(tmp_path, fields, match):
    run = _metadata_of(tmp_path, **fields)

    with pytest.raises(
        RunDirectoryError, match=r"run/experiment\.json is not the metadata of a run: " + match
    ):
        run.read_metadata()


def test_directory_read_metadata_accepts_runs_without_new_fields(tmp_path):
    run = _metadata_of(tmp_path, command=None, settings=None, config=None)

    assert run.read_metadata()["status"] == "finished"
    assert "run_id" not in run.read_metadata() and "directory" not in run.read_metadata()


def test_directory_write_metadata_records_the_directory_of_a_new_run(tmp_path):
    run = RunDirectory(tmp_path / "runs" / ".." / "run")
    run.prepare()

    run.write_metadata({"status": "running"})
    run.write_metadata({**run.read_metadata(), "directory": "/elsewhere"})  # no longer a new run

    assert json.loads(run.metadata_path.read_text())["directory"] == "/elsewhere"
    other = RunDirectory(tmp_path / "other")
    other.prepare()
    other.write_metadata({"status": "running"})
    assert other.read_metadata()["directory"] == str((tmp_path / "other").resolve())


def test_directory_prepare_refuses_a_symlinked_checkpoints_folder(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.checkpoints_dir.symlink_to(tmp_path / "nowhere")

    with pytest.raises(RunDirectoryError, match=r"run/checkpoints is a symbolic link \(to .*nowhere\)"):
        run.prepare()
    assert not (tmp_path / "nowhere").exists()
