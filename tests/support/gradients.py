"""Gradient trackers driven by hand: a trainer stand-in and one epoch of known gradients."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn


def fake_trainer(network: nn.Module) -> SimpleNamespace:
    """What a gradient tracker reads of its trainer: the network and the loop position."""
    return SimpleNamespace(network=network, epochs_completed=0, steps_in_epoch=0)


def track_one_epoch(
    tracker: Any, network: nn.Linear, logs: dict[str, Any], batches: int = 3
) -> list[torch.Tensor]:
    """Run ``tracker`` over epoch 1 of ``batches`` backward passes of random gradients of a
    ``Linear(3, 2)``; return the weight gradients it saw, in order."""
    tracker.set_trainer(fake_trainer(network))
    tracker.on_train_begin({})
    tracker.on_epoch_begin(1, {})
    grads = [torch.randn(2, 3) for _ in range(batches)]
    for batch, grad in enumerate(grads, start=1):
        network.weight.grad, network.bias.grad = grad, torch.randn(2)
        tracker.on_backward_end(batch)
    tracker.on_epoch_end(1, logs)
    return grads
