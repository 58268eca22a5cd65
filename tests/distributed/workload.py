"""What the torchrun scripts train: a tiny seeded network with BatchNorm and Dropout (optionally given
already wrapped in DistributedDataParallel), AdamW, their data in the forms a user gives (a tuple, a
Dataset, a DataLoader, one with a DistributedSampler of the user's), and the callbacks that
interrupt and observe a run.

Imported by the scripts that torchrun runs (scenarios.py, train_script.py) and by the tests, which
build single-process runs of the same network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from experiment import Callback, Experiment
from tests.support.training import Interrupt, make_data

#: The ``seed`` argument of every ``train`` call; rank r is expected to seed with SEED + r.
SEED = 7
#: The seed of the DistributedSampler that the user builds ("user-sampler" data): not SEED, so that
#: the order each rank loads tells the user's sampler from one the library would have made.
USER_SAMPLER_SEED = 11
FEATURES = 6


def make_network(seed: int = 0) -> nn.Module:
    """The user's network, its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )


def make_experiment(
    run_dir: Path, *, network: nn.Module | None = None, network_seed: int = 0, **options: Any
) -> Experiment:
    """AdamW and an Experiment on ``run_dir`` for ``network`` (by default a fresh one drawn with
    ``network_seed``), as a restarted script builds them."""
    network = network if network is not None else make_network(network_seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01, weight_decay=0.01)
    settings: dict[str, Any] = {
        "loss_function": "cross_entropy",
        "batch_metrics": ["accuracy"],
        "epoch_metrics": ["f1"],
    }
    settings.update(options)
    return Experiment(run_dir, network, optimizer=optimizer, **settings)


class RecordingDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A map-style dataset of ``(x, y)`` pairs that records the indices it is asked for, per epoch
    (:class:`MarkEpochs` opens a new list at each epoch begin)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.epochs: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.epochs:
            self.epochs[-1].append(int(index))
        return self.x[index], self.y[index]


@dataclass
class Data:
    """The training and validation data of a run, in the form the scenario gives them."""

    train: Any
    valid: Any
    recorder: RecordingDataset | None = None


def make_data_as(kind: str, *, samples: int, valid_samples: int, batch_size: int) -> Data:
    """Training data as a ``"tuple"``, a ``"dataset"``, a shuffling ``"loader"`` (the default
    sampler, for the library to replace) or a ``"user-sampler"`` loader (a DistributedSampler
    seeded with USER_SAMPLER_SEED, for the library to keep); validation data likewise (a tuple for
    a Dataset and for the user's sampler)."""
    x, y = make_data(samples, FEATURES, seed=1)
    xv, yv = make_data(valid_samples, FEATURES, seed=2)
    if kind == "tuple":
        return Data((x, y), (xv, yv))
    recorder = RecordingDataset(x, y)
    if kind == "dataset":
        return Data(recorder, (xv, yv), recorder)
    if kind == "loader":
        train = DataLoader(recorder, batch_size=batch_size, shuffle=True)
        valid = DataLoader(RecordingDataset(xv, yv), batch_size=batch_size)
        return Data(train, valid, recorder)
    if kind == "user-sampler":
        # What DistributedSampler(recorder, seed=...) gives once the group is started; the ranks
        # are named so that the data can be made before the first Experiment starts it.
        ranks = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else _env_ranks()
        sampler: DistributedSampler[int] = DistributedSampler(recorder, *ranks, seed=USER_SAMPLER_SEED)
        return Data(DataLoader(recorder, batch_size=batch_size, sampler=sampler), (xv, yv), recorder)
    raise ValueError(f"unknown data kind {kind!r}")


def _env_ranks() -> tuple[int, int]:
    return int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])


def wrapped_in_ddp(network: nn.Module) -> nn.parallel.DistributedDataParallel:
    """``network`` wrapped by the user in DistributedDataParallel (on the CPU; the process group
    must be started: by the Experiment of an earlier scenario, or by the script)."""
    return nn.parallel.DistributedDataParallel(network)


class ForwardCounter:
    """Counts the calls of a module (a forward pre-hook): how often training went through it."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, inputs: Any) -> None:
        self.calls += 1


class StopAtBatch(Callback):
    """Raises Interrupt at the end of the ``batch``-th training batch of the run (counted from 1 over
    every epoch, whatever the accumulation), and records where it stopped."""

    needs_batch_values = False

    def __init__(self, batch: int, batches_per_epoch: int) -> None:
        super().__init__()
        self.batch, self.batches_per_epoch = batch, batches_per_epoch
        self.stopped_at: dict[str, Any] | None = None

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        trainer = self.trainer
        if trainer.epochs_completed * self.batches_per_epoch + trainer.steps_in_epoch == self.batch:
            self.stopped_at = {
                "global_step": trainer.global_step,
                "optimizer_stepped": bool(trainer.optimizer_stepped),
            }
            raise Interrupt(f"stopped after batch {self.batch}")


class MarkEpochs(Callback):
    """Opens a new list of the recording dataset at each epoch begin."""

    needs_batch_values = False

    def __init__(self, recorder: RecordingDataset) -> None:
        super().__init__()
        self.recorder = recorder

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.recorder.epochs.append([])


class EpochLogs(Callback):
    """Keeps the logs each epoch end hands to the callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.logs.append(dict(logs))


class SeedProbe(Callback):
    """Records ``torch.initial_seed()`` when training begins: the seed the library gave this rank."""

    needs_batch_values = False

    def __init__(self) -> None:
        super().__init__()
        self.initial_seed: int | None = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.initial_seed = torch.initial_seed()


@dataclass
class Outcome:
    """What one ``train`` call left on one rank."""

    experiment: Experiment
    #: The user's module (the one inside the DistributedDataParallel the user gave, if any).
    network: nn.Module
    history: list[dict[str, Any]] | None = None
    #: The logs the callbacks got at each epoch end of this call.
    epoch_logs: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    stopped_at: dict[str, Any] | None = None
    initial_seed: int | None = None
    epochs_loaded: list[list[int]] = field(default_factory=list)
    #: With ``wrap_ddp``: the forward calls of the user's DistributedDataParallel.
    wrapper_calls: int | None = None


def train(
    run_dir: Path,
    data: Data,
    *,
    epochs: int,
    batch_size: int,
    stop_at: int | None = None,
    batches_per_epoch: int = 0,
    network_seed: int = 0,
    wrap_ddp: bool = False,
    compile_given: dict[str, Any] | None = None,
    experiment_options: dict[str, Any] | None = None,
    **train_options: Any,
) -> Outcome:
    """Build a fresh network (given to the Experiment inside a DistributedDataParallel of the user's
    with ``wrap_ddp``, or compiled by the user with ``compile_given``, torch.compile's options),
    optimizer and Experiment on ``run_dir`` and train; catch Interrupt."""
    network = make_network(network_seed)
    wrapper = wrapped_in_ddp(network) if wrap_ddp else None
    counter = ForwardCounter(wrapper) if wrapper is not None else None
    given = wrapper if wrapper is not None else network
    if compile_given is not None:
        given = torch.compile(given, **compile_given)  # type: ignore[assignment]
    experiment = make_experiment(run_dir, network=given, **(experiment_options or {}))
    outcome = Outcome(experiment, network)
    stopper = StopAtBatch(stop_at, batches_per_epoch) if stop_at is not None else None
    probe, epoch_logs = SeedProbe(), EpochLogs()
    callbacks: list[Any] = [probe, epoch_logs, *([stopper] if stopper else [])]
    if data.recorder is not None:
        data.recorder.epochs = []
        callbacks.append(MarkEpochs(data.recorder))
    scheduler = torch.optim.lr_scheduler.StepLR(experiment.optimizer, step_size=1, gamma=0.7)
    try:
        outcome.history = experiment.train(
            data.train,
            data.valid,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            lr_schedulers=[scheduler],
            seed=SEED,
            progress=False,
            **train_options,
        )
    except Interrupt as error:
        outcome.error = error
    outcome.stopped_at = stopper.stopped_at if stopper else None
    outcome.initial_seed = probe.initial_seed
    outcome.epoch_logs = epoch_logs.logs
    outcome.epochs_loaded = [list(e) for e in data.recorder.epochs] if data.recorder else []
    outcome.wrapper_calls = counter.calls if counter is not None else None
    return outcome
