"""ProgressionCallback: plain lines when the output is not a terminal, bars when it is."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from experiment import ConfigurationError
from experiment.callbacks import progression as progress_module
from experiment.callbacks.progression import ProgressionCallback
from experiment.run.plan_making import with_progress
from experiment.training.metrics import EpochAccumulator
from tests.support.cli import subprocess_env, write_training_module
from tests.support.state_checks import assert_same_run, newest_state
from tests.support.terminal import ANSI, FakeTerminal, frames
from tests.support.training import make_data, train_run


def test_progress_not_a_terminal_prints_one_line_per_epoch(tmp_path, capsys):
    train_run(tmp_path / "run", epochs=3)
    out = capsys.readouterr().out
    start, *lines = out.splitlines()
    assert start.startswith("Starting ") and start.endswith(": 3 epochs of 6 steps")
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch: {epoch}/3 Steps: 6 ")
        assert re.search(r" loss: \d+\.\d{4}", line) and re.search(r" val_loss: \d+\.\d{4}", line)
    assert "\r" not in out and "\x1b" not in out


def test_progress_not_a_terminal_prints_one_line_per_test(tmp_path, capsys):
    exp = train_run(tmp_path / "run", epochs=1, progress=False)
    assert capsys.readouterr().out == ""
    logs = exp.test(make_data(40, seed=3))
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith("Test steps: 2 ")
    assert f"test_loss: {logs['test_loss']:.4f}" in line


def test_progress_false_and_user_callbacks_replace_the_default(tmp_path, capsys):
    stream = io.StringIO()
    train_run(tmp_path / "run", epochs=2, callbacks=lambda: [ProgressionCallback(stream=stream)])
    assert capsys.readouterr().out == ""
    assert len(stream.getvalue().splitlines()) == 1 + 2  # the start-up line, then one per epoch
    given = ProgressionCallback()
    assert with_progress([given], True) == [given]
    assert with_progress([], False) == []
    added = with_progress([], {"coloring": False, "show_on_valid": False})
    assert isinstance(added[0], ProgressionCallback) and added[0].show_on_valid is False


def test_progress_terminal_draws_bars_then_a_summary_per_epoch(tmp_path):
    stream = FakeTerminal()
    train_run(tmp_path / "run", epochs=2, progress={"stream": stream, "refresh_interval": 0})
    text = stream.getvalue()
    assert "\r" in text and "\x1b[" in text
    shown = frames(text)
    assert any(f.startswith("Epoch: 1/2 Step: 6/6 100.0%") and "loss:" in f for f in shown)
    assert any(f.startswith("Epoch: 1/2 Valid Step: 2") and "val_loss:" in f for f in shown)
    summaries = [line for line in ANSI.sub("", text).split("\n") if "Steps:" in line]
    assert len(summaries) == 2 and all("val_loss:" in line for line in summaries)


def test_progress_terminal_resumed_mid_epoch_starts_at_the_saved_step(tmp_path):
    train_run(tmp_path / "run", epochs=2, interrupt_at=9, checkpoint_every=4, progress=False)
    stream = FakeTerminal()
    train_run(
        tmp_path / "run",
        epochs=2,
        checkpoint_every=4,
        progress={"stream": stream, "refresh_interval": 0, "coloring": False},
    )
    shown = frames(stream.getvalue())
    assert shown[0].startswith("Resuming ") and " at epoch 2 of 2, step 2 of 6 " in shown[0]
    assert shown[1].startswith("Epoch: 2/2 Step: 2/6")  # step 8 was committed: epoch 2, step 2
    assert "\x1b" not in stream.getvalue()


def test_progress_show_every_n_steps_limits_redraws(tmp_path):
    stream = FakeTerminal()
    train_run(
        tmp_path / "run",
        epochs=1,
        progress={
            "stream": stream,
            "refresh_interval": 0,
            "show_every_n_train_steps": 4,
            "show_on_valid": False,
        },
    )
    steps = [m.group(1) for f in frames(stream.getvalue()) if (m := re.search(r"Step: (\d)/6", f))]
    assert steps == ["0", "4"]
    assert "Valid" not in stream.getvalue()


def test_progress_show_none_keeps_only_the_summary(tmp_path):
    stream = FakeTerminal()
    train_run(
        tmp_path / "run",
        epochs=1,
        progress={"stream": stream, "show_every_n_train_steps": "none", "show_every_n_valid_steps": "none"},
    )
    start, *shown = frames(stream.getvalue())
    assert start.startswith("Starting ")
    assert [f.split(" Steps:")[0] for f in shown] == ["Epoch: 1/1"]


def eta_after_a_slowdown(monkeypatch, *, equal_weights: bool) -> int:
    """Seconds of ETA shown after 10 steps of 1 s then 5 of 0.1 s, out of 20 steps."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    stream = FakeTerminal()
    callback = ProgressionCallback(
        stream=stream, refresh_interval=0, equal_weights=equal_weights, coloring=False
    )
    trainer = SimpleNamespace(steps_in_epoch=0, epochs_completed=0, train_metrics=EpochAccumulator([], []))
    callback.set_trainer(trainer)  # type: ignore[arg-type]
    callback.set_params({"epochs": 1, "steps_per_epoch": 20})
    callback.on_train_begin({})
    callback.on_epoch_begin(1, {})
    for step in range(1, 16):
        clock.now += 1.0 if step <= 10 else 0.1
        callback.on_train_batch_end(step, {})
    minutes, seconds = re.findall(r"ETA: (\d\d):(\d\d)", frames(stream.getvalue())[-1])[0]
    return 60 * int(minutes) + int(seconds)


def test_progress_eta_weighs_recent_steps_unless_equal_weights(monkeypatch):
    assert eta_after_a_slowdown(monkeypatch, equal_weights=True) == 3  # 5 steps x 10.5 s / 15
    assert eta_after_a_slowdown(monkeypatch, equal_weights=False) <= 1


def test_progress_coloring_accepts_names_and_escape_sequences():
    callback = ProgressionCallback(coloring={"text_color": "bright_blue", "ratio_color": "\x1b[31m"})
    assert callback.colors["text_color"] == "\x1b[94m" and callback.colors["ratio_color"] == "\x1b[31m"
    assert set(ProgressionCallback(coloring=False).colors.values()) == {""}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coloring": {"bar_color": "red"}}, "unknown field"),
        ({"coloring": {"text_color": "rainbow"}}, "expected an ANSI escape sequence"),
        ({"coloring": "red"}, "expected a bool or a dict"),
        ({"show_every_n_train_steps": 0}, "show_every_n_train_steps: received 0"),
        ({"show_every_n_test_steps": "some"}, "show_every_n_test_steps: received 'some'"),
        ({"refresh_interval": -1}, "refresh_interval: received -1"),
    ],
)
def test_progress_rejects_invalid_options(options, message):
    with pytest.raises(ConfigurationError, match=message):
        ProgressionCallback(**options)


def test_progress_experiment_rejects_an_invalid_progress_argument(tmp_path):
    with pytest.raises(ConfigurationError, match="progress: received 'yes'"):
        train_run(tmp_path / "run", epochs=1, progress="yes")
    with pytest.raises(ConfigurationError, match="which ProgressionCallback does not accept"):
        train_run(tmp_path / "run", epochs=1, progress={"colour": False})


def test_progress_formats_numpy_scalars_like_floats():
    stream = io.StringIO()
    callback = ProgressionCallback(stream=stream)
    callback.on_train_begin({})
    logs = {
        "epoch": 1,
        "time": np.float32(1.5),
        "loss": np.float32(0.123456),
        "auc": np.float64(0.5),
        "hits": np.int64(3),
    }
    callback.on_epoch_end(1, logs)
    assert stream.getvalue() == "Epoch: 1/? 1.50s loss: 0.1235 auc: 0.5000 hits: 3.0000\n"


def test_progress_broken_pipe_on_stdout_leaves_a_finished_run(tmp_path):
    """``python train.py | head -0``: the reader is gone before the first line; the run must not notice."""
    script = write_training_module(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader: every write to the pipe fails with EPIPE
    try:
        piped = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "piped"), "--epochs", "3"],
            cwd=tmp_path, env=subprocess_env(), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError" at exit
    reference = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "reference"), "--epochs", "3"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, timeout=120, check=True,
    )  # fmt: skip
    assert reference.returncode == 0
    assert json.loads((tmp_path / "piped" / "experiment.json").read_text())["status"] == "finished"
    assert newest_state(tmp_path / "piped")["nodes"]["progress"]["epochs_completed"] == 3
    assert_same_run(tmp_path / "reference", tmp_path / "piped")
