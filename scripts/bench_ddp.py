"""Overhead of Experiment.train under torchrun against a plain DDP loop: the per-step time ratio.

Every rank trains the same MLP (64-128-10 with dropout, SGD with momentum) on scikit-learn's digits
(1,797 x 64) in batches of 32 per rank, on CPU with one thread per rank, in one torchrun launch:

- plain: the network in DistributedDataParallel, a DataLoader over a DistributedSampler (seeded,
  ``set_epoch`` each epoch); zero_grad, forward, loss, backward, step; the epoch's loss summed with
  ``loss.item()`` (and the correct predictions counted, for the accuracy variant); at each epoch
  end one all-reduce of the sums and counts, and a ``torch.save`` of the model and optimizer state
  dicts by rank 0.
- Experiment: ``Experiment.train`` in a fresh run directory with the same network, optimizer and
  loss (no metrics, or ``batch_metrics=["accuracy"]``), given a shuffling DataLoader that it
  rebuilds around a DistributedSampler, with its defaults otherwise: DDP, the progress display on
  rank 0 (to /dev/null here), log.tsv and TensorBoard, the ranks' agreement on signals every
  second or so, and a durable checkpoint commit (every rank's random state gathered, written by
  rank 0, fsynced, renamed) at each epoch end.

Both use the process group this script starts (the library uses a group that exists). Each run is
timed on every rank as scripts/bench_overhead.py does, wall and CPU time: the training steps alone
(epoch start to the end of its last batch: the per-step overhead), and the whole call (start-up,
steps, epoch ends: adds the cost of the commits and of creating the run directory, large against
runs this short); rank 0's figures are divided by its number of steps. The runs alternate, in an order that flips every repetition, so
that slow drifts of a shared machine hit both alike; the medians are compared.

Usage (it starts torchrun itself when run without it)::

    python scripts/bench_ddp.py [--nproc 2] [--epochs 5] [--repeats 9]
    torchrun --standalone --nproc-per-node=2 scripts/bench_ddp.py [--epochs 5] [--repeats 9]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from bench_overhead import build, digits  # the same network, optimizer and data (scripts/ is on the path)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from experiment import Callback, Experiment

BATCH_SIZE = 32
SEED = 42


class Timing:
    """Wall and CPU time spent in the training steps of each epoch (saves, reductions and commits
    excluded). CPU time is the whole process's: gloo's threads count too."""

    def __init__(self) -> None:
        self.step_seconds = 0.0
        self.step_cpu_seconds = 0.0
        self.steps = 0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.step_seconds += time.perf_counter() - self._wall
        self.step_cpu_seconds += time.process_time() - self._cpu


def plain_loop(dataset: TensorDataset, epochs: int, workdir: Path, timing: Timing, *, accuracy: bool) -> None:
    """A typical hand-written DDP loop."""
    network, optimizer = build()
    model = nn.parallel.DistributedDataParallel(network)
    loss_function = nn.CrossEntropyLoss()
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        dataset, shuffle=True, seed=SEED
    )
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        timing.start()
        model.train()
        running_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            y_pred = model(x)
            loss = loss_function(y_pred, y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(y)
            if accuracy:
                correct += int((y_pred.argmax(dim=1) == y).sum())
            seen += len(y)
            timing.steps += 1
        timing.stop()
        totals = torch.tensor([running_loss, float(correct), float(seen)], dtype=torch.float64)
        dist.all_reduce(totals)
        if dist.get_rank() == 0:
            torch.save(
                {
                    "epoch": epoch,
                    "model": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loss": float(totals[0] / totals[2]),
                    "acc": float(100.0 * totals[1] / totals[2]),
                },
                workdir / "plain.pt",
            )


class EpochClock(Callback):
    """Times each epoch from on_epoch_begin to on_epoch_end, before its commit (no per-step hook).

    The window also holds the loop's epoch-end work before the commit (the reduction of the sums
    over the ranks, random state, the progress summary), which the plain loop times outside its
    window: it errs against Experiment.
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
    dataset: TensorDataset, epochs: int, workdir: Path, timing: Timing, *, accuracy: bool
) -> None:
    """Experiment.train in a fresh run directory, with its defaults (progress display included)."""
    network, optimizer = build()
    run_dir = workdir / "run"
    if dist.get_rank() == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
    dist.barrier()
    exp = Experiment(
        run_dir,
        network,
        optimizer=optimizer,
        loss_function="cross_entropy",
        batch_metrics=["accuracy"] if accuracy else [],
    )
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    exp.train(loader, epochs=epochs, seed=SEED, callbacks=[EpochClock(timing)])


VARIANTS = {"loss only": False, "with accuracy": True}
SIDES = {"plain DDP": plain_loop, "experiment": experiment_train}
MEASURES = ("steps", "steps_cpu", "total", "cpu")
LABELS = {
    "steps": "training steps, wall",
    "steps_cpu": "training steps, CPU",
    "total": "whole run, wall",
    "cpu": "whole run, CPU",
}


def measure(epochs: int, repeats: int, workdir: Path) -> dict[tuple[str, str, str], list[float]]:
    """Per-step seconds of every (variant, side, measure) on this rank, alternating the runs."""
    dataset = digits()
    runs = [(variant, side) for variant in VARIANTS for side in SIDES]
    times: dict[tuple[str, str, str], list[float]] = {(v, s, m): [] for v, s in runs for m in MEASURES}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the epoch summaries
        for variant, side in runs:  # warm-up: lazy imports, allocator, page cache, gloo pairs
            SIDES[side](dataset, 1, workdir, Timing(), accuracy=VARIANTS[variant])
        for repeat in range(repeats):
            for variant, side in runs if repeat % 2 == 0 else runs[::-1]:
                timing = Timing()
                dist.barrier()
                wall, cpu = time.perf_counter(), time.process_time()
                SIDES[side](dataset, epochs, workdir, timing, accuracy=VARIANTS[variant])
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                measured = (timing.step_seconds, timing.step_cpu_seconds, wall, cpu)
                for name, seconds in zip(MEASURES, measured, strict=True):
                    times[variant, side, name].append(seconds / timing.steps)
    return times


def report(times: dict[tuple[str, str, str], list[float]]) -> None:
    for variant in VARIANTS:
        print(f"{variant}:")
        for name in MEASURES:
            plain = statistics.median(times[variant, "plain DDP", name])
            exp = statistics.median(times[variant, "experiment", name])
            print(
                f"  {LABELS[name]:21s} plain DDP {plain * 1e6:7.1f} us/step  Experiment {exp * 1e6:7.1f} us/step"
                f"  ratio {exp / plain:.3f}"
            )


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    workdir_box = [
        str(args.workdir or tempfile.mkdtemp(prefix="bench-ddp-")) if dist.get_rank() == 0 else None
    ]
    dist.broadcast_object_list(workdir_box, src=0)
    workdir = Path(str(workdir_box[0]))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    times = measure(args.epochs, args.repeats, workdir)
    if dist.get_rank() == 0:
        world = dist.get_world_size()
        steps_per_epoch = -(-len(digits()) // world // BATCH_SIZE)
        print(
            f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs (load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), {world} ranks (gloo) of 1 "
            f"thread; {args.epochs} epochs of ~{steps_per_epoch} steps (batch {BATCH_SIZE} per rank) per "
            f"run, {args.repeats} runs each; rank 0's medians; target ratio <= 1.05",
            flush=True,
        )
        report(times)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks, when this script starts torchrun")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per repetition (default 5)")
    parser.add_argument("--repeats", type=int, default=9, help="repetitions per variant (default 9)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if "WORLD_SIZE" in os.environ:
        worker(args)
        return
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.nproc}",
    ]
    arguments = ["--epochs", str(args.epochs), "--repeats", str(args.repeats)]
    arguments += ["--workdir", str(args.workdir)] if args.workdir else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    raise SystemExit(subprocess.call([*command, __file__, *arguments], env=env))


if __name__ == "__main__":
    main()
