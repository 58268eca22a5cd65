"""ProgressionCallback: the progress display of training and testing, drawn with tqdm.

On a terminal, a bar per phase (an epoch's training steps, its validation, a test) shows the step,
an ETA and the running loss and metrics, and each epoch ends with one summary line. Anywhere else
(a file, a pipe, a CI log), only the summary lines are printed, one per epoch and one per test.

The display costs a counter check and a clock read per step. Running values are read from the
device's accumulators only when the bar is redrawn, at most every ``refresh_interval`` seconds, so
the callback never asks the loop for per-batch values (``needs_batch_values = False``).

A closed output (``python train.py | head -3``) never fails the run: the first write that meets a
broken pipe ends the display for good, and the process's stdout is pointed at the null device, as
the Python documentation recommends, so that the interpreter does not complain at exit.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from experiment.arguments import check_number, reject
from experiment.callbacks.base import Callback
from experiment.callbacks.progress_format import (
    RESET,
    Bar,
    every_n,
    format_number,
    is_number,
    palette,
    silence_stdout,
)
from experiment.errors import ConfigurationError


class ProgressionCallback(Callback):
    """Shows the progress of training and testing; the default display of :class:`Experiment`.

    ``Experiment.train`` and ``Experiment.test`` add one unless ``progress=False`` or one is among
    the callbacks already (``progress={...}`` passes these options to the one they add).

    Args:
        coloring: ANSI colours on a terminal; or a dict setting some of ``text_color``,
            ``ratio_color``, ``metric_value_color``, ``time_color`` and ``progress_bar_color`` to a
            colour name (``"green"``, ``"bright_blue"``...) or an ANSI escape sequence (colorama's
            ``Fore.GREEN`` works). Output that is not a terminal is never coloured.
        progress_bar: draw a bar in the step line.
        equal_weights: estimate the ETA from the average time of all the steps of the phase, instead
            of a moving average that weighs recent steps more.
        show_on_valid: show the validation steps too.
        show_every_n_train_steps: ``"all"``, ``"none"`` (only the epoch summary) or an integer n
            (redraw only at every n-th step). Likewise for the next two.
        show_every_n_valid_steps: as above, for validation steps.
        show_every_n_test_steps: as above, for test steps.
        stream: where to write; ``sys.stdout`` at the time a phase begins by default.
        refresh_interval: the shortest time in seconds between two redraws of a bar.

    Example:
        >>> exp.train(train_loader, valid_loader, epochs=5,
        ...           callbacks=[ProgressionCallback(coloring=False, show_every_n_train_steps=10)])
    """

    needs_batch_values = False

    def __init__(
        self,
        *,
        coloring: bool | dict[str, str] = True,
        progress_bar: bool = True,
        equal_weights: bool = False,
        show_on_valid: bool = True,
        show_every_n_train_steps: str | int = "all",
        show_every_n_valid_steps: str | int = "all",
        show_every_n_test_steps: str | int = "all",
        stream: TextIO | None = None,
        refresh_interval: float = 0.1,
    ) -> None:
        super().__init__()
        self.colors = palette(coloring)
        self.progress_bar = progress_bar
        self.smoothing = 0.0 if equal_weights else 0.3  # tqdm's EMA factor; 0 is the plain average
        self.show_on_valid = show_on_valid
        self.every = {
            "train": every_n(show_every_n_train_steps, "show_every_n_train_steps"),
            "val": every_n(show_every_n_valid_steps, "show_every_n_valid_steps"),
            "test": every_n(show_every_n_test_steps, "show_every_n_test_steps"),
        }
        self.refresh_interval = check_number(
            "refresh_interval", refresh_interval, minimum=0, finite=False, expected="a number of seconds >= 0"
        )
        self.stream = stream
        self._out: TextIO = sys.stdout
        self._live = False
        self._closed_output = False  # the reader went away: write nothing more
        self._bar: Bar | None = None
        self._phase = "train"
        self._every_now = 1
        self._next_refresh = 0.0

    # ------------------------------------------------------------------------------- training
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._start_output()
        if not self.has_trainer:  # hooks called by hand: nothing to resume
            return
        trainer = self.trainer
        if trainer.steps_in_epoch > 0:  # resumed in the middle of an epoch
            self._open(
                "train",
                self.params.get("steps_per_epoch"),
                trainer.steps_in_epoch,
                self._epoch_text(trainer.epochs_completed + 1),
            )

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._open("train", self.params.get("steps_per_epoch"), 0, self._epoch_text(epoch_number))

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self._bar is not None and batch_number % self._every_now == 0:
            now = time.perf_counter()
            if now >= self._next_refresh:
                self._refresh(self._bar, batch_number, now)

    def on_valid_begin(self, logs: dict[str, Any]) -> None:
        self._close()
        if self.show_on_valid and self.has_trainer:
            self._open("val", None, 0, self._epoch_text(self.trainer.epochs_completed + 1) + "Valid ")

    on_valid_batch_end = on_train_batch_end
    on_test_batch_end = on_train_batch_end

    def on_valid_end(self, logs: dict[str, Any]) -> None:
        self._close()

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._close()
        steps = self.trainer.steps_in_epoch if self.has_trainer else None
        head = self._epoch_text(epoch_number) + (
            f"{self._c('text')}Steps: {self._c('ratio')}{steps} " if steps else ""
        )
        self._write_summary(head, logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self._close()

    # -------------------------------------------------------------------------------- testing
    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self._start_output()
        self._open("test", self.params.get("steps"), 0, f"{self._c('text')}Test ")

    def on_test_end(self, logs: dict[str, Any]) -> None:
        self._close()
        steps = self.params.get("steps")
        head = f"{self._c('text')}Test " + (f"steps: {self._c('ratio')}{steps} " if steps else "")
        self._write_summary(head, logs)

    # ------------------------------------------------------------------------------- drawing
    def _start_output(self) -> None:
        self._out = self.stream if self.stream is not None else sys.stdout
        isatty = getattr(self._out, "isatty", None)
        self._live = bool(isatty()) if callable(isatty) else False
        self._live = self._live and not self._closed_output

    def _c(self, field: str) -> str:
        return self.colors[f"{field}_color"] if self._live else ""

    def _epoch_text(self, epoch: int) -> str:
        epochs = self.params.get("epochs", "?")
        return f"{self._c('text')}Epoch: {self._c('ratio')}{epoch:>{len(str(epochs))}}/{epochs} "

    def _open(self, phase: str, total: int | None, initial: int, head: str) -> None:
        self._close()
        every = self.every[phase]
        if not self._live or every is None or self._closed_output:
            return
        self._phase, self._every_now = phase, every
        text, ratio, time_c, bar_c = (self._c(f) for f in ("text", "ratio", "time", "progress_bar"))
        reset = RESET if self.colors["text_color"] else ""
        if total is None:
            counter = f"{text}Step: {ratio}{{n_fmt}} {time_c}{{elapsed}}"
        else:
            bar = f" {bar_c}{{bar}}{reset}" if self.progress_bar else ""
            counter = (
                f"{text}Step: {ratio}{{n_fmt}}/{{total_fmt}} {{percentage:5.1f}}%{bar} "
                f"{text}ETA: {time_c}{{remaining}}"
            )
        self._bar = Bar(
            total=total,
            initial=initial,
            file=self._out,
            leave=False,
            bar_format=f"{head}{counter} {{metrics}}{reset}",
            mininterval=0,
            miniters=0,
            smoothing=self.smoothing,
            dynamic_ncols=True,
        )
        self._next_refresh = time.perf_counter() + self.refresh_interval

    def _refresh(self, bar: Bar, batch_number: int, now: float) -> None:
        self._next_refresh = now + self.refresh_interval
        bar.metrics = self._format_logs(self._running_values())
        with self._guarded_output():
            bar.update(batch_number - bar.n)

    def _running_values(self) -> dict[str, float]:
        """The phase's running loss and batch metrics (one device-to-host copy)."""
        if not self.has_trainer:
            return {}
        trainer = self.trainer
        accumulator = trainer.train_metrics if self._phase == "train" else trainer.eval_metrics
        if accumulator.sums is None or not accumulator.samples:
            return {}
        prefix = "" if self._phase == "train" else f"{self._phase}_"
        values = (accumulator.sums / accumulator.samples).tolist()
        return dict(zip(accumulator.batch_names(prefix), values, strict=True))

    def _close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            with self._guarded_output():
                bar.close()

    def _write_summary(self, head: str, logs: dict[str, Any]) -> None:
        if self._closed_output:
            return
        seconds = logs.get("time")
        duration = f"{self._c('time')}{float(seconds):.2f}s " if is_number(seconds) else ""
        shown = {k: v for k, v in logs.items() if k not in ("epoch", "time")}
        reset = RESET if self._live and self.colors["text_color"] else ""
        with self._guarded_output():
            self._out.write(f"{head}{duration}{self._format_logs(shown)}{reset}\n")
            self._out.flush()

    @contextlib.contextmanager
    def _guarded_output(self) -> Iterator[None]:
        """Swallow a broken pipe: stop writing, and let stdout's last flush at exit go nowhere."""
        try:
            yield
        except OSError as error:
            if not isinstance(error, BrokenPipeError) and error.errno != errno.EPIPE:
                raise
            self._closed_output, self._live = True, False
            self._bar = None
            silence_stdout(self._out)

    def _format_logs(self, values: dict[str, Any]) -> str:
        text, value_c = self._c("text"), self._c("metric_value")
        return " ".join(f"{text}{key}: {value_c}{format_number(value)}" for key, value in values.items())


def with_progress(callbacks: Sequence[Any], progress: bool | dict[str, Any]) -> list[Any]:
    """``callbacks`` plus a :class:`ProgressionCallback` when ``progress`` asks for one and none is given.

    Raises:
        ConfigurationError: ``progress`` is neither a bool nor a dict of the callback's options.
    """
    callbacks = list(callbacks)
    if isinstance(progress, dict):
        options = progress
    elif isinstance(progress, bool):
        options = {}
    else:
        raise reject("progress", progress, "True, False or a dict of ProgressionCallback options")
    if progress is False or any(isinstance(cb, ProgressionCallback) for cb in callbacks):
        return callbacks
    try:
        return [*callbacks, ProgressionCallback(**options)]
    except TypeError as error:
        raise ConfigurationError(
            f"progress: received {progress!r}, which ProgressionCallback does not accept ({error})."
        ) from None
