"""`exp status DIR` and `exp ls [ROOT]` (their readers are tested in tests/inspection)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from experiment.store.directory import RunDirectory
from tests.support.cli import exp_command, subprocess_env, write_fake_run
from tests.support.training import train_run


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _field(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(name + " "):
            return line[len(name) :].strip()
    raise AssertionError(f"no {name!r} line in:\n{output}")


# ------------------------------------------------------------------------------------- status
def test_cli_status_shows_a_run_that_failed_mid_epoch(tmp_path):
    train_run(
        tmp_path / "run",
        epochs=3,
        interrupt_at=9,
        checkpoint_every=4,
        experiment_options={"config": {"lr": 0.1, "model": {"hidden": 16}}},
    )

    result = _invoke("status", str(tmp_path / "run"))

    assert result.exit_code == 0, result.output
    assert _field(result.output, "status") == "failed: Interrupt: interrupted at step 9"
    assert _field(result.output, "epochs") == "1 / 3"
    assert _field(result.output, "steps") == "8 / 18 optimizer steps (epoch 2: 2 / 6 batches)"
    assert _field(result.output, "best").startswith("epoch 1: val_loss = ")
    assert _field(result.output, "checkpoint").endswith("s ago), state-000003.pt")
    assert _field(result.output, "size").endswith("kB")
    assert "  lr            0.1\n  model.hidden  16\n" in result.output


def test_cli_status_shows_a_finished_run(tmp_path):
    train_run(tmp_path / "run", epochs=2)

    result = _invoke("status", str(tmp_path / "run"))

    assert _field(result.output, "status") == "finished"
    assert _field(result.output, "epochs") == "2 / 2"
    assert _field(result.output, "steps") == "12 / 12 optimizer steps"
    assert _field(result.output, "config") == "(none)"


def test_cli_status_counts_optimizer_steps_under_accumulation(tmp_path):
    # 5 batches an epoch in groups of 3: a group of 3, then the epoch's last, shorter group of 2.
    options = {"experiment_options": {"accumulate_grad_batches": 3}, "steps_per_epoch": 5}
    train_run(tmp_path / "finished", epochs=3, **options)
    train_run(tmp_path / "mid", epochs=3, interrupt_at=4, checkpoint_every=1, **options)

    finished = _invoke("status", str(tmp_path / "finished")).output
    mid = _invoke("status", str(tmp_path / "mid")).output

    assert _field(finished, "status") == "finished"
    assert _field(finished, "steps") == "6 / 6 optimizer steps"
    # step 3 was committed after batch 3 of epoch 2; step 4 (batch 5) failed before its commit
    assert _field(mid, "steps") == "3 / 6 optimizer steps (epoch 2: 3 / 5 batches)"


def test_cli_status_shows_the_pid_and_host_of_a_running_run(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", status="running")
    with RunDirectory(run_dir).lock():
        result = _invoke("status", str(run_dir))

    assert _field(result.output, "status") == f"running: pid {os.getpid()} on host {os.uname().nodename}"
    # no checkpoint: epochs done x optimizer steps per epoch
    assert _field(result.output, "steps") == "12 / 20 optimizer steps"


def test_cli_status_reports_a_killed_run_as_interrupted(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", status="running")

    result = _invoke("status", str(run_dir))

    assert _field(result.output, "status") == (
        "interrupted: the process (pid 12345 on host fakehost) ended without a clean exit (killed or crashed)"
    )


def test_cli_status_reports_an_unreadable_checkpoint_and_the_rest(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    for path in RunDirectory(tmp_path / "run").state_paths():
        path.write_bytes(b"garbage")

    result = _invoke("status", str(tmp_path / "run"))

    assert result.exit_code == 0, result.output
    assert _field(result.output, "checkpoint").startswith(
        f"No checkpoint of {tmp_path / 'run'} can be loaded"
    )
    assert _field(result.output, "epochs") == "1 / 1"  # from log.tsv


def test_cli_status_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = _invoke("status", str(tmp_path))

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {tmp_path} is not a run directory")


def test_cli_status_reports_unreadable_metadata_in_one_line(tmp_path):
    (tmp_path / "experiment.json").write_text("{not json")

    result = _invoke("status", str(tmp_path))

    assert result.exit_code == 1
    assert "experiment.json is not valid JSON" in result.output
    assert len(result.output.splitlines()) == 1


# ------------------------------------------------------------------------------------------ ls
@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_fake_run(root / "a", values=[0.9, 0.5, 0.7], epochs=5, status="interrupted")
    write_fake_run(root / "group" / "b", values=[0.8, 0.3], epochs=2)
    write_fake_run(
        root / "group" / "c",
        values=[10.0, 30.0, 20.0],
        monitor="val_acc",
        mode="max",
        epochs=3,
        status="failed",
        message="RuntimeError: boom",
    )
    for offset, name in enumerate(("a", "group/b", "group/c")):
        os.utime(root / name / "log.tsv", (1_000_000 + offset, 1_000_000 + offset))
        for other in ("experiment.json", "checkpoints"):
            os.utime(root / name / other, (1_000_000, 1_000_000))
    return root


def _ls_lines(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_cli_ls_shows_one_line_per_run(runs_root):
    result = _invoke("ls", str(runs_root))

    assert result.exit_code == 0, result.output
    lines = _ls_lines(result.output)
    assert lines[0] == ["RUN", "STATUS", "EPOCHS", "BEST", "UPDATED"]
    assert lines[1][:4] == ["a", "interrupted", "3/5", "val_loss=0.5"]
    assert lines[2][:4] == ["group/b", "finished", "2/2", "val_loss=0.3"]
    assert lines[3][:4] == ["group/c", "failed", "3/3", "val_acc=30"]
    assert lines[1][4:6] == ["(epoch", "2)"]


@pytest.mark.parametrize(
    ("column", "order"),
    [("run", "a b c"), ("best", "c b a"), ("updated", "c b a"), ("status", "c b a"), ("epochs", "a c b")],
)
def test_cli_ls_sorts_by_a_column(runs_root, column, order):
    result = _invoke("ls", str(runs_root), "--sort", column)

    names = [line[0].rsplit("/", 1)[-1] for line in _ls_lines(result.output)[1:]]
    assert " ".join(names) == order


def test_cli_ls_best_sort_puts_the_best_of_each_mode_first(tmp_path):
    write_fake_run(tmp_path / "low", values=[0.2], monitor="val_acc", mode="max")
    write_fake_run(tmp_path / "high", values=[0.9], monitor="val_acc", mode="max")

    result = _invoke("ls", str(tmp_path), "--sort", "best")

    assert [line[0] for line in _ls_lines(result.output)[1:]] == ["high", "low"]


def test_cli_ls_json_lists_run_summaries(runs_root):
    result = _invoke("ls", str(runs_root), "--json")

    data = json.loads(result.output)
    assert [entry["run"] for entry in data] == ["a", "group/b", "group/c"]
    assert data[0]["best_epoch"] == 2 and data[0]["best_value"] == 0.5
    assert data[2]["message"] == "RuntimeError: boom" and data[2]["config"] == {"lr": 0.1}


def test_cli_ls_json_gives_times_in_iso_8601_and_logged_values_as_numbers(runs_root):
    state = runs_root / "a" / "checkpoints" / "state-000003.pt"
    state.write_bytes(b"not loaded by ls")
    for path in (state, state.parent):  # the folder's time too, changed by the new file
        os.utime(path, (1_000_000, 1_000_000))

    data = json.loads(_invoke("ls", str(runs_root), "--json").output)

    assert data[0]["created"] == "2026-01-01T00:00:00+00:00"  # as recorded in experiment.json
    assert data[0]["updated"] == "1970-01-12T13:46:40+00:00"  # the newest file's time, in UTC
    assert data[1]["updated"] == "1970-01-12T13:46:41+00:00"
    assert data[0]["last_checkpoint_time"] == "1970-01-12T13:46:40+00:00"
    assert data[1]["last_checkpoint_time"] is None
    assert data[0]["last_row"] == {
        "epoch": 3,
        "time": 0.5,
        "lr": 0.1,
        "loss": 0.7 + 0.1,  # as write_fake_run computes it
        "acc": 52.0,
        "val_loss": 0.7,
        "val_acc": 42.0,
    }
    assert data[0]["best_row"]["epoch"] == 2 and data[0]["best_row"]["val_loss"] == 0.5


def test_cli_ls_json_gives_a_value_that_is_not_a_number_as_null(tmp_path):
    write_fake_run(tmp_path / "run", values=[0.5, float("nan")])

    output = _invoke("ls", str(tmp_path), "--json").output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    data = json.loads(output, parse_constant=refuse)
    assert data[0]["last_row"]["val_loss"] is None and data[0]["last_row"]["loss"] is None
    assert data[0]["best_value"] == 0.5


def test_cli_ls_shows_an_unreadable_run_without_failing(runs_root):
    (runs_root / "broken").mkdir()
    (runs_root / "broken" / "experiment.json").write_text("{")

    result = _invoke("ls", str(runs_root))

    assert result.exit_code == 0
    assert _ls_lines(result.output)[-1][:3] == ["broken", "unreadable", "-"]  # listed after the runs


def test_cli_ls_never_loads_a_checkpoint(tmp_path, monkeypatch):
    train_run(tmp_path / "real", epochs=2, checkpoint_every=4)

    def refuse(*args, **kwargs):
        raise AssertionError("exp ls loaded a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    result = _invoke("ls", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert _ls_lines(result.output)[1][:3] == ["real", "finished", "2/2"]


def test_cli_ls_says_when_there_is_no_run(tmp_path):
    result = _invoke("ls", str(tmp_path))

    assert result.exit_code == 0
    assert result.output == f"No run directory below {tmp_path}.\n"
    assert json.loads(_invoke("ls", str(tmp_path), "--json").output) == []


def test_cli_ls_bad_usage_exits_with_2(tmp_path):
    assert _invoke("ls", str(tmp_path / "missing")).exit_code == 2
    assert _invoke("ls", str(tmp_path), "--sort", "colour").exit_code == 2


def test_cli_ls_defaults_to_the_current_directory(runs_root, monkeypatch):
    monkeypatch.chdir(runs_root / "group")

    result = _invoke("ls")

    assert [line[0] for line in _ls_lines(result.output)[1:]] == ["b", "c"]


def _wrong_shape(run_dir: Path) -> Path:
    metadata = json.loads((run_dir / "experiment.json").read_text())
    (run_dir / "experiment.json").write_text(json.dumps({**metadata, "settings": [1, 2]}))
    return run_dir


def test_cli_status_of_metadata_of_the_wrong_shape_is_one_line(tmp_path):
    run_dir = _wrong_shape(write_fake_run(tmp_path / "run"))

    result = _invoke("status", str(run_dir))

    assert result.exit_code == 1
    assert 'is not the metadata of a run: "settings" received a list' in result.output
    assert len(result.output.splitlines()) == 1


def test_cli_ls_lists_the_good_runs_beside_one_of_the_wrong_shape(runs_root):
    _wrong_shape(write_fake_run(runs_root / "odd"))

    result = _invoke("ls", str(runs_root))

    assert result.exit_code == 0, result.output
    lines = _ls_lines(result.output)
    assert [line[0] for line in lines[1:]] == ["a", "group/b", "group/c", "odd"]
    assert lines[-1][:2] == ["odd", "unreadable"] and '"settings" received a list' in result.output


def test_cli_status_does_not_open_a_fifo_named_like_a_checkpoint(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    os.mkfifo(tmp_path / "run" / "checkpoints" / "state-999999.pt")

    result = subprocess.run(
        exp_command("status", str(tmp_path / "run")),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert _field(result.stdout, "checkpoint").endswith("state-000001.pt")


def test_cli_status_shows_the_precision_accumulation_and_commit_mode(tmp_path):
    train_run(tmp_path / "plain", epochs=1)
    options = {"precision": "bf16-mixed", "accumulate_grad_batches": 2}
    train_run(tmp_path / "mixed", epochs=1, experiment_options=options, async_checkpoint=True)

    plain = _field(_invoke("status", str(tmp_path / "plain")).output, "training")
    mixed = _field(_invoke("status", str(tmp_path / "mixed")).output, "training")

    assert plain == "32-true, synchronous commits"
    assert mixed == "bf16-mixed, 2 batches per optimizer step, asynchronous commits"


def test_cli_status_shows_how_many_processes_trained_a_distributed_run(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    path = tmp_path / "run" / "experiment.json"
    metadata = json.loads(path.read_text())
    metadata["created_with"]["world_size"] = 2  # as rank 0 of a two-process torchrun run records it
    path.write_text(json.dumps(metadata))

    line = _field(_invoke("status", str(tmp_path / "run")).output, "training")

    assert line == "2 processes (torchrun), 32-true, synchronous commits"


def test_cli_status_shows_the_world_sizes_an_elastic_run_has_had(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    path = tmp_path / "run" / "experiment.json"
    metadata = json.loads(path.read_text())
    metadata["created_with"].update(world_size=2, elastic=True, global_batch=32)
    metadata["changes"] = [  # as two resumes of an elastic run, on 1 then 3 processes, record them
        {"what": "world_size", "from": 2, "to": 1, "at": "epoch 1, step 3"},
        {"what": "config", "from": {}, "to": {"a": 1}, "at": "epoch 2, step 0"},
        {"what": "world_size", "from": 1, "to": 3, "at": "epoch 2, step 0"},
    ]
    path.write_text(json.dumps(metadata))

    line = _field(_invoke("status", str(tmp_path / "run")).output, "training")

    assert line == "elastic (global batch 32; processes 2 -> 1 -> 3), 32-true, synchronous commits"
