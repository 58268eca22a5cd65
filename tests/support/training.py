"""A tiny seeded classifier, its data, and helpers to interrupt and resume runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiment import Callback, Experiment


class Interrupt(Exception):
    """Raised by InterruptAt to simulate a crash in the middle of training."""


class InterruptAt(Callback):
    """Raises Interrupt once the loop has completed ``global_step`` training steps."""

    needs_batch_values = False

    def __init__(self, global_step: int) -> None:
        super().__init__()
        self.global_step = global_step

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.global_step:
            raise Interrupt(f"interrupted at step {self.global_step}")


class SendSignal(Callback):
    """Raises ``signum`` in this thread ``times`` times when global step ``step`` ends.

    ``signal.raise_signal`` runs the Python handler before it returns, so each signal is handled
    before the next one is sent.
    """

    needs_batch_values = False

    def __init__(self, step: int, signum: int, times: int = 1) -> None:
        super().__init__()
        self.step, self.signum, self.times = step, signum, times

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step:
            for _ in range(self.times):
                signal.raise_signal(self.signum)


class CrashAtEpochEnd(Callback):
    """Raises Interrupt in on_epoch_end of ``epoch``: after the epoch's files were written by the
    callbacks before it, before the epoch is committed."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number == self.epoch:
            raise Interrupt(f"crash at the end of epoch {epoch_number}")


def make_data(samples: int = 96, features: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def make_network(seed: int = 0, features: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def make_experiment(directory: Path, **kwargs: Any) -> Experiment:
    """A fresh network, SGD with momentum and an Experiment on ``directory``."""
    network = make_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    options = {"loss_function": "cross_entropy", "batch_metrics": ["accuracy"], "epoch_metrics": ["f1"]}
    options.update(kwargs)
    return Experiment(directory, network, optimizer=optimizer, **options)


def train_run(
    directory: Path,
    *,
    epochs: int = 4,
    interrupt_at: int | None = None,
    callbacks: Callable[[], Sequence[Any]] = lambda: (),
    schedulers: Callable[[torch.optim.Optimizer], Sequence[Any]] = lambda opt: (),
    experiment_options: dict[str, Any] | None = None,
    **train_options: Any,
) -> Experiment:
    """Build everything afresh (as a restarted script would) and train; swallow an Interrupt."""
    exp = make_experiment(directory, **(experiment_options or {}))
    x, y = make_data()
    xv, yv = make_data(48, seed=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    extra = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    options = {"epochs": epochs, "lr_schedulers": schedulers(exp.optimizer), **train_options}
    with contextlib.suppress(Interrupt):
        exp.train(loader, (xv, yv), callbacks=[*callbacks(), *extra], **options)
    return exp


def assert_same_training_state(a: Experiment, b: Experiment) -> None:
    """Network and optimizer states bit-identical, logs equal but for the time column."""
    for key, value in a.network.state_dict().items():
        assert torch.equal(value, b.network.state_dict()[key]), key
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, values in state_a["state"].items():
        for name, tensor in values.items():
            assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(state_b["state"][index][name])), name
    logs_a, logs_b = a.logs.drop(columns="time"), b.logs.drop(columns="time")
    assert logs_a.equals(logs_b), f"\n{logs_a}\n!=\n{logs_b}"
