"""What the elastic tests train: samples that carry their index, a network that records the indices of
each forward, and one phase of a run (train or resume until a step) on whatever world size runs it.

Used in-process by tests/distributed/test_elastic.py (one process) and by elastic_scenarios.py under
torchrun. A phase writes, per rank, the sample indices each optimizer step trained on (the last
forward of the step: a resumed DDP run's warm-up forward comes before it), to be joined over the
ranks and phases by the test.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, TensorDataset

from experiment import Callback, Experiment
from tests.support.training import Interrupt, InterruptAt

FEATURES = 5
SEED = 3


def indexed_data(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` whose first input column is the sample's index (the network ignores it)."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(samples, FEATURES, generator=generator)
    x = torch.cat([torch.arange(samples, dtype=torch.float32)[:, None], features], dim=1)
    y = (features[:, 0] > 0).long() + (features[:, 1] > 0.5).long()
    return x, y


class IndexedNet(nn.Module):
    """A small MLP over the features (with Dropout when ``dropout``); it remembers the sample
    indices of each forward."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x[:, 0].long().tolist())
        return self.body(x[:, 1:])


class StepRecorder(Callback):
    """Records, for each optimizer step, the indices of the step's last forward."""

    def __init__(self, network: IndexedNet) -> None:
        super().__init__()
        self.network = network
        self.steps: dict[int, list[int]] = {}

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.steps[self.trainer.global_step] = self.network.seen[-1]
        self.network.seen.clear()


def run_phase(
    run_dir: Path,
    *,
    samples: int,
    batch_size: int,
    epochs: int,
    stop_at: int,
    elastic: bool | str = True,
    groups: int | None = None,
    accumulate: int = 1,
    loader: bool = False,
    steps_per_epoch: int | None = None,
    strategy: str = "auto",
    callbacks: Sequence[Callback] = (),
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Train (or resume) ``run_dir`` until optimizer step ``stop_at`` (0: to the end), as a
    restarted script does, in one thread (as torchrun's workers: the kernels must sum alike).
    Exact runs (``elastic="exact"``, ``groups`` per global batch) train a network with Dropout;
    ``accumulate`` global batches make an optimizer step; ``loader``: the data is given as a
    shuffling DataLoader of ``batch_size`` rather than a tuple; ``callbacks`` are added to the
    recorder's; ``raise_errors``: an error of the library ends the phase (and a script, as a
    user's would) instead of being recorded.
    Returns the steps recorded, the error met (its type and message), the warnings emitted and
    the final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = indexed_data(samples)
    data = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True) if loader else (x, y)
    options = {"epochs": epochs, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch}
    try:
        return _phase(
            run_dir,
            data,
            options,
            stop_at,
            elastic,
            groups,
            accumulate,
            strategy,
            callbacks=callbacks,
            raise_errors=raise_errors,
        )
    finally:
        torch.set_num_threads(threads)


def _phase(
    run_dir: Path,
    data: Any,
    options: dict[str, Any],
    stop_at: int,
    elastic: bool | str,
    groups: int | None,
    accumulate: int,
    strategy: str,
    *,
    callbacks: Sequence[Callback],
    raise_errors: bool,
) -> dict[str, Any]:
    network = IndexedNet(dropout=0.3 if elastic == "exact" else 0.0)
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01)
    recorder = StepRecorder(network)
    every: list[Any] = [recorder, *callbacks] + ([InterruptAt(stop_at)] if stop_at else [])
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exp = Experiment(
                run_dir,
                network,
                optimizer=optimizer,
                loss_function="cross_entropy",
                tensorboard=False,
                elastic=elastic,
                elastic_groups=groups,
                accumulate_grad_batches=accumulate,
                strategy=strategy,
            )
            exp.train(
                data,
                **options,
                seed=SEED,
                callbacks=every,
                checkpoint_every=2,
                progress=False,
            )
        except Interrupt:
            pass
        except Exception as failure:  # reported to the test, which expects some
            if raise_errors:
                raise
            error = f"{type(failure).__name__}: {failure}"
    return {
        "steps": recorder.steps,
        "error": error,
        "warnings": [str(w.message) for w in caught],
        "weights": {k: v.tolist() for k, v in whole_weights(network).items()},
        "weight_bits": {k: v.view(torch.int32).tolist() for k, v in whole_weights(network).items()},
    }


def whole_weights(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights, each whole: gathered from every rank's shards under FSDP2 (a
    collective of every rank)."""
    return {
        key: value.full_tensor() if isinstance(value, DTensor) else value
        for key, value in network.state_dict().items()
    }


def write_phase(path: Path, outcome: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outcome))


def read_phase(path: Path) -> dict[str, Any]:
    outcome = json.loads(path.read_text())
    outcome["steps"] = {int(step): indices for step, indices in outcome["steps"].items()}
    return outcome


def joined_steps(phases: list[list[dict[str, Any]]]) -> dict[int, list[int]]:
    """The sorted indices of each step over the ranks of the phase that did it last (a phase
    resumed from a commit before the step where the previous one stopped redoes it)."""
    joined: dict[int, list[int]] = {}
    for ranks in phases:
        steps = sorted({step for outcome in ranks for step in outcome["steps"]})
        for step in steps:
            joined[step] = sorted(i for outcome in ranks for i in outcome["steps"].get(step, []))
    return joined
