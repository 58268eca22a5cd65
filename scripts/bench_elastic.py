"""Per-step cost of elastic runs against the DDP run they replace: ``elastic=True`` and
``elastic="exact"`` with several numbers of groups, as ratios measured in one launch.

Every rank trains the MLP of scripts/bench_overhead.py (64-128-10 with dropout, SGD with momentum;
``--hidden`` widens it) on scikit-learn's digits in batches of 32 per rank (``--batch-size``), on CPU
with one thread per rank, in one torchrun launch, with ``Experiment.train`` in a fresh run directory
each time:

- DDP: ``elastic=False`` (the library's DistributedDataParallel run);
- elastic: ``elastic=True`` (a world-size-independent order, the loss weighted per rank);
- exact, k groups per rank: ``elastic="exact"`` with ``elastic_groups = k * ranks`` (one forward
  and backward per group, the gradients rounded and summed exactly in float64).

Each run is timed on every rank from each epoch's begin to its end (scripts/bench_ddp.py's
``EpochClock``), wall time; rank 0's figures are divided by its optimizer steps. The runs alternate,
in an order that flips every repetition; the medians are compared with the DDP run's.

Usage (it starts torchrun itself when run without it)::

    python scripts/bench_elastic.py [--nproc 2] [--epochs 3] [--repeats 5] [--groups 1 4 8]
        [--batch-size 32] [--hidden 128]
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
from bench_ddp import BATCH_SIZE, SEED, EpochClock, Timing  # scripts/ is on the path
from bench_overhead import build, digits
from torch.utils.data import DataLoader, TensorDataset

from experiment import Experiment

BASELINE = "DDP"


def train(
    dataset: TensorDataset,
    epochs: int,
    run_dir: Path,
    timing: Timing,
    options: dict[str, Any],
    shape: argparse.Namespace,
) -> None:
    """Experiment.train in a fresh run directory with ``options`` (elastic, elastic_groups) and the
    batch size and width of ``shape``."""
    network, optimizer = build(hidden=shape.hidden)
    if dist.get_rank() == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
    dist.barrier()
    exp = Experiment(run_dir, network, optimizer=optimizer, loss_function="cross_entropy", **options)
    loader = DataLoader(dataset, batch_size=shape.batch_size, shuffle=True)
    exp.train(loader, epochs=epochs, seed=SEED, callbacks=[EpochClock(timing)])


def sides(groups: list[int], world: int, batch_size: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {BASELINE: {}, "elastic": {"elastic": True}}
    for per_rank in groups:
        found[f"exact, {per_rank} group(s) per rank ({batch_size / per_rank:g} samples)"] = {
            "elastic": "exact",
            "elastic_groups": per_rank * world,
        }
    return found


def measure(
    epochs: int, repeats: int, workdir: Path, runs: dict[str, dict[str, Any]], shape: argparse.Namespace
) -> dict[str, list[float]]:
    """Seconds per step of every side on this rank, alternating the runs."""
    dataset = digits()
    times: dict[str, list[float]] = {name: [] for name in runs}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the epoch summaries
        for options in runs.values():  # warm-up: lazy imports, allocator, page cache, gloo pairs
            train(dataset, 1, workdir / "warm-up", Timing(), options, shape)
        order = list(runs)
        for repeat in range(repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:
                timing = Timing()
                dist.barrier()
                train(dataset, epochs, workdir / "run", timing, runs[name], shape)
                times[name].append(timing.step_seconds / timing.steps)
    return times


def report(times: dict[str, list[float]]) -> None:
    baseline = statistics.median(times[BASELINE])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:42s} {median * 1e6:8.1f} us/step  ratio {median / baseline:.3f}")


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    box = [str(args.workdir or tempfile.mkdtemp(prefix="bench-elastic-")) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    workdir = Path(str(box[0]))
    workdir.mkdir(parents=True, exist_ok=True)
    world = dist.get_world_size()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    times = measure(args.epochs, args.repeats, workdir, sides(args.groups, world, args.batch_size), args)
    if dist.get_rank() == 0:
        print(
            f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs (load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), {world} ranks (gloo) of 1 "
            f"thread; 64-{args.hidden}-10 MLP, {args.epochs} epochs (batch {args.batch_size} per rank) "
            f"per run, {args.repeats} runs "
            f"each, {time.perf_counter() - started:.0f} s; rank 0's medians of the training steps' wall "
            "time against the DDP run; targets: elastic <= 1.02, exact (default groups) <= 1.10",
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
    parser.add_argument("--epochs", type=int, default=3, help="epochs per repetition (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument(
        "--groups",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="exact mode's groups per rank (default 1 4 8)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help=f"samples per rank (default {BATCH_SIZE})"
    )
    parser.add_argument("--hidden", type=int, default=128, help="the MLP's hidden width (default 128)")
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
    arguments = [
        "--epochs",
        str(args.epochs),
        "--repeats",
        str(args.repeats),
        "--groups",
        *map(str, args.groups),
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        str(args.hidden),
    ]
    arguments += ["--workdir", str(args.workdir)] if args.workdir else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    raise SystemExit(subprocess.call([*command, __file__, *arguments], env=env))


if __name__ == "__main__":
    main()
