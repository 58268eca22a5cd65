"""Overhead of Experiment.train against a plain PyTorch loop: the per-step time ratio.

Both train the same MLP (64-128-10 with dropout, SGD with momentum) on scikit-learn's digits
(1,797 x 64) in batches of 32 from a shuffling DataLoader, on CPU with a fixed number of threads:

- plain: zero_grad, forward, loss, backward, step; the epoch's loss summed with ``loss.item()`` (and
  the correct predictions counted, for the accuracy variant, or a torchmetrics
  ``MulticlassF1Score(num_classes=10, average="macro")`` updated every step and computed and reset
  at each epoch end, for the F1 variant); ``torch.save`` of the model and optimizer state dicts at
  each epoch end.
- Experiment: ``Experiment.train`` in a fresh run directory with the same network, optimizer and loss
  (no metrics, ``batch_metrics=["accuracy"]`` or ``epoch_metrics=["f1"]``) and its defaults
  otherwise: the progress display (its epoch lines go to /dev/null here), log.tsv and TensorBoard
  scalars, and a durable checkpoint commit (written, fsynced, renamed) at each epoch end.

The plain loop's F1 is built with ``validate_args=False``: Experiment checks the targets of the first
batch only, so the default argument checks at every step (about 3 us each here) would be work that
only the plain loop does.

Each run is timed twice: the training steps alone (epoch start to the end of its last batch, wall
and CPU time), which is the per-step overhead of the loop, and the whole call (start-up, steps,
epoch-end saves or commits), which adds the cost of the commits. Times are divided by the number of
steps. The runs alternate, in an order that flips every repetition, so that slow drifts of a
shared machine hit all of them alike; the medians are compared.

Usage::

    python scripts/bench_overhead.py [--epochs 10] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiment import Callback, Experiment

BATCH_SIZE = 32


def digits() -> TensorDataset:
    from sklearn.datasets import load_digits  # here, not at the top: `--help` need not wait for it

    data = load_digits()
    return TensorDataset(
        torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target, dtype=torch.long)
    )


def build(seed: int = 0, hidden: int = 128) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The digits MLP (64-``hidden``-10 with dropout) and its SGD with momentum."""
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 10))
    return network, torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)


class Timing:
    """Wall and CPU time spent in the training steps of each epoch (saves and commits excluded)."""

    def __init__(self) -> None:
        self.step_seconds = 0.0
        self.step_cpu_seconds = 0.0
        self.steps = 0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.step_seconds += time.perf_counter() - self._wall
        self.step_cpu_seconds += time.process_time() - self._cpu


def plain_loop(
    dataset: TensorDataset, epochs: int, workdir: Path, timing: Timing, *, metric: str | None
) -> None:
    """A typical hand-written loop."""
    from torchmetrics.classification import MulticlassF1Score  # here: bench_ddp.py does without it

    network, optimizer = build()
    loss_function = nn.CrossEntropyLoss()
    accuracy = metric == "accuracy"
    f1 = MulticlassF1Score(num_classes=10, average="macro", validate_args=False) if metric == "f1" else None
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    for epoch in range(epochs):
        timing.start()
        network.train()
        running_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            y_pred = network(x)
            loss = loss_function(y_pred, y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(y)
            if accuracy:
                correct += int((y_pred.argmax(dim=1) == y).sum())
            if f1 is not None:
                f1.update(y_pred.detach(), y)
            seen += len(y)
            timing.steps += 1
        epoch_f1 = float("nan")
        if f1 is not None:
            epoch_f1 = float(f1.compute())
            f1.reset()
        timing.stop()
        torch.save(
            {
                "epoch": epoch,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "loss": running_loss / seen,
                "acc": 100.0 * correct / seen,
                "f1": epoch_f1,
            },
            workdir / "plain.pt",
        )


class EpochClock(Callback):
    """Times each epoch from on_epoch_begin to on_epoch_end, before its commit (no per-step hook).

    The window also holds the loop's epoch-end work before the commit (averages, random state,
    schedulers, the progress summary), which the plain loop does not have: it errs against Experiment.
    """

    def __init__(self, timing: Timing) -> None:
        super().__init__()
        self.timing = timing

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.timing.start()

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.timing.stop()
        self.timing.steps = self.trainer.global_step


def experiment_train(
    dataset: TensorDataset, epochs: int, workdir: Path, timing: Timing, *, metric: str | None
) -> None:
    """Experiment.train in a fresh run directory, with its defaults (progress display included)."""
    network, optimizer = build()
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    exp = Experiment(
        run_dir,
        network,
        optimizer=optimizer,
        loss_function="cross_entropy",
        batch_metrics=["accuracy"] if metric == "accuracy" else [],
        epoch_metrics=["f1"] if metric == "f1" else [],
    )
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    exp.train(loader, epochs=epochs, callbacks=[EpochClock(timing)])


VARIANTS = {"loss only": None, "with accuracy": "accuracy", "with f1": "f1"}
SIDES = {"plain": plain_loop, "experiment": experiment_train}
MEASURES = ("steps", "steps_cpu", "total", "cpu")


def measure(epochs: int, repeats: int, workdir: Path) -> dict[tuple[str, str, str], list[float]]:
    """Per-step seconds of every (variant, side, measure), ``repeats`` times, alternating the runs.

    Measures: ``steps`` and ``steps_cpu`` (wall and CPU time of the training steps alone, epoch
    start to end), ``total`` and ``cpu`` (wall and CPU time of the whole call: start-up, steps,
    epoch-end saves or commits).
    """
    dataset = digits()
    runs = [(variant, side) for variant in VARIANTS for side in SIDES]
    times: dict[tuple[str, str, str], list[float]] = {(v, s, m): [] for v, s in runs for m in MEASURES}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the epoch summaries
        for variant, side in runs:  # warm-up: lazy imports, allocator, page cache
            SIDES[side](dataset, 1, workdir, Timing(), metric=VARIANTS[variant])
        for repeat in range(repeats):
            for variant, side in runs if repeat % 2 == 0 else runs[::-1]:
                timing = Timing()
                wall, cpu = time.perf_counter(), time.process_time()
                SIDES[side](dataset, epochs, workdir, timing, metric=VARIANTS[variant])
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                for name, seconds in zip(
                    MEASURES, (timing.step_seconds, timing.step_cpu_seconds, wall, cpu), strict=True
                ):
                    times[variant, side, name].append(seconds / timing.steps)
    return times


LABELS = {
    "steps": "training steps, wall",
    "steps_cpu": "training steps, CPU",
    "total": "whole run, wall",
    "cpu": "whole run, CPU",
}


def report(times: dict[tuple[str, str, str], list[float]], steps_per_epoch: int) -> None:
    """Print the medians per step, the ratios, and the time per epoch spent outside the steps."""
    for variant in VARIANTS:
        print(f"{variant}:")
        for name in MEASURES:
            plain = statistics.median(times[variant, "plain", name])
            exp = statistics.median(times[variant, "experiment", name])
            print(
                f"  {LABELS[name]:21s} plain {plain * 1e6:7.1f} us/step  Experiment {exp * 1e6:7.1f} us/step"
                f"  ratio {exp / plain:.3f}"
            )
        outside = {}
        for side in SIDES:
            pairs = zip(times[variant, side, "total"], times[variant, side, "steps"], strict=True)
            outside[side] = statistics.median((t - s) * steps_per_epoch for t, s in pairs)
        print(
            f"  per epoch outside the steps (start-up, epoch end, save or commit): plain "
            f"{outside['plain'] * 1e3:.1f} ms, Experiment {outside['experiment'] * 1e3:.1f} ms"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per repetition (default 10)")
    parser.add_argument("--repeats", type=int, default=15, help="repetitions per variant (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-overhead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    times = measure(args.epochs, args.repeats, workdir)
    steps_per_epoch = math.ceil(len(digits()) / BATCH_SIZE)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs (load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), {args.threads} torch thread(s); "
        f"{args.epochs} epochs of {steps_per_epoch} steps (batch {BATCH_SIZE}) per run, "
        f"{args.repeats} runs each; medians; target ratio <= 1.05"
    )
    report(times, steps_per_epoch)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
