"""The child of the kill tests: a small training script, and the process that runs it.

The script trains a small MLP (dropout, SGD with momentum, StepLR, a shuffling DataLoader) in the
run directory given on its command line, and reports READY then ``STEP n`` after each step on its
standard output (and BEST HELD, when asked to hold a best-weights write); :class:`Child` starts it
and reads those lines.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The child: trains in the run directory given on its command line, printing READY just before
#: ``train`` so the parent knows the imports are done. ``--fsync-delay`` slows the fsyncs of
#: experiment.store.files (only them, only in this process, in whichever thread writes) so that a
#: write's temporary file lives long enough for the parent to see it. ``--async-checkpoint`` trains
#: with ``async_checkpoint=True`` (the argument is passed only then, so older versions still run).
#: ``--hold-best-write N`` makes the writer thread print BEST HELD and block for good when it comes
#: to write the best weights of epoch N, after that epoch's state is committed: a kill then lands
#: between the two (passed only when given).
TRAINING_SCRIPT = '''\
import argparse
import os
import stat
import sys
import time
import types

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import experiment.store.files
from experiment import Callback, Experiment


class PrintStep(Callback):
    """Tells the parent how far training got (it reads no batch values: no device sync)."""

    needs_batch_values = False

    def on_train_batch_end(self, batch_number, logs):
        print(f"STEP {self.trainer.global_step}", flush=True)


parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--checkpoint-every", type=int, default=4)
parser.add_argument("--fsync-delay", type=float, default=0.0)
parser.add_argument("--loader-generator", action="store_true")
parser.add_argument("--async-checkpoint", action="store_true")
parser.add_argument("--hold-best-write", type=int, default=None)
args = parser.parse_args()

if args.hold_best_write is not None:
    import threading

    import experiment.run.commits.best_weights as best_weights

    real_save_tensors = best_weights.save_tensors

    def held_save_tensors(path, obj, **options):
        if path.name == f"best-epoch{args.hold_best_write:04d}.pt":
            print("BEST HELD", flush=True)
            threading.Event().wait()  # until the parent's SIGKILL
        real_save_tensors(path, obj, **options)

    best_weights.save_tensors = held_save_tensors

if args.fsync_delay > 0:
    real_fsync = os.fsync

    def slow_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            time.sleep(args.fsync_delay)
        real_fsync(fd)

    patched_os = types.ModuleType("os")
    patched_os.__dict__.update(os.__dict__)
    patched_os.fsync = slow_fsync
    experiment.store.files.os = patched_os

torch.set_num_threads(1)
data = torch.Generator().manual_seed(0)
x = torch.randn(576, 12, generator=data)
teacher = torch.randn(12, 3, generator=data)
y = (x @ teacher + 0.5 * torch.randn(576, 3, generator=data)).argmax(dim=1)
train_x, train_y, valid_x, valid_y = x[:480], y[:480], x[480:], y[480:]

torch.manual_seed(0)
network = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
generator = torch.Generator().manual_seed(1) if args.loader_generator else None
loader = DataLoader(TensorDataset(train_x, train_y), batch_size=16, shuffle=True, generator=generator)
exp = Experiment(args.run_dir, network, optimizer=optimizer, loss_function="cross_entropy",
                 batch_metrics=["accuracy"], epoch_metrics=["f1"],
                 monitor_metric="val_acc", monitor_mode="max")
print("READY", flush=True)
exp.train(loader, (valid_x, valid_y), epochs=args.epochs, lr_schedulers=[scheduler],
          checkpoint_every=args.checkpoint_every or None, seed=7, callbacks=[PrintStep()],
          **({"async_checkpoint": True} if args.async_checkpoint else {}))
'''

#: Training batches per epoch in the child (480 samples, batches of 16).
STEPS_PER_EPOCH = 30
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]+\.tmp$")
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0


@dataclass
class Config:
    """What the child trains; the reference run and the killed run use the same one."""

    epochs: int = 5
    checkpoint_every: int | None = 4
    loader_generator: bool = False
    #: Train with ``async_checkpoint=True``: commits are written by a background thread.
    async_checkpoint: bool = False
    #: Block the write of this epoch's best weights for good (the child prints BEST HELD then).
    hold_best_write: int | None = None

    def arguments(self) -> list[str]:
        arguments = ["--epochs", str(self.epochs), "--checkpoint-every", str(self.checkpoint_every or 0)]
        arguments += ["--loader-generator"] if self.loader_generator else []
        arguments += ["--async-checkpoint"] if self.async_checkpoint else []
        held = self.hold_best_write
        return arguments + (["--hold-best-write", str(held)] if held is not None else [])


def write_training_script(directory: Path) -> Path:
    """Write the child training script into ``directory`` and return its path."""
    path = Path(directory) / "train_child.py"
    path.write_text(TRAINING_SCRIPT, encoding="utf-8")
    return path


class Child:
    """A training child process and what it printed (READY, then ``STEP n`` after each step)."""

    def __init__(self, script: Path, run_dir: Path, config: Config, *, fsync_delay: float = 0.0) -> None:
        command = [
            sys.executable,
            str(script),
            str(run_dir),
            *config.arguments(),
            "--fsync-delay",
            str(fsync_delay),
        ]
        # The child's stderr is appended to <run_dir>.stderr, next to the run directory.
        with open(run_dir.parent / f"{run_dir.name}.stderr", "ab") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        self.ready = False
        #: Whether the child has printed BEST HELD (see ``Config.hold_best_write``).
        self.best_held = False
        self.steps_seen = 0
        self.last_step: int | None = None
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Kill the child if it still runs, reap it and close its pipe."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._selector.close()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Read the child's output until ``condition()`` holds (True) or its output ends (False)."""
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the training child made no progress for {timeout} s")
            if self._selector.select(timeout=left) and not self._read():
                return condition()
        return True

    def wait_ready(self) -> None:
        """Wait until the child has printed READY (its imports and set-up are done)."""
        if not self.wait_for(lambda: self.ready, READY_TIMEOUT):
            raise RuntimeError("the training child exited before it got ready; see its .stderr file")

    def wait_best_held(self) -> bool:
        """Wait until the child holds its best-weights write (BEST HELD); False if it ended first."""
        return self.wait_for(lambda: self.best_held, RUN_TIMEOUT)

    def wait_steps(self, steps: int) -> bool:
        """Wait until the child has reported ``steps`` steps; False if it ended first."""
        return self.wait_for(lambda: self.steps_seen >= steps, RUN_TIMEOUT)

    def wait_exit(self) -> None:
        """Wait for a child that was not killed to end; it must succeed."""
        self.wait_for(lambda: False, RUN_TIMEOUT)
        self.finish()

    def drain(self) -> None:
        """Read what the child has printed so far without waiting."""
        while self._selector.select(timeout=0) and self._read():
            pass

    def _read(self) -> bool:
        assert self.process.stdout is not None
        data = os.read(self.process.stdout.fileno(), 65536)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line == b"READY":
                self.ready = True
            elif line == b"BEST HELD":
                self.best_held = True
            elif line.startswith(b"STEP "):
                self.steps_seen += 1
                self.last_step = int(line[5:])
        return bool(data)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def finish(self) -> None:
        """Reap a child that was not killed; it must have succeeded."""
        code = self.process.wait(timeout=RUN_TIMEOUT)
        if code != 0:
            raise RuntimeError(f"the training child failed with exit code {code}; see its .stderr file")

    def exited_within(self, seconds: float) -> bool:
        """Whether the child ends within ``seconds`` (the planned delay of a kill)."""
        try:
            self.process.wait(timeout=max(seconds, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True


def temporaries(checkpoints_dir: Path) -> list[Path]:
    """The temporary files of checkpoint writes in progress (or left by a killed writer)."""
    try:
        return [Path(entry.path) for entry in os.scandir(checkpoints_dir) if TEMPORARY.match(entry.name)]
    except FileNotFoundError:
        return []
