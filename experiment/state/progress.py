"""Progress: where a run stands, counted in completed units, with its history and epoch clock.

Example:
    >>> progress = Progress()
    >>> progress.global_step, progress.epochs_completed
    (0, 0)
"""

from __future__ import annotations

import time
from typing import Any

_KEYS = ("epochs_completed", "steps_in_epoch", "global_step", "stop_training", "history", "epoch_time")


class Progress:
    """The position of a training run: the ``progress`` node of its state tree.

    Attributes:
        epochs_completed: epochs whose end was reached (and committed, once saved).
        steps_in_epoch: training batches done in the current epoch (0 between epochs).
        global_step: optimizer steps done since the run started (one per batch, or one per group
            of accumulated batches).
        stop_training: set by a callback or policy to stop after the current batch.
        history: one logs dict per completed epoch.
        epoch_time: seconds spent in the current epoch before the clock was last read, across
            resumes. The clock runs between :meth:`start_clock` and :meth:`read_clock`.
    """

    #: The fields that say where a run stands (the rest is its history and clock).
    POSITION = ("epochs_completed", "steps_in_epoch", "global_step")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every step and epoch (a fresh start)."""
        self.epochs_completed = self.steps_in_epoch = self.global_step = 0
        self.stop_training = False
        self.history: list[dict[str, Any]] = []
        self.epoch_time = 0.0
        self._clock_start: float | None = None

    def is_over(self, epochs: int) -> bool:
        """Whether training has reached ``epochs`` or was stopped: no more batches are drawn."""
        return self.stop_training or self.epochs_completed >= epochs

    @staticmethod
    def saved_is_over(state_dict: dict[str, Any], epochs: int) -> bool:
        """:meth:`is_over` for a saved progress state."""
        return bool(state_dict["stop_training"]) or state_dict["epochs_completed"] >= epochs

    @property
    def mid_epoch(self) -> bool:
        """Whether the current epoch has begun (some of its steps are done)."""
        return self.steps_in_epoch > 0

    def start_clock(self, *, fresh: bool) -> None:
        """Start timing the current epoch; ``fresh`` forgets the time of an earlier process."""
        if fresh:
            self.epoch_time = 0.0
        self._clock_start = time.perf_counter()

    def read_clock(self) -> float:
        """Add the time since the clock was last started or read; return the epoch's seconds."""
        if self._clock_start is not None:
            now = time.perf_counter()
            self.epoch_time += now - self._clock_start
            self._clock_start = now
        return self.epoch_time

    def batch_done(self, optimizer_stepped: bool) -> None:
        """Count a completed training batch, and the optimizer step after it if it ended its
        accumulation group (always, without gradient accumulation)."""
        self.steps_in_epoch += 1
        self.global_step += optimizer_stepped

    def optimizer_step_done(self) -> None:
        """Count the optimizer step of a group that the epoch's data ended inside, taken after
        the epoch's last batch."""
        self.global_step += 1

    def epoch_done(self, logs: dict[str, Any]) -> None:
        """Record a completed epoch's logs and move to the next epoch."""
        self.history.append(logs)
        self.epochs_completed += 1
        self.steps_in_epoch = 0

    # ---------------------------------------------------------------------------------- state
    def before_commit(self) -> None:
        """Bring ``epoch_time`` up to now, so that the commit saves the time spent so far."""
        if self.mid_epoch:
            self.read_clock()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_completed": self.epochs_completed,
            "steps_in_epoch": self.steps_in_epoch,
            "global_step": self.global_step,
            "stop_training": self.stop_training,
            "history": [dict(row) for row in self.history],
            "epoch_time": self.epoch_time if self.mid_epoch else 0.0,
        }

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        missing = [key for key in _KEYS if key not in state_dict]
        return [f"the progress state lacks {missing}"] if missing else []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs_completed = int(state_dict["epochs_completed"])
        self.steps_in_epoch = int(state_dict["steps_in_epoch"])
        self.global_step = int(state_dict["global_step"])
        self.stop_training = bool(state_dict["stop_training"])
        self.history = [dict(row) for row in state_dict["history"]]
        self.epoch_time = float(state_dict["epoch_time"])
        self._clock_start = None
