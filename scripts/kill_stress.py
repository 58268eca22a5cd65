"""Kill real training processes with SIGKILL, resume them until they finish, check bit-identity.

Each round trains a small MLP (dropout, SGD with momentum, StepLR, a shuffling DataLoader) in a fresh
run directory, in a child process that is killed with ``kill -9`` at random moments and started again
until it finishes on its own. Some kills are aimed at checkpoint writes: the harness polls the
``checkpoints/`` folder for the temporary files of ``experiment.store.files.atomic_writer`` and kills as
soon as one appears (the child slows its own fsync down a little so that the window can be caught).
The finished run must equal an uninterrupted one: every state checkpoint (weights, optimizer,
schedulers, callbacks, loop position, random state) and the best weights bit for bit, log.tsv in
every column but ``time``, and each TensorBoard scalar exactly once per epoch with the same value.

Usage::

    python scripts/kill_stress.py --kills 50 --seed 0 --workdir /tmp/kill-stress

tests/test_kill.py imports this module for its smaller version of the same check.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The child: trains in the run directory given on its command line, printing READY just before
#: ``train`` so the parent knows the imports are done. ``--fsync-delay`` slows the fsyncs of
#: experiment.store.files (only them, only in this process) so that a write's temporary file lives long
#: enough for the parent to see it.
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
args = parser.parse_args()

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
          checkpoint_every=args.checkpoint_every or None, seed=7, callbacks=[PrintStep()])
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

    def arguments(self) -> list[str]:
        arguments = ["--epochs", str(self.epochs), "--checkpoint-every", str(self.checkpoint_every or 0)]
        return arguments + (["--loader-generator"] if self.loader_generator else [])


@dataclass
class Kill:
    """One planned kill, once the child has reported ``steps_ahead`` training steps (0: at once)
    and ``delay`` more seconds have passed: right then (``"time"``), or at the first checkpoint
    write after that (``"write"``)."""

    kind: str
    steps_ahead: int
    delay: float


@dataclass
class RunReport:
    """What happened to one run directory while it was killed and resumed."""

    launches: int = 0
    kills: int = 0
    kills_during_write: int = 0
    kills_before_first_step: int = 0
    write_kinds: Counter[str] = field(default_factory=Counter)
    kill_steps: list[int] = field(default_factory=list)
    leftover_temporaries: int = 0
    seconds: float = 0.0

    @property
    def resumes(self) -> int:
        return max(self.launches - 1, 0)


# ------------------------------------------------------------------------------------ processes
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


def kill_at_write(child: Child, checkpoints_dir: Path) -> Path | None:
    """Poll for a new write's temporary file and SIGKILL the child the moment one appears.

    Returns:
        The temporary file the kill was aimed at, or None if the child exited first.
    """
    stale = set(temporaries(checkpoints_dir))
    deadline = time.monotonic() + RUN_TIMEOUT
    while child.process.poll() is None and time.monotonic() < deadline:
        fresh = [path for path in temporaries(checkpoints_dir) if path not in stale]
        if fresh:
            child.kill()
            return fresh[0]
        child.drain()  # keep the pipe from filling up
        time.sleep(0.0005)  # a polling interval, well below the child's fsync delay
    return None


# ---------------------------------------------------------------------------------------- runs
def run_uninterrupted(script: Path, run_dir: Path, config: Config) -> float:
    """Train ``run_dir`` to the end in one child; return the seconds from READY to exit."""
    with Child(script, run_dir, config) as child:
        child.wait_ready()
        started = time.monotonic()
        child.wait_exit()
    return time.monotonic() - started


def kill_plan(
    rng: random.Random,
    kills: int,
    *,
    write_share: float,
    max_steps_ahead: int,
    startup_share: float = 0.0,
) -> Iterator[Kill | None]:
    """``kills`` random kills, then None (run to the end) forever.

    A share of the kills waits for no step and lands within 0.3 s of READY (while the run directory
    is locked, checked and restored); the others land a few milliseconds after a random number of
    steps (1 to ``max_steps_ahead``). ``write_share`` of all of them wait for a checkpoint write.
    """
    for _ in range(kills):
        kind = "write" if rng.random() < write_share else "time"
        if rng.random() < startup_share:
            yield Kill(kind, 0, rng.uniform(0.0, 0.3))
        else:
            yield Kill(kind, rng.randint(1, max_steps_ahead), rng.uniform(0.0, 0.005))
    while True:
        yield None


def train_with_kills(
    script: Path, run_dir: Path, config: Config, plan: Iterator[Kill | None], *, fsync_delay: float = 0.02
) -> RunReport:
    """Start, kill per ``plan``, and restart the child until it finishes its run on its own."""
    report = RunReport()
    started = time.monotonic()
    checkpoints_dir = run_dir / "checkpoints"
    for kill in plan:
        delay = fsync_delay if kill is not None and kill.kind == "write" else 0.0
        with Child(script, run_dir, config, fsync_delay=delay) as child:
            report.launches += 1
            child.wait_ready()
            if kill is None or not child.wait_steps(kill.steps_ahead) or child.exited_within(kill.delay):
                child.wait_exit()
                break
            target = None
            if kill.kind == "write":
                target = kill_at_write(child, checkpoints_dir)
                if target is None:
                    child.wait_exit()
                    break
            else:
                child.kill()
            child.drain()
        report.kills += 1
        report.kill_steps.append(child.last_step or 0)
        report.kills_before_first_step += child.steps_seen == 0
        if target is not None and target.exists():  # the writer died before its os.replace
            report.kills_during_write += 1
            report.write_kinds[target.name[1:].split("-")[0]] += 1
    report.leftover_temporaries = len(temporaries(checkpoints_dir))
    report.seconds = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------- comparison
def compare_runs(expected_dir: Path, actual_dir: Path, epochs: int) -> list[str]:
    """Every way ``actual_dir`` differs from ``expected_dir`` (empty when they are identical)."""
    problems = _compare_checkpoints(expected_dir / "checkpoints", actual_dir / "checkpoints")
    problems += _compare_log(expected_dir / "log.tsv", actual_dir / "log.tsv")
    problems += _compare_tensorboard(expected_dir / "tensorboard", actual_dir / "tensorboard", epochs)
    status = _status(actual_dir)
    if status != "finished":
        problems.append(f"experiment.json status is {status!r}, expected 'finished'")
    return problems


def _status(run_dir: Path) -> str | None:
    import json

    return json.loads((run_dir / "experiment.json").read_text()).get("status")


def _compare_checkpoints(expected_dir: Path, actual_dir: Path) -> list[str]:
    import torch

    def names(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    if names(expected_dir) != names(actual_dir):
        return [f"checkpoint files differ: {names(expected_dir)} != {names(actual_dir)}"]
    problems: list[str] = []
    for name in names(expected_dir):
        expected = torch.load(expected_dir / name, map_location="cpu", weights_only=True)
        actual = torch.load(actual_dir / name, map_location="cpu", weights_only=True)
        problems += [f"{name}: {p}" for p in tree_differences(expected, actual)]
    return problems


def tree_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where two trees of plain data and tensors differ; wall-clock times are ignored."""
    import torch

    if path.endswith(("/time", "/epoch_time")):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{path or '/'}: keys {sorted(map(str, expected))} != {sorted(map(str, actual))}"]
        return [d for key in expected for d in tree_differences(expected[key], actual[key], f"{path}/{key}")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(expected, actual, strict=True))
            for d in tree_differences(a, b, f"{path}/{i}")
        ]
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        same = (
            expected.dtype == actual.dtype
            and expected.shape == actual.shape
            and torch.equal(expected, actual)
        )
        return [] if same else [f"{path}: tensors differ"]
    if (
        isinstance(expected, float)
        and isinstance(actual, float)
        and math.isnan(expected)
        and math.isnan(actual)
    ):
        return []
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: {expected!r} != {actual!r}"]
    return []


def _log_without_time(path: Path) -> list[list[str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    column = rows[0].index("time")
    return [row[:column] + row[column + 1 :] for row in rows]


def _compare_log(expected: Path, actual: Path) -> list[str]:
    expected_rows, actual_rows = _log_without_time(expected), _log_without_time(actual)
    if expected_rows == actual_rows:
        return []
    return [f"log.tsv differs (time column aside):\n{expected_rows}\n!=\n{actual_rows}"]


def read_scalars(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) events as TensorBoard shows them (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(tensorboard_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _compare_tensorboard(expected_dir: Path, actual_dir: Path, epochs: int) -> list[str]:
    expected, actual = read_scalars(expected_dir), read_scalars(actual_dir)
    if sorted(expected) != sorted(actual):
        return [f"TensorBoard tags differ: {sorted(expected)} != {sorted(actual)}"]
    problems = []
    for tag, events in actual.items():
        steps = [step for step, _ in events]
        if steps != list(range(1, epochs + 1)):
            problems.append(f"TensorBoard {tag!r}: steps {steps}, expected each of 1..{epochs} once")
        elif tag != "time" and events != expected[tag]:
            problems.append(f"TensorBoard {tag!r}: values {events} != {expected[tag]}")
    return problems


# ------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to make in all (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan (default 0)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where runs go (default: a temporary folder)"
    )
    parser.add_argument(
        "--kills-per-run", type=int, default=6, help="kills before a run may finish (default 6)"
    )
    parser.add_argument("--write-share", type=float, default=0.4, help="share of kills aimed at writes (0.4)")
    parser.add_argument(
        "--startup-share", type=float, default=0.1, help="share of kills in the first 0.3 s of a launch (0.1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directories that ended identical")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="kill-stress-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    script = write_training_script(workdir)
    configs = [
        Config(checkpoint_every=4),
        Config(checkpoint_every=None, loader_generator=True),
        Config(checkpoint_every=7, loader_generator=True),
    ]
    references = []
    for index, config in enumerate(configs):
        references.append(workdir / f"reference-{index}")
        shutil.rmtree(references[index], ignore_errors=True)
        seconds = run_uninterrupted(script, references[index], config)
        print(f"reference {index} {config}: {seconds:.2f} s from READY to exit", flush=True)
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    round_number = 0
    while totals["kills"] < args.kills:
        index = round_number % len(configs)
        config, run_dir = configs[index], workdir / f"run-{round_number:03d}"
        shutil.rmtree(run_dir, ignore_errors=True)
        budget = min(args.kills_per_run, args.kills - totals["kills"])
        plan = kill_plan(
            rng,
            budget,
            write_share=args.write_share,
            max_steps_ahead=STEPS_PER_EPOCH,
            startup_share=args.startup_share,
        )
        report = train_with_kills(script, run_dir, config, plan)
        problems = compare_runs(references[index], run_dir, config.epochs)
        totals.update(
            kills=report.kills,
            during_write=report.kills_during_write,
            resumes=report.resumes,
            startup=report.kills_before_first_step,
            runs=1,
            identical=not problems,
            leftover=report.leftover_temporaries,
        )
        kinds.update(report.write_kinds)
        print(
            f"run {round_number:3d} config {index}: {report.kills} kills ({report.kills_during_write} "
            f"mid-write, at steps {report.kill_steps}), {report.resumes} resumes, "
            f"{report.seconds:.1f} s, {'identical' if not problems else 'DIFFERENT'}",
            flush=True,
        )
        for problem in problems[:10]:
            print(f"    {problem}", flush=True)
        if not problems and not args.keep:
            shutil.rmtree(run_dir)
        round_number += 1
    print(
        f"\nkills made: {totals['kills']}\n"
        f"  during checkpoint writes: {totals['during_write']} {dict(kinds)}\n"
        f"  before a launch's first step (start-up, restore): {totals['startup']}\n"
        f"resumes: {totals['resumes']}\n"
        f"runs ended identical: {totals['identical']} of {totals['runs']}\n"
        f"temporary files left behind by killed writers: {totals['leftover']}"
    )
    return 0 if totals["identical"] == totals["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
