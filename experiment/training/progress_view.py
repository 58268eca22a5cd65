"""The trainer's counters as callbacks read and set them, kept in the loop's ``progress`` node (and,
for ``optimizer_stepped``, its accumulation groups)."""

from __future__ import annotations

from typing import Any

from experiment.state.progress import Progress
from experiment.training.accumulation import AccumulationGroups


class ProgressView:
    """``epochs_completed``, ``steps_in_epoch``, ``global_step``, ``history`` and ``stop_training``
    as attributes of the trainer, read from and written to ``self.progress``; ``optimizer_stepped``
    read from ``self.accumulation``."""

    progress: Progress
    accumulation: AccumulationGroups

    @property
    def epochs_completed(self) -> int:
        return self.progress.epochs_completed

    @epochs_completed.setter
    def epochs_completed(self, value: int) -> None:
        self.progress.epochs_completed = value

    @property
    def steps_in_epoch(self) -> int:
        return self.progress.steps_in_epoch

    @steps_in_epoch.setter
    def steps_in_epoch(self, value: int) -> None:
        self.progress.steps_in_epoch = value

    @property
    def global_step(self) -> int:
        return self.progress.global_step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.progress.global_step = value

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.progress.history

    @property
    def stop_training(self) -> bool:
        return self.progress.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.progress.stop_training = value

    @property
    def optimizer_stepped(self) -> bool:
        """Whether the training batch that just ended also ended its accumulation group."""
        return self.accumulation.stepped
