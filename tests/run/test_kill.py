"""SIGKILL a real training process at random moments, resume it until it finishes, compare bit for bit.

The child training script, the kill loop and the comparison live in tests/support (kill.py,
run_comparison.py); scripts/kill.py runs the same check at scale. Here each test makes a few
kills so that the file stays near a minute.
A kill waits for a random number of training steps reported by the child (plus a few random
milliseconds), so the planned kills happen however fast the machine is.

The child trains in one thread and spends most of a launch importing: the module starts the
references and the kill runs of its selected tests at once, as many at a time as the machine has
cores, and each test waits for its own (its report and run directory).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.support import kill
from tests.support.run_comparison import run_differences, tree_differences
from tests.support.selection import selected_parameters

pytestmark = pytest.mark.slow

STEP_CHECKPOINTS = kill.Config(epochs=4, checkpoint_every=4)
EPOCH_CHECKPOINTS = kill.Config(epochs=3, checkpoint_every=None, loader_generator=True)
ASYNC_CHECKPOINTS = dataclasses.replace(STEP_CHECKPOINTS, async_checkpoint=True)
AHEAD = kill.STEPS_PER_EPOCH - 5


@dataclasses.dataclass(frozen=True)
class Planned:
    """A test's run: its configuration and its kill plan (made when the run starts)."""

    name: str
    config: kill.Config
    plan: Callable[[], Iterator[kill.Kill | None]]

    def __str__(self) -> str:  # the test's id
        return self.name


# Seed 6 plans kills after 16 steps, within 0.3 s of start-up (during the restore), after 11 steps.
RANDOM_MOMENTS = Planned(
    "random-moments",
    STEP_CHECKPOINTS,
    lambda: kill.kill_plan(random.Random(6), 3, write_share=0.0, max_steps_ahead=AHEAD, startup_share=0.34),
)
DURING_WRITES = Planned(
    "during-writes",
    STEP_CHECKPOINTS,
    lambda: kill.kill_plan(random.Random(5), 2, write_share=1.0, max_steps_ahead=AHEAD),
)
# Seed 3 plans two kills aimed at (background) writes, then one at a random step; every fsync of
# the child is slowed, so that writes are in flight while training goes on.
ASYNCHRONOUS = Planned(
    "asynchronous",
    ASYNC_CHECKPOINTS,
    lambda: kill.kill_plan(random.Random(3), 3, write_share=0.5, max_steps_ahead=AHEAD),
)
EPOCH_ENDS = Planned(
    "epoch-ends",
    EPOCH_CHECKPOINTS,
    lambda: kill.kill_plan(random.Random(3), 2, write_share=0.0, max_steps_ahead=AHEAD),
)


class Runs:
    """The uninterrupted references and the selected tests' kill runs, in threads, ``workers`` at a
    time (the references first: every test compares with one)."""

    def __init__(self, workdir: Path, planned: list[Planned], workers: int) -> None:
        self.workdir = workdir
        self.script = kill.write_training_script(workdir)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kill-run")
        self._references: dict[str, Future[float]] = {}
        for config in (STEP_CHECKPOINTS, EPOCH_CHECKPOINTS):
            self._references[repr(config)] = self._pool.submit(
                kill.run_uninterrupted, self.script, self._reference_dir(config), config
            )
        self._runs = {
            run.name: self._pool.submit(
                kill.train_with_kills, self.script, workdir / run.name, run.config, run.plan()
            )
            for run in planned
        }

    def reference(self, config: kill.Config) -> Path:
        """The run of ``config`` never interrupted (asynchronous commits: the synchronous one)."""
        config = dataclasses.replace(config, async_checkpoint=False)
        self._references[repr(config)].result()
        return self._reference_dir(config)

    def killed(self, run: Planned) -> tuple[kill.RunReport, Path]:
        """What happened to ``run`` while it was killed and resumed, and its run directory."""
        return self._runs[run.name].result(), self.workdir / run.name

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _reference_dir(self, config: kill.Config) -> Path:
        return self.workdir / f"reference-{'steps' if config.checkpoint_every else 'epochs'}"


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    planned = selected_parameters(request, "run")
    started = Runs(tmp_path_factory.mktemp("kill"), planned, workers=os.cpu_count() or 2)
    yield started
    started.close()


@pytest.mark.parametrize("run", [RANDOM_MOMENTS], ids=str)
def test_kill_at_random_moments_resumes_bit_identical(runs: Runs, run: Planned) -> None:
    report, run_dir = runs.killed(run)
    # A planned kill is skipped when the run finishes first: how far a resume restarts depends on
    # whether the commit at the killed step landed before the kill, which timing decides.
    assert report.kills >= 2
    assert report.resumes == report.kills
    assert run_differences(runs.reference(run.config), run_dir, run.config.epochs) == []


@pytest.mark.parametrize("run", [DURING_WRITES], ids=str)
def test_kill_during_checkpoint_writes_resumes_bit_identical(runs: Runs, run: Planned) -> None:
    report, run_dir = runs.killed(run)
    assert report.kills >= 1
    # Counted only when the killed writer's temporary file is still there: it died before os.replace.
    assert report.kills_during_write >= 1
    assert run_differences(runs.reference(run.config), run_dir, run.config.epochs) == []


@pytest.mark.parametrize("run", [ASYNCHRONOUS], ids=str)
def test_kill_with_asynchronous_commits_resumes_as_an_uninterrupted_synchronous_run(
    runs: Runs, run: Planned
) -> None:
    report, run_dir = runs.killed(run)
    assert report.kills >= 2
    # Counted when a temporary file of the killed launch is still there: its writer thread died.
    assert report.kills_during_background_write >= 1
    assert report.leftover_temporaries == 0  # the last launch removed what the killed writers left
    # The reference is synchronous: asynchronous commits change when files are written, not what.
    assert run_differences(runs.reference(run.config), run_dir, run.config.epochs) == []


@pytest.mark.parametrize("run", [EPOCH_ENDS], ids=str)
def test_kill_without_step_checkpoints_resumes_from_epoch_end(runs: Runs, run: Planned) -> None:
    report, run_dir = runs.killed(run)
    assert report.kills >= 1
    assert run_differences(runs.reference(run.config), run_dir, run.config.epochs) == []


def test_kill_comparison_detects_a_different_run(runs: Runs) -> None:
    """The comparison is not vacuous: a run with other settings is reported as different."""
    step_dir, epoch_dir = runs.reference(STEP_CHECKPOINTS), runs.reference(EPOCH_CHECKPOINTS)
    problems = run_differences(step_dir, epoch_dir, STEP_CHECKPOINTS.epochs)
    assert any(problem.startswith("checkpoint files differ") for problem in problems)
    assert any(problem.startswith("log.tsv differs") for problem in problems)
    assert any(problem.startswith("TensorBoard 'loss'") for problem in problems)
    newest = [max((run_dir / "checkpoints").glob("state-*.pt")) for run_dir in (step_dir, epoch_dir)]
    expected, actual = (torch.load(path, weights_only=True) for path in newest)
    differences = tree_differences(expected, actual)
    # Format 2 state files hold their nodes under "nodes"; format 1 held "model" and "loop" on top.
    assert any(difference.startswith(("/model/", "/nodes/model/")) for difference in differences)
    assert any(difference.startswith(("/loop/rng/", "/nodes/rng/")) for difference in differences)
    assert tree_differences(expected, expected) == []
