"""What one call of the loop trains on, and the commit points the loop signals."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from experiment.callbacks.callback_list import CallbackList
from experiment.training.data import BatchSource


@dataclasses.dataclass
class TrainingPlan:
    """The data, target and collaborators of one training call.

    Attributes:
        train: the training batches of each epoch.
        valid: the validation batches, evaluated at each epoch end; optional.
        epochs: the total number of epochs of the run (not the number to add).
        callbacks: the callbacks, called in order.
        schedulers: the torch LR schedulers of the call, each saved with every commit.
        epoch_schedulers: those of ``schedulers`` stepped once per epoch (ReduceLROnPlateau on
            ``monitor``); the others step after every optimizer step, through a callback. None:
            all of them.
        monitor: the logged key that decides the best epoch.
        elastic: whether the run may resume on another number of processes (True or "exact").
        global_batch: samples per global batch of an elastic run (None: not elastic).
        elastic_groups: groups per global batch with ``elastic="exact"`` (None otherwise).
    """

    train: BatchSource
    valid: BatchSource | None
    epochs: int
    callbacks: CallbackList
    schedulers: Sequence[Any] = ()
    epoch_schedulers: Sequence[Any] | None = None
    monitor: str = "val_loss"
    elastic: bool | str = False
    global_batch: int | None = None
    elastic_groups: int | None = None


class CommitPoints(Protocol):
    """The receiver of the loop's commit moments: it owns the cadence and writes the state."""

    def due(self, global_step: int) -> bool:
        """Whether a step checkpoint is due after ``global_step`` completed training steps."""
        ...

    def commit(self, reason: str) -> None:
        """Commit the run's whole state now; ``reason`` is "step", "epoch" or "interrupt"."""
        ...


class NoCommits:
    """Commit points that write nothing (training outside a run directory)."""

    def due(self, global_step: int) -> bool:
        return False

    def commit(self, reason: str) -> None:
        pass
