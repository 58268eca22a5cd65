"""FSDP2 under Experiment against plain FSDP2 code: step time, commits and resume, as ratios.

Every rank trains the same MLP (width x width, width x width, width x 10, ReLUs; AdamW), sharded with
``fully_shard`` on each linear layer then the root, on random data in batches of 32 per rank, on CPU
with one thread per rank, in one torchrun launch. ``--size-mb`` sets the state (weights and the two
AdamW moments, over all ranks; the width follows). Each round runs, in an order that rotates from one
round to the next:

- plain: a hand-written FSDP2 loop (zero_grad, forward, loss, backward, step), which every
  ``--checkpoint-every`` steps within an epoch saves ``get_state_dict`` with a plain ``dcp.save``
  into a new folder (DCP's FileSystemWriter, which fsyncs its files) and a barrier; then, with a fresh
  sharded network and optimizer, ``get_state_dict``, ``dcp.load`` of its last save and
  ``set_state_dict``, and a barrier; then the copy of this rank's shards into buffers allocated
  beforehand (``copy_``), five times.
- sync: ``Experiment.train(strategy="fsdp")`` in a fresh run directory, same network, optimizer,
  data and ``checkpoint_every``; then, with a fresh network, optimizer and Experiment, ``train`` again
  on the finished run (it resumes: it reads the last commit's shards, then finds nothing to do).
- async: the same with ``async_checkpoint=True``.

Figures, rank 0's medians over the rounds after the first (a warm-up):

- step: each epoch from its first batch to the end of its last step, less the commits within it
  (a callback stamps ``on_epoch_begin``, ``on_train_batch_begin`` and ``on_train_batch_end``; the
  loop's work between batches counts, its epoch end does not), per step; target <= 1.05.
- synchronous commit: a commit within an epoch, from the end of the batch whose step it follows to
  the start of the next batch, against the plain save; the first of each run is left out (it sets
  up what the later ones reuse), on both sides; target <= 1.10.
- asynchronous stall: the same window with asynchronous commits (the copy into reused buffers, and
  any wait for the previous write), against the plain copy; target <= 1.20.
- resume: the second ``train`` call, against the plain load; target <= 1.20.

Usage (it starts torchrun itself when run without it)::

    python scripts/bench_fsdp.py [--nproc 2] [--size-mb 150] [--epochs 3] [--steps 16]
        [--checkpoint-every 8] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from experiment import Callback, Experiment

BATCH_SIZE = 32
SEED = 42
FIGURES = {  # name: (label, reference, target)
    "step": ("step", "plain FSDP2", 1.05),
    "commit": ("synchronous commit", "dcp.save", 1.10),
    "stall": ("asynchronous stall", "buffer copy", 1.20),
    "resume": ("resume", "dcp.load", 1.20),
}


def width_for(size_mb: float) -> int:
    """The width whose state (2 width^2 weights, each with two AdamW moments, in float32) is ``size_mb``."""
    return max(8, round((size_mb * 1e6 / 24) ** 0.5))


def build(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    network = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    return network, torch.optim.AdamW(network.parameters(), lr=1e-4)


def sharded(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The network sharded as strategy="fsdp" shards it (each child holding parameters, then the root)."""
    network, _ = build(width)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for child in network.children():
        if next(child.parameters(), None) is not None:
            fully_shard(child, mesh=mesh)
    fully_shard(network, mesh=mesh)
    return network, torch.optim.AdamW(network.parameters(), lr=1e-4)


def plain_save(network: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    model, optim = get_state_dict(network, optimizer)
    dcp.save({"model": model, "optimizer": optim}, checkpoint_id=folder)
    dist.barrier()


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def plain_round(data: Any, args: argparse.Namespace, workdir: Path, found: dict[str, list[float]]) -> None:
    x, y = data
    rank, world = dist.get_rank(), dist.get_world_size()
    network, optimizer = sharded(args.width)
    folder, saved, global_step, saves = workdir / "plain", workdir / "plain" / "none", 0, []
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED + epoch))[rank::world]
        dist.barrier()
        start, committed = time.perf_counter(), 0.0
        for step in range(args.steps):
            batch = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            optimizer.zero_grad()
            nn.functional.cross_entropy(network(x[batch]), y[batch]).backward()
            optimizer.step()
            global_step += 1
            if global_step % args.checkpoint_every == 0 and step < args.steps - 1:
                saved = folder / f"step-{global_step:06d}"
                seconds = timed(functools.partial(plain_save, network, optimizer, saved))
                saves.append(seconds)
                committed += seconds
        found["step"].append((time.perf_counter() - start - committed) / args.steps)
    found["commit"] += saves[1:]  # as for Experiment, the first of a run is left out
    tensors = [
        t.to_local() if isinstance(t, DTensor) else t
        for t in flat_tensors(get_state_dict(network, optimizer))
    ]
    buffers = [torch.empty_like(t) for t in tensors]
    found["stall"] += [timed(lambda: [b.copy_(t) for b, t in zip(buffers, tensors)]) for _ in range(5)]
    fresh, fresh_optimizer = sharded(args.width)
    dist.barrier()

    def load() -> None:
        model, optim = get_state_dict(fresh, fresh_optimizer)
        state = {"model": model, "optimizer": optim}
        dcp.load(state, checkpoint_id=saved)
        set_state_dict(fresh, fresh_optimizer, model_state_dict=model, optim_state_dict=optim)
        dist.barrier()

    found["resume"].append(timed(load))
    dist.barrier()
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)


def flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in flat_tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flat_tensors(item)]
    return []


class StepClock(Callback):
    """Each epoch's span from its first batch to the end of its last step, less the commits within
    it, per step; and each commit within an epoch (batch end to the next batch's start)."""

    needs_batch_values = False

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.steps: list[float] = []
        self.commits: list[float] = []
        self._start = self._last_end = 0.0
        self._pending: float | None = None
        self._committed = 0.0
        self._batches = 0

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self._start, self._committed, self._batches, self._pending = time.perf_counter(), 0.0, 0, None

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self._pending is not None:
            seconds = time.perf_counter() - self._pending
            self.commits.append(seconds)
            self._committed += seconds
            self._pending = None

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self._last_end = time.perf_counter()
        self._batches += 1
        if self.trainer.global_step % self.every == 0:
            self._pending = self._last_end

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.steps.append((self._last_end - self._start - self._committed) / self._batches)
        self._pending = None


def experiment_round(
    data: Any, args: argparse.Namespace, workdir: Path, found: dict[str, list[float]], *, asynchronous: bool
) -> None:
    run_dir = workdir / ("async" if asynchronous else "sync")
    if dist.get_rank() == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
    dist.barrier()
    options = {"epochs": args.epochs, "batch_size": BATCH_SIZE, "seed": SEED, "progress": False}
    options.update(checkpoint_every=args.checkpoint_every, async_checkpoint=asynchronous)
    for resuming in (False,) if asynchronous else (False, True):
        network, optimizer = build(args.width)
        exp = Experiment(
            run_dir, network, optimizer=optimizer, loss_function="cross_entropy", strategy="fsdp"
        )
        clock = StepClock(args.checkpoint_every)
        dist.barrier()
        seconds = timed(functools.partial(exp.train, data, callbacks=[clock], **options))
        dist.barrier()
        if resuming:
            found["exp resume"].append(seconds)
        else:
            found["exp step"] += [] if asynchronous else clock.steps
            # The first commit of a run sets up what later ones reuse (DCP's planners, the writer
            # thread and its gloo group, the buffers): the figures are those of the others.
            found["exp stall" if asynchronous else "exp commit"] += clock.commits[1:]


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    world = dist.get_world_size()
    generator = torch.Generator().manual_seed(SEED)
    samples = world * args.steps * BATCH_SIZE
    data = (
        torch.randn(samples, args.width, generator=generator),
        torch.randint(0, 10, (samples,), generator=generator),
    )
    rounds = [
        lambda found: plain_round(data, args, workdir, found),
        lambda found: experiment_round(data, args, workdir, found, asynchronous=False),
        lambda found: experiment_round(data, args, workdir, found, asynchronous=True),
    ]
    kept: dict[str, list[float]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up: lazy imports, allocator, gloo pairs
        found: dict[str, list[float]] = {key: [] for key in [*FIGURES, *(f"exp {k}" for k in FIGURES)]}
        shift = repeat % len(rounds)
        for run in rounds[shift:] + rounds[:shift]:
            run(found)
        if repeat:
            for key, values in found.items():
                kept.setdefault(key, []).extend(values)
    return kept


def report(found: dict[str, list[float]]) -> None:
    for key, (label, reference, target) in FIGURES.items():
        plain, exp = statistics.median(found[key]), statistics.median(found[f"exp {key}"])
        print(
            f"  {label:19s} {reference:11s} {plain * 1e3:9.1f} ms  Experiment {exp * 1e3:9.1f} ms"
            f"  ratio {exp / plain:.3f}  (target <= {target:.2f})"
        )


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    box = [str(args.workdir or tempfile.mkdtemp(prefix="bench-fsdp-")) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    workdir = Path(str(box[0]))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    with contextlib.redirect_stdout(sys.stderr):  # anything the runs print stays out of the report
        found = measure(args, workdir)
    if dist.get_rank() == 0:
        state_mb = 3 * 4 * sum(p.numel() for p in build(args.width)[0].parameters()) / 1e6
        print(
            f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs (load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), {dist.get_world_size()} ranks "
            f"(gloo) of 1 thread; state {state_mb:.1f} MB (width {args.width}: weights and AdamW moments); "
            f"{args.epochs} epochs of {args.steps} steps (batch {BATCH_SIZE} per rank), a commit every "
            f"{args.checkpoint_every} steps; {args.repeats} rounds after a warm-up; rank 0's medians",
            flush=True,
        )
        report(found)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks, when this script starts torchrun")
    parser.add_argument("--size-mb", type=float, default=150.0, help="state over all ranks (default 150)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--steps", type=int, default=16, help="steps per epoch (default 16)")
    parser.add_argument("--checkpoint-every", type=int, default=8, help="steps between commits (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds after the warm-up (default 3)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if args.checkpoint_every >= args.steps:
        parser.error(
            "--checkpoint-every must be smaller than --steps: the commits measured are within an epoch"
        )
    if "WORLD_SIZE" in os.environ:
        args.width = width_for(args.size_mb)
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
        f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items() if name != "nproc"
    ]
    arguments = [argument for argument in arguments if argument != "--workdir=None"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    raise SystemExit(subprocess.call([*command, __file__, *arguments], env=env))


if __name__ == "__main__":
    main()
