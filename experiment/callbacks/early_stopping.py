"""EarlyStopping: stop training when a monitored value has stopped improving, across resumes.

The decision is kept apart from the callback: :class:`PatienceChecker` is a pure object fed one value
per epoch, and :class:`EarlyStopping` only reads the value from the epoch's logs and tells the loop
to stop. Both are stateful, so a resumed run remembers how long it has already waited.
"""

from __future__ import annotations

import logging
from typing import Any

from experiment.arguments import check_int
from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.state.best import MonitoredBest, monitor_changed, monitored_value

logger = logging.getLogger(__name__)


class PatienceChecker:
    """Decides, value after value, whether a monitored quantity has stopped improving.

    A value improves when it beats the best one by more than ``min_delta``; NaN never does (the
    best is a :class:`~experiment.state.best.MonitoredBest`). After ``patience`` values in a row
    without improvement (at least one), :meth:`update` answers True.

    Args:
        mode: "min" or "max"; None infers it from ``monitor``'s name.
        min_delta: the smallest change that counts as an improvement (its sign is ignored).
        patience: after this many values in a row without improvement, stop; 0 and 1 both stop at
            the first value that does not improve.
        monitor: the name of the watched quantity (saved with the best).

    Example:
        >>> checker = PatienceChecker("min", patience=2)
        >>> [checker.update(v) for v in (1.0, 0.5, 0.7, 0.6)]
        [False, False, False, True]
    """

    def __init__(
        self, mode: str | None = "min", *, min_delta: float = 0.0, patience: int = 0, monitor: str = "value"
    ) -> None:
        self.tracked = MonitoredBest(monitor, mode, min_delta=min_delta, owner="EarlyStopping")
        self.patience = check_int("patience", patience, minimum=0)
        self.wait = 0

    @property
    def mode(self) -> str:
        return self.tracked.mode

    @property
    def min_delta(self) -> float:
        return self.tracked.min_delta

    @property
    def best(self) -> float | None:
        """The best value so far (None before the first that is not NaN)."""
        return self.tracked.value

    def update(self, value: float, epoch: int | None = None) -> bool:
        """Record one value (of ``epoch``, if known); return whether the patience is exhausted."""
        if self.tracked.update(value, epoch):
            self.wait = 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def reset(self) -> None:
        """Forget the best and the wait (a fresh start)."""
        self.tracked.reset()
        self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracked.state_dict(), "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the saved best and wait; a best of another monitor or mode warns and starts afresh."""
        if monitor_changed(self.tracked.owner, state["best"], self.tracked.monitor, self.tracked.mode):
            self.reset()
            return
        self.tracked.load_state_dict(state["best"])
        self.wait = int(state["wait"])


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    The count of epochs without improvement, the best value and the epoch of the stop are saved
    with each checkpoint: a run interrupted in the middle of its patience window stops at the same
    epoch as an uninterrupted one. Once it has stopped, the stop is part of the committed state,
    so calling ``train()`` again on the directory returns at once (status ``stopped``).

    Args:
        monitor: the key of the epoch logs to watch (``val_loss``, ``val_acc``, ``loss``...).
        min_delta: a change smaller than this (in absolute value) is not an improvement.
        patience: epochs without improvement after which training stops; 0 stops at the first.
        verbose: log the stop at INFO level (DEBUG otherwise).
        mode: "min" when smaller is better, "max" when larger is better; by default inferred from
            ``monitor``'s name (accuracy-like keys "max", losses "min"; see
            :func:`~experiment.state.best.inferred_mode`).

    Example:
        >>> stopper = EarlyStopping(monitor="val_acc", mode="max", patience=5)
        >>> exp.train(train_loader, valid_loader, epochs=100, callbacks=[stopper])
    """

    needs_batch_values = False

    def __init__(
        self,
        *,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: bool = False,
        mode: str | None = None,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.verbose = verbose
        self.checker = PatienceChecker(mode, min_delta=min_delta, patience=patience, monitor=monitor)
        self.stopped_epoch = 0

    @property
    def wait(self) -> int:
        """Epochs in a row without improvement."""
        return self.checker.wait

    @property
    def best(self) -> float | None:
        """The best value seen so far (None before the first epoch)."""
        return self.checker.best

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        value = monitored_value(logs, self.monitor, role="EarlyStopping monitor")
        if self.checker.update(value, epoch_number) and self.stopped_epoch == 0:
            self.stopped_epoch = epoch_number
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.stopped_epoch:
            logger.log(
                logging.INFO if self.verbose else logging.DEBUG,
                "Epoch %d: early stopping (%s did not improve on %s for %d epoch(s)).",
                self.stopped_epoch,
                self.monitor,
                self.best,
                self.wait,
            )

    def state_dict(self) -> dict[str, Any]:
        """The best (monitor, mode, epoch, value), the epochs waited, the epoch of the stop."""
        return {**self.checker.state_dict(), "stopped_epoch": self.stopped_epoch}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        keys = ("best", "wait", "stopped_epoch")
        return missing_state_keys("EarlyStopping", state, keys) or self.checker.tracked.state_problems(
            state["best"]
        )

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the patience window; one of another monitor or mode warns and starts afresh."""
        if monitor_changed("EarlyStopping", state["best"], self.monitor, self.checker.mode):
            self.checker.reset()
            self.stopped_epoch = 0
            return
        self.checker.load_state_dict(state)
        self.stopped_epoch = int(state["stopped_epoch"])
