"""TerminateOnNaN: stop training cleanly as soon as a batch loss is NaN or infinite."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from experiment.callbacks.base import Callback

logger = logging.getLogger(__name__)


class TerminateOnNaN(Callback):
    """Stops training at the end of the batch whose loss is NaN or infinite.

    Without it, a non-finite loss raises :class:`~experiment.errors.NonFiniteLossError` and nothing
    of the broken epoch is committed. With it, the loop leaves the epoch after that batch, finishes
    it (validation, ``on_epoch_end``, commit) and stops; the run's status becomes ``stopped`` and a
    later ``train()`` call on the directory returns at once.

    The callback reads ``logs["loss"]`` of every batch, so the loop copies the batch values from
    the device at each step while it is present. The loss may be a number, a NumPy scalar or array,
    or a tensor; any non-finite element stops training.

    Example:
        >>> exp.train(train_loader, valid_loader, epochs=10, callbacks=[TerminateOnNaN()])
    """

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        loss = logs["loss"]
        if _all_finite(loss):
            return
        self.trainer.stop_training = True
        logger.warning(
            "Batch %d (global step %s): the loss is %s; stopping training.",
            batch_number,
            self.trainer.global_step,
            loss,
        )


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):  # the loop's own logs: the common case, without NumPy
        return math.isfinite(value)
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
