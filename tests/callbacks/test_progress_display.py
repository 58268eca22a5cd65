"""ProgressionCallback: the start-up line, the pace and ETAs, fitting the terminal, step lines in log
files, and output that others print while a bar is drawn."""

from __future__ import annotations

import errno
import io
import signal
import warnings
from typing import Any

import pytest

from experiment import Callback
from experiment.callbacks.progress_line import visible_width
from experiment.callbacks.progression import ProgressionCallback
from experiment.store import checkpoints, safe_load
from tests.support.terminal import ANSI, FakeClock, FakeTerminal, fake_trainer, frames
from tests.support.training import train_run


def attached(callback: ProgressionCallback, params: dict[str, Any], **trainer: Any) -> Any:
    """Give ``callback`` params and a fake trainer, as the loop's setup does; return the trainer."""
    fake = fake_trainer(**trainer)
    callback.set_params(params)
    callback.set_trainer(fake)
    return fake


def started(callback: ProgressionCallback, params: dict[str, Any], **trainer: Any) -> Any:
    """:func:`attached`, then ``on_train_begin`` (which picks the stream and prints the start-up line)."""
    fake = attached(callback, params, **trainer)
    callback.on_train_begin({})
    return fake


def run_steps(
    callback: ProgressionCallback, clock: FakeClock, steps: int, seconds: float, epoch: int = 1
) -> None:
    """Begin the epoch, then end ``steps`` steps of ``seconds`` each."""
    callback.on_epoch_begin(epoch, {})
    for step in range(1, steps + 1):
        clock.advance(seconds)
        callback.on_train_batch_end(step, {})


# ------------------------------------------------------------------------------ start-up line
def test_progress_start_line_names_a_fresh_run():
    stream = io.StringIO()
    callback = ProgressionCallback(stream=stream)
    params = {"epochs": 20, "steps_per_epoch": 300, "directory": "runs/x", "checkpoint": None}
    attached(callback, {**params, "checkpoint_time": None})
    callback.on_train_begin({})
    assert stream.getvalue() == "Starting runs/x: 20 epochs of 300 steps\n"


def test_progress_start_line_says_where_a_run_resumes_and_how_old_its_checkpoint_is():
    stream, clock = io.StringIO(), FakeClock(wall=10_000.0)
    callback = ProgressionCallback(stream=stream, clock=clock)
    params = {"epochs": 20, "steps_per_epoch": 300, "directory": "runs/x"}
    checkpoint = {"checkpoint": "state-000042.pt", "checkpoint_time": 10_000.0 - 200}
    attached(callback, {**params, **checkpoint}, epochs_completed=6, steps_in_epoch=120, global_step=1920)
    callback.on_train_begin({})
    assert stream.getvalue().splitlines()[0] == (
        "Resuming runs/x at epoch 7 of 20, step 120 of 300 (global step 1920), from checkpoint "
        "state-000042.pt (committed 3 min ago)"
    )


def test_progress_start_line_without_the_checkpoint_params_reads_the_trainer():
    """The loop may not pass directory and checkpoint: a resume is told by the completed steps."""
    stream = io.StringIO()
    callback = ProgressionCallback(stream=stream)
    attached(callback, {"epochs": 3, "steps_per_epoch": 6}, epochs_completed=2, global_step=12)
    callback.on_train_begin({})
    assert stream.getvalue() == "Resuming training at the start of epoch 3 of 3 (global step 12)\n"


def test_progress_start_line_of_a_real_run_then_of_its_resume(tmp_path):
    first, second = io.StringIO(), io.StringIO()
    train_run(tmp_path / "run", epochs=2, interrupt_at=9, checkpoint_every=4, progress={"stream": first})
    train_run(tmp_path / "run", epochs=2, checkpoint_every=4, progress={"stream": second})
    assert first.getvalue().startswith("Starting ") and ": 2 epochs of 6 steps\n" in first.getvalue()
    resumed = second.getvalue().splitlines()[0]
    assert resumed.startswith("Resuming ") and " at epoch 2 of 2, step 2 of 6 (global step 8)" in resumed


def test_progress_start_line_of_a_resume_is_written_before_the_checkpoint_is_loaded(tmp_path, monkeypatch):
    train_run(tmp_path / "run", epochs=2, interrupt_at=9, checkpoint_every=4, progress=False)
    stream = io.StringIO()
    shown_at_load = []
    load = safe_load.load_tensors

    def watched_load(path):
        shown_at_load.append(stream.getvalue())
        return load(path)

    monkeypatch.setattr(checkpoints, "load_tensors", watched_load)
    train_run(tmp_path / "run", epochs=2, checkpoint_every=4, progress={"stream": stream})

    line = "at epoch 2 of 2, step 2 of 6 (global step 8), from checkpoint state-000003.pt"
    assert line in shown_at_load[0]  # already on screen when the load began
    assert stream.getvalue().count("Resuming ") == 1


# -------------------------------------------------------------------------------- on a terminal
def test_progress_terminal_shows_the_pace_and_the_run_eta(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    stream, clock = FakeTerminal(), FakeClock()
    callback = ProgressionCallback(stream=stream, clock=clock, refresh_interval=0, equal_weights=True)
    started(callback, {"epochs": 3, "steps_per_epoch": 10}, loss=0.5)
    run_steps(callback, clock, steps=4, seconds=0.5)
    shown = frames(stream.getvalue())[-1]
    # 6 steps left in the epoch, 6 + 2 x 10 in the run, at 2 steps/s
    assert "ETA: 00:03 Run ETA: 00:13 2.00 steps/s loss: 0.5000" in shown

    run_steps(callback, clock, steps=2, seconds=4.0, epoch=3)
    assert "ETA: 00:32 4.00 s/step" in frames(stream.getvalue())[-1]  # last epoch: no run ETA


def bar_frames(monkeypatch: pytest.MonkeyPatch, columns: int) -> list[str]:
    """Every line drawn in 5 steps of a long run on a terminal ``columns`` wide, bars left out."""
    monkeypatch.setenv("COLUMNS", str(columns))
    stream, clock = FakeTerminal(), FakeClock()
    callback = ProgressionCallback(stream=stream, clock=clock, refresh_interval=0)
    started(callback, {"epochs": 30, "steps_per_epoch": 500}, loss=0.25, accuracy=75.0, f1=0.5)
    run_steps(callback, clock, steps=5, seconds=0.25)
    drawn = ANSI.sub("", stream.getvalue()).split("\r")[1:]
    return [" ".join(word for word in line.split() if "|" not in word) for line in drawn]


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(word in remaining for word in part)


@pytest.mark.parametrize("columns", [40, 60, 80, 120])
def test_progress_terminal_lines_fit_the_width_dropping_whole_fields(monkeypatch, columns):
    wide, narrow = bar_frames(monkeypatch, 1000), bar_frames(monkeypatch, columns)
    assert len(narrow) == len(wide) == 6  # the line at the start, then one per step
    for shown, everything in zip(narrow, wide, strict=True):
        assert visible_width(shown) <= columns - 1
        assert is_subsequence(shown.split(), everything.split())
    assert narrow[-1].startswith("Epoch: 1/30 Step: 5/500 1.0%")  # never dropped
    assert ("loss: 0.2500" in narrow[-1]) == (columns >= 60)  # the first metric goes last
    assert ("accuracy:" in narrow[-1]) == (columns >= 120)
    assert wide[-1].endswith(" Run ETA: 1:02:28 4.00 steps/s loss: 0.2500 accuracy: 75.0000 f1: 0.5000")


def test_progress_terminal_warning_starts_on_its_own_line():
    stream, clock = FakeTerminal(), FakeClock()
    callback = ProgressionCallback(stream=stream, clock=clock, refresh_interval=0, coloring=False)
    started(callback, {"epochs": 1, "steps_per_epoch": 10}, loss=0.5)
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")

        def record(*args: Any, **kwargs: Any) -> None:
            seen.append(stream.getvalue())

        warnings.showwarning = record
        run_steps(callback, clock, steps=3, seconds=0.1)
        warnings.warn("a warning in the middle of an epoch", UserWarning, stacklevel=1)
        run_steps(callback, clock, steps=1, seconds=0.1)
        callback.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
        assert warnings.showwarning is record  # put back when the bar closes
    before_warning = seen[0].split("\n")
    assert before_warning[-1] == "" and before_warning[-2].split("\r")[-1].startswith("Epoch: 1/1 Step: 3/10")
    assert frames(stream.getvalue())[-2].startswith("Epoch: 1/1 Step: 1/10")  # a new bar, on a new line


class SignalAt(Callback):
    needs_batch_values = False

    def __init__(self, step: int, signum: int) -> None:
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step:
            signal.raise_signal(self.signum)


def test_progress_terminal_ends_the_bar_line_before_an_interrupt_is_reported(tmp_path):
    stream, before = FakeTerminal(), warnings.showwarning
    with pytest.raises(SystemExit):
        train_run(
            tmp_path / "run",
            epochs=2,
            callbacks=lambda: [SignalAt(9, signal.SIGTERM)],
            progress={"stream": stream, "refresh_interval": 3600, "coloring": False},
        )
    text = stream.getvalue()
    assert text.endswith("\n")  # the report of the interrupt starts on a line of its own
    assert text.split("\n")[-2].split("\r")[-1].startswith("Epoch: 2/2 Step: 3/6")  # where it stopped
    assert warnings.showwarning is before


# ----------------------------------------------------------------------------- not a terminal
def test_progress_log_file_gets_a_step_line_every_log_every_seconds():
    stream, clock = io.StringIO(), FakeClock()
    callback = ProgressionCallback(stream=stream, clock=clock, log_every_seconds=10)
    trainer = started(callback, {"epochs": 2, "steps_per_epoch": 20}, loss=0.5)
    run_steps(callback, clock, steps=12, seconds=4.0)
    lines = stream.getvalue().splitlines()
    assert [line.split(" ETA")[0] for line in lines[1:]] == [
        f"Epoch: 1/2 Step: {step}/20  {5 * step:4.1f}%" for step in (3, 6, 9, 12)
    ]
    assert all(line.endswith(" 4.00 s/step loss: 0.5000") for line in lines[1:])
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert trainer.train_metrics.copies == 4  # the running values are read only for a line


def test_progress_log_every_seconds_reaches_the_callback_through_train(tmp_path):
    stream = io.StringIO()
    train_run(tmp_path / "run", epochs=1, progress={"stream": stream, "log_every_seconds": 0})
    lines = stream.getvalue().splitlines()
    assert [line.split("%")[0] for line in lines if " Step: " in line and "Valid" not in line] == [
        f"Epoch: 1/1 Step: {step}/6 {100 * step / 6:5.1f}" for step in range(1, 7)
    ]
    assert ProgressionCallback().log_every_seconds == 30


def test_progress_log_file_without_step_lines_when_show_none(tmp_path):
    stream = io.StringIO()
    options = {"stream": stream, "log_every_seconds": 0, "show_every_n_train_steps": "none"}
    train_run(tmp_path / "run", epochs=1, progress={**options, "show_on_valid": False})
    assert len(stream.getvalue().splitlines()) == 2  # the start-up line and the epoch's


# ----------------------------------------------------------------------------- closed output
class ClosingTerminal(FakeTerminal):
    """A terminal whose window is closed after ``writes`` writes: the next ones fail with EIO."""

    def __init__(self, writes: int) -> None:
        super().__init__()
        self.writes, self.attempts = writes, 0

    def write(self, text: str) -> int:
        self.attempts += 1
        if self.attempts > self.writes:
            raise OSError(errno.EIO, "Input/output error")
        return super().write(text)


def test_progress_closed_terminal_ends_the_display_without_failing():
    stream, clock = ClosingTerminal(writes=3), FakeClock()  # the start-up line, two bar frames
    callback = ProgressionCallback(stream=stream, clock=clock, refresh_interval=0)
    started(callback, {"epochs": 1, "steps_per_epoch": 10}, loss=0.5)
    run_steps(callback, clock, steps=5, seconds=0.1)
    callback.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
    callback.on_train_end({})
    assert stream.attempts == 4  # the write that met the closed terminal was the last one tried
    assert frames(stream.getvalue())[-1].startswith("Epoch: 1/1 Step: 1/10")
