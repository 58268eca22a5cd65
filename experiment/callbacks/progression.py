"""ProgressionCallback: the progress display of training and testing.

Training begins with a line naming the run and saying whether it starts afresh or where it
resumes. On a terminal, each phase (an epoch's training steps, its validation, a test) has a line
redrawn in place: step, bar, the phase's ETA and the run's, pace, running loss and metrics, with
the least useful fields dropped to fit the width; each epoch ends with a summary line. Elsewhere (a
file, a pipe, a CI log), a plain step line comes at most every ``log_every_seconds`` within a phase,
besides the summary lines.

Per step, the display costs a counter check and a clock read (on a terminal, also a look at the
signal handler, to end its line before an interrupt is reported). Running values are copied from
the device only when a line is drawn (``needs_batch_values = False``). The phase on show, from its
first step line to its last, is a :class:`~experiment.callbacks.progress_phase.ShownPhase`; this
module decides which phase to show when, and writes the start and summary lines.

A closed output (``python train.py | head -3``, a closed terminal) never fails the run: the first
write that meets it ends the display for good, and the process's stdout is pointed at the null
device, as the Python documentation recommends, so that the interpreter does not complain at exit.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from experiment.arguments import check_number
from experiment.callbacks.base import Callback
from experiment.callbacks.progress_format import epoch_head, every_n, palette, start_line, summary_line
from experiment.callbacks.progress_line import Pace, Phase
from experiment.callbacks.progress_phase import ShownPhase
from experiment.callbacks.progress_terminal import is_terminal, write_through


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
        equal_weights: estimate the pace from the average time of all the steps of the phase,
            instead of a moving average that weighs recent steps more.
        show_on_valid: show the validation steps too.
        show_every_n_train_steps: ``"all"``, ``"none"`` (only the epoch summary) or an integer n
            (show only every n-th step). ``show_every_n_valid_steps`` and
            ``show_every_n_test_steps`` likewise, for validation and test steps.
        stream: where to write; ``sys.stdout`` at the time a phase begins by default.
        refresh_interval: on a terminal, the shortest time in seconds between two redraws.
        log_every_seconds: elsewhere, the shortest time in seconds between two step lines inside
            a phase (``math.inf``: only the summary lines).
        clock: an object with ``perf_counter()`` and ``time()``, as the ``time`` module (the
            default) has; tests pass a fake one.

    Example:
        >>> exp.train(train_loader, valid_loader, epochs=5,
        ...           callbacks=[ProgressionCallback(coloring=False, log_every_seconds=10)])
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

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
        log_every_seconds: float = 30.0,
        clock: Any = None,
    ) -> None:
        super().__init__()
        self.colors = palette(coloring)
        self.progress_bar = progress_bar
        self.smoothing = 0.0 if equal_weights else 0.3  # tqdm's EMA factor; 0 is the plain average
        self.show_on_valid = show_on_valid
        shows = {"train": show_every_n_train_steps, "val": show_every_n_valid_steps}
        shows["test"] = show_every_n_test_steps
        self.every = {
            phase: every_n(value, f"show_every_n_{'valid' if phase == 'val' else phase}_steps")
            for phase, value in shows.items()
        }
        self.refresh_interval = _seconds("refresh_interval", refresh_interval)
        self.log_every_seconds = _seconds("log_every_seconds", log_every_seconds)
        self.stream = stream
        self.clock = clock
        self._out: TextIO = sys.stdout
        self._live = False
        self._closed_output = False  # the reader went away: write nothing more
        self._announced = False  # the start line was written before the checkpoint was loaded
        self._shown: ShownPhase | None = None  # the phase on show

    # ------------------------------------------------------------------------------- training
    def announce_start(self, params: dict[str, Any], position: Any) -> None:
        """Write the start line now, before a resumed run loads its checkpoint (which may take a
        while for a large state); ``position`` has the checkpoint's ``epochs_completed``,
        ``steps_in_epoch`` and ``global_step``. Called by the run layer; ``on_train_begin`` then
        does not write the line again."""
        self._start_output()
        self._write(start_line(params, position, self._wall_time) + "\n")
        self._announced = True

    def announce_no_training(self, line: str) -> None:
        """Write the one line that says why a ``train()`` call trains nothing (its run is over)."""
        self._start_output()
        self._write(line + "\n")

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._start_output()
        announced, self._announced = getattr(self, "_announced", False), False
        if not self.has_trainer:  # hooks called by hand: no run to name, nothing to resume
            return
        trainer = self.trainer
        if not announced:
            self._write(start_line(self.params, trainer, self._wall_time) + "\n")
        if trainer.steps_in_epoch > 0:  # resumed in the middle of an epoch
            epoch = trainer.epochs_completed + 1
            self._open("train", self.params.get("steps_per_epoch"), trainer.steps_in_epoch, epoch)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._open("train", self.params.get("steps_per_epoch"), 0, epoch_number)

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self._shown is not None and self._shown.step(batch_number, self._now):
            self._shown = None  # a signal asked the loop to stop: the line was left as it stands

    def on_valid_begin(self, logs: dict[str, Any]) -> None:
        self._close()
        if self.show_on_valid and self.has_trainer:
            self._open("val", None, 0, self.trainer.epochs_completed + 1)

    on_valid_batch_end = on_train_batch_end
    on_test_batch_end = on_train_batch_end

    def on_valid_end(self, logs: dict[str, Any]) -> None:
        self._close()

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._close()
        steps = self.trainer.steps_in_epoch if self.has_trainer else None
        head = epoch_head(epoch_number, self.params.get("epochs", "?"), self._c) + (
            f"{self._c('text')}Steps: {self._c('ratio')}{steps} " if steps else ""
        )
        self._write(summary_line(head, logs, self._c))

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self._close()

    # -------------------------------------------------------------------------------- testing
    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self._start_output()
        self._open("test", self.params.get("steps"), 0, None)

    def on_test_end(self, logs: dict[str, Any]) -> None:
        self._close()
        steps = self.params.get("steps")
        head = f"{self._c('text')}Test " + (f"steps: {self._c('ratio')}{steps} " if steps else "")
        self._write(summary_line(head, logs, self._c))

    # ------------------------------------------------------------------------------- drawing
    def _now(self) -> float:
        return (self.clock or time).perf_counter()

    def _wall_time(self) -> float:
        return (self.clock or time).time()

    def _start_output(self) -> None:
        self._close()  # a phase that an exception left open
        self._out = self.stream if self.stream is not None else sys.stdout
        self._live = is_terminal(self._out) and not self._closed_output

    def _c(self, field: str) -> str:
        return self.colors[f"{field}_color"] if self._live else ""

    def _open(self, name: str, total: int | None, initial: int, epoch: int | None) -> None:
        """Begin showing a phase; ``epoch`` None for a test."""
        self._close()
        every = self.every[name]
        if every is None or self._closed_output:
            return
        now = self._now()
        head = (
            f"{self._c('text')}Test "
            if epoch is None
            else epoch_head(epoch, self.params.get("epochs", "?"), self._c)
        )
        head += f"{self._c('text')}Valid " if name == "val" else ""
        epochs = self.params.get("epochs")
        left = epochs - epoch if name == "train" and isinstance(epochs, int) and epoch else 0
        interval = self.refresh_interval if self._live else self.log_every_seconds
        phase = Phase(name, head, total, every, Pace(self.smoothing, now, initial), now + interval, left)
        self._shown = ShownPhase(
            phase,
            self._write,
            live=self._live,
            interval=interval,
            color=self._c,
            progress_bar=self.progress_bar,
            encoding=getattr(self._out, "encoding", None),
            trainer=self.trainer if self.has_trainer else None,
        )
        self._shown.start(now)

    def _close(self) -> None:
        """Forget the phase shown and erase its terminal line."""
        shown, self._shown = self._shown, None
        if shown is not None:
            shown.close()

    def _write(self, text: str) -> None:
        """Write unless the output is gone; the first write that finds it gone ends the display."""
        if not self._closed_output and not write_through(self._out, text):
            self._closed_output, self._live = True, False
            self._close()  # writes nothing more


def _seconds(name: str, value: Any) -> float:
    return check_number(name, value, minimum=0, finite=False, expected="a number of seconds >= 0")
