"""The kill harness: SIGKILL a training child at planned moments and restart it until it finishes.

Some kills are aimed at checkpoint writes: :func:`kill_at_write` polls the ``checkpoints/`` folder
for the temporary files of ``experiment.store.files.atomic_writer`` and kills as soon as one appears
(the child slows its own fsync down a little so that the window can be caught). With
``Config(async_checkpoint=True)`` the child writes its commits from a background thread and slows
every fsync, so that random kills also land while a write is in flight; such kills are counted
apart (a fresh temporary file is there after the kill). Used by
tests/run/test_kill.py, and at scale by scripts/kill_stress.py; :mod:`tests.support.run_comparison`
checks the result against an uninterrupted run.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.kill_child import (
    RUN_TIMEOUT,
    STEPS_PER_EPOCH,
    Child,
    Config,
    temporaries,
    write_training_script,
)

__all__ = [
    "STEPS_PER_EPOCH",
    "Config",
    "Kill",
    "RunReport",
    "kill_at_write",
    "kill_plan",
    "run_uninterrupted",
    "train_with_kills",
    "write_training_script",
]


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
    #: Asynchronous commits: kills after which a temporary file of this launch was left, that is,
    #: that landed while the background writer was writing (whatever the kill aimed at).
    kills_during_background_write: int = 0
    kills_before_first_step: int = 0
    write_kinds: Counter[str] = field(default_factory=Counter)
    kill_steps: list[int] = field(default_factory=list)
    leftover_temporaries: int = 0
    seconds: float = 0.0

    @property
    def resumes(self) -> int:
        return max(self.launches - 1, 0)


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
        # Asynchronous writes run alongside training: slowed always, so that random kills meet them.
        slowed = kill is not None and (kill.kind == "write" or config.async_checkpoint)
        stale = set(temporaries(checkpoints_dir))
        with Child(script, run_dir, config, fsync_delay=fsync_delay if slowed else 0.0) as child:
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
        if config.async_checkpoint and set(temporaries(checkpoints_dir)) - stale:
            report.kills_during_background_write += 1
        if target is not None and target.exists():  # the writer died before its os.replace
            report.kills_during_write += 1
            report.write_kinds[target.name[1:].split("-")[0]] += 1
    report.leftover_temporaries = len(temporaries(checkpoints_dir))
    report.seconds = time.monotonic() - started
    return report
