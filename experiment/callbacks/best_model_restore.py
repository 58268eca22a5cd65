"""BestModelRestore: put the weights of the best epoch back into the network when training ends."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.state.best import HoldsMonitoredBest, MonitoredBest, monitor_changed, monitored_value
from experiment.state.torch_nodes import plain_module

logger = logging.getLogger(__name__)


class BestModelRestore(HoldsMonitoredBest, Callback):
    """Keeps a copy of the best epoch's weights in memory and loads it at the end of training.

    The copy (on the CPU), the best value and its epoch are saved with each checkpoint, so a
    resumed run restores the same weights as an uninterrupted one. This makes every checkpoint
    hold the weights twice; to keep the best weights on disk instead, read them with
    ``Experiment.test(checkpoint="best")``.

    Training that is already complete when ``train()`` is called again does not run the hooks, so
    nothing is restored then: the network holds the last committed weights. Training that ends
    before any epoch gave a value of the monitor (stopped in the first epoch, or every value NaN)
    warns that there was nothing to restore.

    Args:
        monitor: the key of the epoch logs that decides the best epoch.
        mode: "min" when smaller is better, "max" when larger is better; by default inferred from
            ``monitor``'s name (accuracy-like keys "max", losses "min"; see
            :func:`~experiment.state.best.inferred_mode`).
        verbose: log each new best epoch and the restore at INFO level (DEBUG otherwise).

    Example:
        >>> restore = BestModelRestore(monitor="val_acc", mode="max")
        >>> exp.train(train_loader, valid_loader, epochs=20, callbacks=[restore])
        >>> restore.best_epoch  # the network now holds the weights of this epoch
    """

    needs_batch_values = False
    restores_weights_at_end = True
    handles_weights = True

    def __init__(self, *, monitor: str = "val_loss", mode: str | None = None, verbose: bool = False) -> None:
        super().__init__()
        self.best = MonitoredBest(monitor, mode, owner="BestModelRestore")
        self.verbose = verbose
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _log(self, message: str, *args: Any) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, message, *args)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        value = monitored_value(logs, self.monitor, role="BestModelRestore monitor")
        if not self.best.improves(value):
            return
        network = plain_module(self.trainer.network)  # weights without torch.compile's prefix
        self._log("Epoch %d: %s improved from %s to %s.", epoch_number, self.monitor, self.best_value, value)
        self.best.update(value, epoch_number)
        self.best_weights = {
            name: tensor.detach().to("cpu", copy=True) for name, tensor in network.state_dict().items()
        }

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.best_weights is None:
            warnings.warn(
                f"BestModelRestore(monitor={self.monitor!r}): no epoch gave a best value, nothing to "
                "restore; the network keeps its last weights.",
                stacklevel=2,
            )
            return
        self._log(
            "Restoring the weights of epoch %d (%s = %s).", self.best_epoch, self.monitor, self.best_value
        )
        plain_module(self.trainer.network).load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        """The best (monitor, mode, epoch, value) and a CPU copy of its weights."""
        return {"best": self.best.state_dict(), "best_weights": self.best_weights}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return missing_state_keys("BestModelRestore", state, ("best", "best_weights")) or (
            self.best.state_problems(state["best"])
        )

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best and its weights; a best of another monitor or mode warns and starts afresh."""
        if monitor_changed("BestModelRestore", state["best"], self.monitor, self.mode):
            self.best.reset()
            self.best_weights = None
            return
        self.best.load_state_dict(state["best"])
        self.best_weights = state["best_weights"]
