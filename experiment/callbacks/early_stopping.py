"""EarlyStopping: stop training when a monitored value has stopped improving, across resumes.

The decision is kept apart from the callback: :class:`PatienceChecker` is a pure object fed one value
per epoch, and :class:`EarlyStopping` only reads the value from the epoch's logs and tells the loop
to stop. Both are stateful, so a resumed run remembers how long it has already waited.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from experiment.callbacks.base import Callback
from experiment.errors import ConfigurationError
from experiment.state.monitor import check_mode, is_improvement, monitored_value

logger = logging.getLogger(__name__)


class PatienceChecker:
    """Decides, value after value, whether a monitored quantity has stopped improving.

    A value improves when it beats the best one by more than ``min_delta``; NaN never does.
    After ``patience`` values in a row without improvement (at least one), :meth:`update` answers
    True.

    Args:
        mode: "min" or "max".
        min_delta: the smallest change that counts as an improvement (its sign is ignored).
        patience: after this many values in a row without improvement, stop; 0 and 1 both stop at
            the first value that does not improve.

    Example:
        >>> checker = PatienceChecker("min", patience=2)
        >>> [checker.update(v) for v in (1.0, 0.5, 0.7, 0.6)]
        [False, False, False, True]
    """

    def __init__(self, mode: str = "min", *, min_delta: float = 0.0, patience: int = 0) -> None:
        self.mode = check_mode(mode)
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or math.isnan(min_delta):
            raise ConfigurationError(f"min_delta: received {min_delta!r}; expected a number.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigurationError(f"patience: received {patience!r}; expected an integer >= 0.")
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.best: float | None = None
        self.wait = 0

    def update(self, value: float) -> bool:
        """Record one value; return whether the patience is exhausted."""
        if is_improvement(value, self.best, self.mode, self.min_delta):
            self.best = float(value)
            self.wait = 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], int(state["wait"])


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
        mode: "min" when smaller is better, "max" when larger is better.

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
        mode: str = "min",
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.verbose = verbose
        self.checker = PatienceChecker(mode, min_delta=min_delta, patience=patience)
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
        if self.checker.update(value) and self.stopped_epoch == 0:
            self.stopped_epoch = epoch_number
            if self.trainer is not None:
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
        return {
            "monitor": self.monitor,
            "mode": self.checker.mode,
            "stopped_epoch": self.stopped_epoch,
            **self.checker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["monitor"], state["mode"]) != (self.monitor, self.checker.mode):
            warnings.warn(
                f"EarlyStopping: the checkpoint's state watched {state['monitor']!r} ({state['mode']}); "
                f"this one watches {self.monitor!r} ({self.checker.mode}). Its patience starts afresh.",
                stacklevel=2,
            )
            return
        self.checker.load_state_dict(state)
        self.stopped_epoch = int(state["stopped_epoch"])
