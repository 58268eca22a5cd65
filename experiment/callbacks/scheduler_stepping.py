"""Stepping a torch LR scheduler given to ``train(lr_schedulers=...)`` after every optimizer step."""

from __future__ import annotations

from typing import Any

from experiment.callbacks.base import Callback, optimizer_stepped


class EveryOptimizerStep(Callback):
    """Steps ``scheduler`` after each optimizer step (once per group of accumulated batches).

    The run layer adds one for each ``{"scheduler": s, "interval": "step"}`` of ``lr_schedulers``.
    It holds no state of its own: the scheduler is saved as the run's ``schedulers/<i>`` node, and
    it steps before the step's commit, so a resume mid-epoch continues its schedule exactly.
    """

    needs_batch_values = False

    def __init__(self, scheduler: Any) -> None:
        super().__init__()
        self.scheduler = scheduler

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if optimizer_stepped(self.trainer):
            self.scheduler.step()
