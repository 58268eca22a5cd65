"""Real kills and signals of torchrun workers training with strategy="fsdp"; the rerun of the same
command ends bit-identical to an uninterrupted run: every commit folder (its tree file and its shards
read whole), the best weights, log.tsv, TensorBoard and the status.

train_script.py (with ``--strategy fsdp``) trains 3 epochs of 96 samples in batches of 8 per rank
(2 ranks: 6 steps per epoch; 3 ranks: 4) with a step commit every 4 steps (3 with 3 ranks). A
launch takes about 10 s on 2 cores: each 2-rank test's killed launch (its :class:`Kill`, which
asserts what the kill left) is its own, and their reruns are shared (tests/support/killed_runs.py),
one launch per set of options, the synchronous one training the uninterrupted 2-rank run first;
the refused relaunch of that run with 3 ranks is one launch, the 3-rank test two.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.distributed.test_torchrun_kills import exit_reports, pause_arguments, status
from tests.support.killed_runs import Kill, KilledRuns
from tests.support.run_comparison import run_differences
from tests.support.selection import selected_parameters
from tests.support.state_checks import snapshot_files
from tests.support.torchrun import Torchrun, run_torchrun

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("train_script.py")
FSDP = ("--strategy", "fsdp")
EPOCHS = 3
TIMEOUT = 90.0
LOCK_FILES = (".lock", ".lock.holder")  # taken (and the holder rewritten) before anything is checked
COMMIT_TEMPORARY = re.compile(r"^\.state-[0-9]+\.tmp$")
ASYNC = ("--async-checkpoint",)


def committed_step(run_dir: Path) -> int:
    newest = sorted((run_dir / "checkpoints").glob("state-*"))[-1]
    tree = torch.load(newest / "tree.pt", map_location="cpu", weights_only=True)
    return int(tree["nodes"]["progress"]["global_step"])


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if COMMIT_TEMPORARY.match(p.name))


def assert_same_as(reference_dir: Path, run_dir: Path, note: str = "") -> None:
    problems = run_differences(reference_dir, run_dir, EPOCHS)
    assert problems == [], f"{note}{len(problems)} difference(s):\n" + "\n".join(problems[:30])


def rerun(run_dir: Path, *arguments: str, nproc: int = 2) -> None:
    launch = run_torchrun(SCRIPT, str(run_dir), *FSDP, *arguments, nproc=nproc, timeout=TIMEOUT)
    assert launch.returncode == 0, launch.describe()


# ------------------------------------------------------- the killed launches (the reruns are shared)
def kill_rank_1_mid_epoch(run_dir: Path, options: tuple[str, ...]) -> None:
    signals = run_dir.parent / "signals"
    signals.mkdir()
    # Step 9 is the third batch of epoch 2; steps 4, 6 (epoch 1's end) and 8 were committed.
    with Torchrun(SCRIPT, str(run_dir), *options, *pause_arguments(signals, 1, 9), nproc=2) as launch:
        launch.wait_until(lambda: (signals / "ready").exists(), TIMEOUT, "rank 1 to finish step 9")
        launch.signal_worker(1, signal.SIGKILL)
        killed = launch.wait(TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    assert committed_step(run_dir) == 8, "the last commit before the kill is step 8's"
    assert status(run_dir) == "interrupted"


def kill_rank_0_inside_its_third_commit(run_dir: Path, options: tuple[str, ...]) -> int:
    """Returns the step committed before the kill."""
    seen: set[str] = set()

    def third_commit() -> bool:
        seen.update(temporaries(run_dir) if (run_dir / "checkpoints").is_dir() else [])
        return len(seen) >= 3

    with Torchrun(SCRIPT, str(run_dir), *options, "--fsync-delay", "0.3", nproc=2) as launch:
        launch.wait_until(third_commit, TIMEOUT, "the third commit folder")
        launch.signal_worker(0, signal.SIGKILL)
        killed = launch.wait(TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    left = temporaries(run_dir)
    assert left, "the kill should land inside the commit, before its rename (a temporary folder left)"
    return committed_step(run_dir)


def kill_rank_1_inside_its_third_commit(where: str, committed: int) -> Callable[[Path, tuple[str, ...]], int]:
    """Rank 1 pauses inside its third commit (step 8's) at ``where`` and is killed there; the
    newest commit is then step ``committed``'s."""

    def drive(run_dir: Path, options: tuple[str, ...]) -> int:
        signals = run_dir.parent / "signals"
        signals.mkdir()
        pause = [
            "--pause-rank",
            "1",
            "--pause-in-commit",
            "3",
            "--pause-where",
            where,
            "--signal-dir",
            str(signals),
        ]
        with Torchrun(SCRIPT, str(run_dir), *options, *pause, nproc=2) as launch:
            launch.wait_until(lambda: (signals / "ready").exists(), TIMEOUT, "rank 1 inside the third commit")
            launch.signal_worker(1, signal.SIGKILL)
            killed = launch.wait(TIMEOUT)
        assert killed.returncode != 0 and not killed.timed_out, killed.describe()
        assert killed.failed_workers().get(1) == -signal.SIGKILL, killed.describe()
        assert committed_step(run_dir) == committed, killed.describe()
        return committed

    return drive


def sigterm_to_rank_1_at_step_9(run_dir: Path, options: tuple[str, ...]) -> None:
    signals, reports = run_dir.parent / "signals", run_dir.parent / "reports"
    signals.mkdir()
    arguments = [*options, *pause_arguments(signals, 1, 9), "--report-dir", str(reports)]
    with Torchrun(SCRIPT, str(run_dir), *arguments, nproc=2) as launch:
        launch.wait_until(lambda: (signals / "ready").exists(), TIMEOUT, "rank 1 to finish step 9")
        launch.signal_worker(1, signal.SIGTERM)
        (signals / "go").write_text("")
        stopped = launch.wait(TIMEOUT)
    assert not stopped.timed_out, stopped.describe()
    ranks = exit_reports(reports, 2)
    assert [r["exit_code"] for r in ranks] == [143, 143], f"{ranks}\n{stopped.describe()}"
    steps = {r["global_step"] for r in ranks}
    assert len(steps) == 1, f"the ranks stopped at different steps: {ranks}"
    assert committed_step(run_dir) == steps.pop(), "the commit is at the step where every rank stopped"
    assert status(run_dir) == "interrupted"


MID_EPOCH = Kill("rank-1-mid-epoch", kill_rank_1_mid_epoch)
RANK_0_IN_A_COMMIT = [
    Kill("sync", kill_rank_0_inside_its_third_commit),
    Kill("async", kill_rank_0_inside_its_third_commit, ASYNC),
]
RANK_1_IN_A_COMMIT = [
    Kill(f"{mode}-{where}-{committed}", kill_rank_1_inside_its_third_commit(where, committed), options)
    for mode, options in (("sync", ()), ("async", ASYNC))
    for where, committed in (("shards", 6), ("saved", 8))
]
SIGTERM = Kill("sigterm-to-rank-1", sigterm_to_rank_1_at_step_9)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> KilledRuns:
    """The selected tests' kills, then their reruns: one launch per set of options, the one
    without any training the uninterrupted 2-rank run (the reference) first."""
    kills = selected_parameters(request, "kill")
    return KilledRuns(SCRIPT, tmp_path_factory.mktemp("kills"), kills, options=FSDP, nproc=2, timeout=TIMEOUT)


@pytest.mark.parametrize("kill", [MID_EPOCH], ids=str)
def test_fsdp_sigkill_of_rank_1_mid_epoch_resumes_bit_identical(runs: KilledRuns, kill: Kill) -> None:
    assert_same_as(runs.reference(), runs.resumed(kill).run_dir)


@pytest.mark.parametrize("kill", RANK_0_IN_A_COMMIT, ids=str)
def test_fsdp_sigkill_of_rank_0_inside_a_commit_resumes_bit_identical(runs: KilledRuns, kill: Kill) -> None:
    """Rank 0's fsyncs of the library's files are slowed (its tree file, written after every rank's
    shards and DCP's .metadata): the kill lands after DCP's save and before the rename, where the
    temporary folder is complete by DCP's own rule. It is not a commit; the rerun removes it.
    Asynchronous: the commit is written by the writer threads while training goes on; the
    uninterrupted run committed synchronously (the files must be the same all the same)."""
    resumed = runs.resumed(kill)
    assert temporaries(resumed.run_dir) == [], "the rerun removes what the killed commit left"
    assert_same_as(runs.reference(), resumed.run_dir, f"resumed from step {resumed.seen}: ")


@pytest.mark.parametrize("kill", RANK_1_IN_A_COMMIT, ids=str)
def test_fsdp_sigkill_of_rank_1_inside_a_commit_resumes_bit_identical(runs: KilledRuns, kill: Kill) -> None:
    """Rank 1 pauses inside the third commit (step 8's) and is killed there:

    - "shards": once its shard files are written and fsynced, before DCP's closing collective
      (where rank 0 writes .metadata). Rank 0 cannot complete the commit without it: its DCP
      collective fails, it removes the temporary folder and exits (or, if torchrun's SIGTERM ends
      it first, the rerun removes the folder); the newest commit stays step 6's.
    - "saved": once DCP's save has returned on rank 1 (every shard and .metadata written). Rank 0
      needs nothing more from it: it writes the tree file and renames the folder, then meets the
      dead peer; step 8's commit is durable and the rerun resumes from it.

    Asynchronous: rank 1's writer thread pauses while its training thread goes on; rank 0's writer
    thread and training thread both meet the dead peer."""
    resumed = runs.resumed(kill)
    assert temporaries(resumed.run_dir) == [], "the rerun removes what the killed commit left"
    assert_same_as(runs.reference(), resumed.run_dir, f"resumed from step {resumed.seen}: ")


@pytest.mark.parametrize("kill", [SIGTERM], ids=str)
def test_fsdp_sigterm_to_one_rank_stops_every_rank_at_one_committed_step(
    runs: KilledRuns, kill: Kill
) -> None:
    run_dir = runs.resumed(kill).run_dir
    assert_same_as(runs.reference(), run_dir)
    assert json.loads((run_dir / "experiment.json").read_text())["status"] == "finished"


def test_fsdp_three_ranks_sigkill_mid_epoch_resumes_bit_identical(tmp_path):
    """The uninterrupted 3-rank run is trained first in the same launch (--reference)."""
    reference_dir, run_dir, signals = tmp_path / "reference", tmp_path / "run", tmp_path / "signals"
    signals.mkdir()
    # 4 steps per epoch: step 7 is the third batch of epoch 2; steps 3, 4 and 6 were committed.
    arguments = [
        *FSDP,
        *pause_arguments(signals, 2, 7),
        "--checkpoint-every",
        "3",
        "--reference",
        str(reference_dir),
    ]
    with Torchrun(SCRIPT, str(run_dir), *arguments, nproc=3) as launch:
        launch.wait_until(lambda: (signals / "ready").exists(), 2 * TIMEOUT, "rank 2 to finish step 7")
        launch.signal_worker(2, signal.SIGKILL)
        killed = launch.wait(2 * TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    assert committed_step(run_dir) == 6
    rerun(run_dir, "--checkpoint-every", "3", nproc=3)
    assert_same_as(reference_dir, run_dir)


def test_fsdp_run_of_two_ranks_relaunched_with_three_is_refused_on_every_rank_nothing_written(runs, tmp_path):
    run_dir, reports = tmp_path / "run", tmp_path / "reports"
    shutil.copytree(runs.reference(), run_dir)
    before = snapshot_files(run_dir, ignore=LOCK_FILES)
    newest = re.escape(str(sorted((run_dir / "checkpoints").glob("state-*"))[-1]))
    arguments = [*FSDP, "--epochs", "4", "--report-dir", str(reports)]
    launch = run_torchrun(SCRIPT, str(run_dir), *arguments, nproc=3, timeout=TIMEOUT)
    assert launch.returncode != 0 and not launch.timed_out, launch.describe()
    for rank, report in enumerate(exit_reports(reports, 3)):
        assert re.match(
            rf"StateMismatchError: The checkpoint {newest} was written with world size 2 "
            r"\(processes\), and this run has world size 3: .* Launch it with as many processes as "
            r"before \(2 in all: .*Nothing was loaded and the directory was not changed\.$",
            report["error"],
        ), f"rank {rank}: {report}"
    assert snapshot_files(run_dir, ignore=LOCK_FILES) == before, "the refused relaunch changed files"
