"""SIGKILL a real training process at random moments, resume it until it finishes, compare bit for bit.

The child training script, the kill loop and the comparison live in tests/support (kill.py,
run_comparison.py); scripts/kill.py runs the same check at scale. Here each test makes a few
kills so that the file stays near a minute.
A kill waits for a random number of training steps reported by the child (plus a few random
milliseconds), so the planned kills happen however fast the machine is.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from tests.support import kill
from tests.support.run_comparison import run_differences, tree_differences

pytestmark = pytest.mark.slow

STEP_CHECKPOINTS = kill.Config(epochs=4, checkpoint_every=4)
EPOCH_CHECKPOINTS = kill.Config(epochs=3, checkpoint_every=None, loader_generator=True)
AHEAD = kill.STEPS_PER_EPOCH - 5


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The child script, and a function giving the uninterrupted reference run of a configuration."""
    workdir = tmp_path_factory.mktemp("kill")
    script = kill.write_training_script(workdir)
    references: dict[str, Path] = {}

    def reference(config) -> Path:
        key = repr(config)
        if key not in references:
            references[key] = workdir / f"reference-{len(references)}"
            kill.run_uninterrupted(script, references[key], config)
        return references[key]

    return script, reference


def test_kill_at_random_moments_resumes_bit_identical(harness, tmp_path):
    script, reference = harness
    # Seed 6 plans kills after 16 steps, within 0.3 s of start-up (during the restore), after 11 steps.
    plan = kill.kill_plan(random.Random(6), 3, write_share=0.0, max_steps_ahead=AHEAD, startup_share=0.34)
    report = kill.train_with_kills(script, tmp_path / "run", STEP_CHECKPOINTS, plan)
    # A planned kill is skipped when the run finishes first: how far a resume restarts depends on
    # whether the commit at the killed step landed before the kill, which timing decides.
    assert report.kills >= 2
    assert report.resumes == report.kills
    assert run_differences(reference(STEP_CHECKPOINTS), tmp_path / "run", STEP_CHECKPOINTS.epochs) == []


def test_kill_during_checkpoint_writes_resumes_bit_identical(harness, tmp_path):
    script, reference = harness
    plan = kill.kill_plan(random.Random(5), 2, write_share=1.0, max_steps_ahead=AHEAD)
    report = kill.train_with_kills(script, tmp_path / "run", STEP_CHECKPOINTS, plan)
    assert report.kills >= 1
    # Counted only when the killed writer's temporary file is still there: it died before os.replace.
    assert report.kills_during_write >= 1
    assert run_differences(reference(STEP_CHECKPOINTS), tmp_path / "run", STEP_CHECKPOINTS.epochs) == []


def test_kill_with_asynchronous_commits_resumes_as_an_uninterrupted_synchronous_run(harness, tmp_path):
    script, reference = harness
    config = dataclasses.replace(STEP_CHECKPOINTS, async_checkpoint=True)
    # Seed 3 plans two kills aimed at (background) writes, then one at a random step; every fsync
    # of the child is slowed, so that writes are in flight while training goes on.
    plan = kill.kill_plan(random.Random(3), 3, write_share=0.5, max_steps_ahead=AHEAD)
    report = kill.train_with_kills(script, tmp_path / "run", config, plan)
    assert report.kills >= 2
    # Counted when a temporary file of the killed launch is still there: its writer thread died.
    assert report.kills_during_background_write >= 1
    assert report.leftover_temporaries == 0  # the last launch removed what the killed writers left
    # The reference is synchronous: asynchronous commits change when files are written, not what.
    assert run_differences(reference(STEP_CHECKPOINTS), tmp_path / "run", config.epochs) == []


def test_kill_without_step_checkpoints_resumes_from_epoch_end(harness, tmp_path):
    script, reference = harness
    plan = kill.kill_plan(random.Random(3), 2, write_share=0.0, max_steps_ahead=AHEAD)
    report = kill.train_with_kills(script, tmp_path / "run", EPOCH_CHECKPOINTS, plan)
    assert report.kills >= 1
    assert run_differences(reference(EPOCH_CHECKPOINTS), tmp_path / "run", EPOCH_CHECKPOINTS.epochs) == []


def test_kill_comparison_detects_a_different_run(harness):
    """The comparison is not vacuous: a run with other settings is reported as different."""
    _, reference = harness
    step_dir, epoch_dir = reference(STEP_CHECKPOINTS), reference(EPOCH_CHECKPOINTS)
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
