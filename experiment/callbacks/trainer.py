"""Trainer: what a callback sees of the loop that runs it.

The training loop (:class:`experiment.training.loop.TrainingLoop`) satisfies this protocol; the
callbacks depend on the protocol only, so they never import the training layer, and a test can hand
them any object with these attributes (``types.SimpleNamespace(network=..., stop_training=False)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the protocol costs no torch import
    import torch
    from torch import nn


class Trainer(Protocol):
    """The loop running the callbacks, as the callbacks see it.

    Progress is counted in completed units, as the loop counts it.

    Attributes:
        network: the module being trained.
        optimizer: its optimizer.
        stop_training: set it to True to stop training after the current epoch (or, from a batch
            hook, after the current batch's epoch is finished); the stop is part of the saved state.
        epochs_completed: epochs finished so far.
        steps_in_epoch: training batches finished in the current epoch (the data position).
        global_step: optimizer steps finished since the run began (one per batch, or one per
            group of ``accumulate_grad_batches`` batches).
        optimizer_stepped: whether the batch that just ended ended such a group.
        history: the logs of each finished epoch, oldest first.
        train_metrics: the running sums of the training loss and batch metrics (read them only where
            something is shown: reading copies from the device).
        eval_metrics: the same for validation and testing.
    """

    network: nn.Module
    optimizer: torch.optim.Optimizer
    stop_training: bool
    epochs_completed: int
    steps_in_epoch: int
    global_step: int
    train_metrics: Any
    eval_metrics: Any

    @property
    def optimizer_stepped(self) -> bool: ...

    @property
    def history(self) -> list[dict[str, Any]]: ...
