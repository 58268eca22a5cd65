"""A training script as a user runs it under torchrun, for the kill and signal tests.

    torchrun --standalone --nproc-per-node=N tests/distributed/train_script.py RUN_DIR [RUN_DIR ...] [options]

It trains the network of workload.py (BatchNorm, Dropout, AdamW) on a shuffling DataLoader of 96
samples in batches of 8 per rank, with step checkpoints, in RUN_DIR (or resumes it). Several
RUN_DIRs are trained or resumed one after the other in this process, each as a fresh script would
(the shared rerun of the kill tests: tests/support/killed_runs.py); the pause and report options
are meant for one. Options:

- ``--pause-rank R --pause-at-step K --signal-dir DIR``: rank R, once step K is done, creates
  DIR/ready and waits (at most a minute) for DIR/go, so that the test can signal it at a known step.
- ``--pause-in-commit N`` (with ``--pause-rank R --signal-dir DIR``, instead of a step): rank R
  pauses likewise inside its Nth commit, once DCP has written and fsynced its shard files and
  before DCP's closing collective (in which rank 0 writes ``.metadata``); with ``--pause-where
  saved``, once DCP's save has returned (``.metadata`` written), before the library's rename. With
  asynchronous commits that is in the writer thread, while training goes on.
- ``--fsync-delay S``: rank 0 sleeps S seconds in each fsync of a regular file done by
  experiment.store.files, so that a checkpoint write lasts long enough for the test to kill it.
- ``--report-dir DIR``: each rank writes DIR/rank-N.json as it leaves: the exit code ``train``
  raised (SystemExit after a signal) or 0, the last step it finished, and any other error.
- ``--reference DIR``: first train DIR to the end, uninterrupted, in this same process (a test that
  must save a launch compares RUN_DIR with it).
- ``--async-checkpoint``: train with ``async_checkpoint=True`` (rank 0 writes from a thread).
- ``--strategy NAME``: the Experiment's strategy (default "auto"; "fsdp" for FSDP2).
- ``--elastic``: an elastic run (``Experiment(elastic=True)``), which may resume on another number
  of ranks.
- ``--init-group``: start the process group in the script (gloo) before the Experiment, and destroy
  it after training, as torch's documentation asks of a script that starts it.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import stat
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import experiment.store.files
from experiment import Callback
from experiment.store import shards
from tests.distributed.workload import make_data_as, make_experiment

SAMPLES, BATCH_SIZE, EPOCHS = 96, 8, 3


class LastStep(Callback):
    """Remembers the last finished step; with a pause, waits there for the test."""

    needs_batch_values = False

    def __init__(self, pause_at: int | None = None, signal_dir: Path | None = None) -> None:
        super().__init__()
        self.global_step = 0
        self.pause_at, self.signal_dir = pause_at, signal_dir

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.global_step = self.trainer.global_step
        if self.global_step == self.pause_at and self.signal_dir is not None:
            wait_for_go(self.signal_dir)


def wait_for_go(signal_dir: Path) -> None:
    """Tell the test this rank is where it should be (DIR/ready, holding the pid), then wait (at
    most a minute) for DIR/go."""
    (signal_dir / "ready").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (signal_dir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def pause_in_commit(serial: int, signal_dir: Path, where: str) -> None:
    """Make this rank wait for the test inside its ``serial``-th commit: once its shard files are
    written (``where="shards"``: DCP's ``write_data`` done, before DCP's closing collective) or once
    DCP's save has returned (``"saved"``)."""
    import torch.distributed.checkpoint as dcp

    if where == "saved":
        real_save = shards.save
        saves = 0

        def save(*args: Any, **kwargs: Any) -> None:
            nonlocal saves
            real_save(*args, **kwargs)
            saves += 1
            if saves == serial:
                wait_for_go(signal_dir)

        shards.save = save  # type: ignore[assignment]
        return
    real_write_data = dcp.FileSystemWriter.write_data
    calls = 0

    def write_data(self: Any, plan: Any, planner: Any) -> Any:
        nonlocal calls
        written = real_write_data(self, plan, planner)
        written.wait()
        calls += 1
        if calls == serial:
            wait_for_go(signal_dir)
        return written

    dcp.FileSystemWriter.write_data = write_data  # type: ignore[method-assign]


def slow_down_fsync(seconds: float) -> None:
    """Make every fsync of a regular file by experiment.store.files last ``seconds`` longer."""
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            time.sleep(seconds)
        real_fsync(fd)

    patched_os = types.ModuleType("os")
    patched_os.__dict__.update(os.__dict__)
    patched_os.fsync = slow_fsync  # type: ignore[attr-defined]
    experiment.store.files.os = patched_os  # type: ignore[attr-defined]


def train(run_dir: Path, args: argparse.Namespace, step: LastStep) -> None:
    exp = make_experiment(run_dir, strategy=args.strategy, elastic=args.elastic)
    data = make_data_as("loader", samples=SAMPLES, valid_samples=40, batch_size=BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.StepLR(exp.optimizer, step_size=1, gamma=0.7)
    exp.train(
        data.train,
        data.valid,
        epochs=args.epochs,
        checkpoint_every=args.checkpoint_every,
        async_checkpoint=args.async_checkpoint,
        lr_schedulers=[scheduler],
        callbacks=[step],
        seed=7,
        progress=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--pause-rank", type=int, default=None)
    parser.add_argument("--pause-at-step", type=int, default=None)
    parser.add_argument("--signal-dir", type=Path, default=None)
    parser.add_argument("--pause-in-commit", type=int, default=None)
    parser.add_argument("--pause-where", choices=["shards", "saved"], default="shards")
    parser.add_argument("--fsync-delay", type=float, default=0.0)
    parser.add_argument("--report-dir", type=Path, default=None)
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--init-group", action="store_true")
    parser.add_argument("--async-checkpoint", action="store_true")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--elastic", action="store_true")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the stacks, if the test times out
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if args.init_group:
        dist.init_process_group("gloo")
    if args.fsync_delay and rank == 0:
        slow_down_fsync(args.fsync_delay)
    if args.reference is not None:
        train(args.reference, args, LastStep())
    pausing = rank == args.pause_rank
    if pausing and args.pause_in_commit is not None:
        pause_in_commit(args.pause_in_commit, args.signal_dir, args.pause_where)
    step = LastStep()
    report: dict[str, Any] = {"exit_code": 0, "global_step": None, "error": None}
    try:
        for run_dir in args.run_dirs:
            step = LastStep(args.pause_at_step if pausing else None, args.signal_dir if pausing else None)
            train(run_dir, args, step)
        if args.init_group:
            dist.destroy_process_group()
    except SystemExit as exit:
        report["exit_code"] = exit.code
        raise
    except BaseException as error:
        report["exit_code"], report["error"] = 1, f"{type(error).__name__}: {error}"
        raise
    finally:
        report["global_step"] = step.global_step
        if args.report_dir is not None:
            args.report_dir.mkdir(parents=True, exist_ok=True)
            (args.report_dir / f"rank-{rank}.json").write_text(json.dumps(report))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
