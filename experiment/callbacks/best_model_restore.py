"""BestModelRestore: put the weights of the best epoch back into the network when training ends."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from experiment.callbacks.base import Callback
from experiment.errors import ConfigurationError
from experiment.state.monitor import check_mode, is_improvement, monitored_value

logger = logging.getLogger(__name__)


class BestModelRestore(Callback):
    """Keeps a copy of the best epoch's weights in memory and loads it at the end of training.

    The copy (on the CPU), the best value and its epoch are saved with each checkpoint, so a
    resumed run restores the same weights as an uninterrupted one. This makes every checkpoint
    hold the weights twice; to keep the best weights on disk instead, read them with
    ``Experiment.test(checkpoint="best")``.

    Training that is already complete when ``train()`` is called again does not run the hooks, so
    nothing is restored then: the network holds the last committed weights.

    Args:
        monitor: the key of the epoch logs that decides the best epoch.
        mode: "min" when smaller is better, "max" when larger is better.
        verbose: log each new best epoch and the restore at INFO level (DEBUG otherwise).

    Example:
        >>> restore = BestModelRestore(monitor="val_acc", mode="max")
        >>> exp.train(train_loader, valid_loader, epochs=20, callbacks=[restore])
        >>> restore.best_epoch  # the network now holds the weights of this epoch
    """

    needs_batch_values = False

    def __init__(self, *, monitor: str = "val_loss", mode: str = "min", verbose: bool = False) -> None:
        super().__init__()
        self.monitor = monitor
        self.mode = check_mode(mode)
        self.verbose = verbose
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _log(self, message: str, *args: Any) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, message, *args)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        value = monitored_value(logs, self.monitor, role="BestModelRestore monitor")
        if not is_improvement(value, self.best_value, self.mode):
            return
        if self.trainer is None:
            raise ConfigurationError(
                "BestModelRestore received no trainer; expected to be run by a training loop. Pass it "
                "to Experiment.train(callbacks=[...])."
            )
        self._log("Epoch %d: %s improved from %s to %s.", epoch_number, self.monitor, self.best_value, value)
        self.best_value, self.best_epoch = value, epoch_number
        self.best_weights = {
            name: tensor.detach().to("cpu", copy=True)
            for name, tensor in self.trainer.network.state_dict().items()
        }

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.best_weights is None or self.trainer is None:
            return
        self._log(
            "Restoring the weights of epoch %d (%s = %s).", self.best_epoch, self.monitor, self.best_value
        )
        self.trainer.network.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            warnings.warn(
                f"BestModelRestore: the checkpoint's state watched {state['monitor']!r} ({state['mode']}); "
                f"this one watches {self.monitor!r} ({self.mode}). The best epoch is searched afresh.",
                stacklevel=2,
            )
            return
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_weights = state["best_weights"]
