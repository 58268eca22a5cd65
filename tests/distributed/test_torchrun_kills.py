"""Real kills and signals of torchrun workers; the rerun of the same command ends bit-identical to an
uninterrupted run.

train_script.py trains 3 epochs of 96 samples in batches of 8 per rank (2 ranks: 6 steps per
epoch, 18 in all; 3 ranks: 4 per epoch) with a step checkpoint every 4 steps (3 with 3 ranks). A
worker is made to wait at a known step (it creates a file and waits for the test) before the test
kills or signals it; a kill during a checkpoint write slows rank 0's fsyncs and kills rank 0 when
the temporary file of the third state write appears. A launch takes about 9 s on 2 cores, most of
it imports and interpreter exit: each 2-rank test's killed launch (its :class:`Kill`, which asserts
what the kill left) is its own, and their reruns are shared (tests/support/killed_runs.py), one
launch per set of options, the synchronous one training the uninterrupted 2-rank run first.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.killed_runs import Kill, KilledRuns
from tests.support.run_comparison import run_differences
from tests.support.selection import selected_parameters
from tests.support.state_checks import assert_same_run, newest_state
from tests.support.torchrun import Torchrun, run_torchrun

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("train_script.py")
EPOCHS = 3
TIMEOUT = 90.0
STATE_TEMPORARY = re.compile(r"^\.state-.+\.[0-9a-f]+\.tmp$")


def committed_step(run_dir: Path) -> int:
    return newest_state(run_dir)["nodes"]["progress"]["global_step"]


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "experiment.json").read_text())["status"]


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob(".*.tmp"))


def assert_same_as(reference_dir: Path, run_dir: Path, note: str = "") -> None:
    """Every checkpoint file, log.tsv, TensorBoard and the status as in the uninterrupted run."""
    problems = run_differences(reference_dir, run_dir, EPOCHS)
    assert problems == [], f"{note}{len(problems)} difference(s):\n" + "\n".join(problems[:30])


def pause_arguments(signal_dir: Path, rank: int, step: int) -> list[str]:
    return ["--pause-rank", str(rank), "--pause-at-step", str(step), "--signal-dir", str(signal_dir)]


def exit_reports(report_dir: Path, nproc: int) -> list[dict[str, Any]]:
    reports = []
    for rank in range(nproc):
        path = report_dir / f"rank-{rank}.json"
        assert path.exists(), f"rank {rank} left no exit report (killed before train() returned?)"
        reports.append(json.loads(path.read_text()))
    return reports


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
    # rank 0 saw its peer vanish (a failed collective, or torchrun's SIGTERM): an interruption
    recorded = json.loads((run_dir / "experiment.json").read_text())
    assert recorded["status"] == "interrupted", recorded.get("message")
    assert "Connection reset" not in (recorded.get("message") or ""), recorded["message"]


def kill_rank_0_in_its_third_state_write(run_dir: Path, options: tuple[str, ...]) -> int:
    """Returns the step committed before the kill."""
    seen: set[str] = set()

    def third_state_write() -> bool:
        seen.update(name for name in temporaries(run_dir) if STATE_TEMPORARY.match(name))
        return len(seen) >= 3

    with Torchrun(SCRIPT, str(run_dir), "--fsync-delay", "0.2", *options, nproc=2) as launch:
        launch.wait_until(third_state_write, TIMEOUT, "the third state write")
        launch.signal_worker(0, signal.SIGKILL)
        killed = launch.wait(TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    left = [name for name in temporaries(run_dir) if STATE_TEMPORARY.match(name)]
    assert left, "the kill should land inside the write, before its rename (a temporary file left)"
    return committed_step(run_dir)


def signal_one_rank_at_step_9(signum: int, rank: int, code: int) -> Callable[[Path, tuple[str, ...]], None]:
    """A driver sending ``signum`` to ``rank`` once it finished step 9: every rank stops with
    ``code`` at one step, the one committed."""

    def drive(run_dir: Path, options: tuple[str, ...]) -> None:
        signals, reports = run_dir.parent / "signals", run_dir.parent / "reports"
        signals.mkdir()
        arguments = [*options, *pause_arguments(signals, rank, 9), "--report-dir", str(reports)]
        with Torchrun(SCRIPT, str(run_dir), *arguments, nproc=2) as launch:
            launch.wait_until(lambda: (signals / "ready").exists(), TIMEOUT, f"rank {rank} to finish step 9")
            launch.signal_worker(rank, signum)
            (signals / "go").write_text("")
            stopped = launch.wait(TIMEOUT)
        assert not stopped.timed_out, stopped.describe()
        ranks = exit_reports(reports, 2)
        assert [r["exit_code"] for r in ranks] == [code, code], f"{ranks}\n{stopped.describe()}"
        assert stopped.failed_workers() == {0: code, 1: code}, stopped.describe()  # the processes' exit codes
        steps = {r["global_step"] for r in ranks}
        assert len(steps) == 1, f"the ranks stopped at different steps: {ranks}"
        assert committed_step(run_dir) == steps.pop(), "the commit is at the step where every rank stopped"
        assert status(run_dir) == "interrupted"

    return drive


MID_EPOCH = Kill("rank-1-mid-epoch", kill_rank_1_mid_epoch)
#: Asynchronous: rank 0's writer thread is killed mid-write while training goes on.
WRITES = [
    Kill("sync", kill_rank_0_in_its_third_state_write),
    Kill("async", kill_rank_0_in_its_third_state_write, ("--async-checkpoint",)),
]
SIGNALS = [
    Kill("sigterm", signal_one_rank_at_step_9(signal.SIGTERM, 1, 143)),
    Kill("sigint", signal_one_rank_at_step_9(signal.SIGINT, 0, 130)),
]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> KilledRuns:
    """The selected tests' kills, then their reruns: one launch per set of options, the one
    without any training the uninterrupted 2-rank run (the reference) first."""
    return KilledRuns(
        SCRIPT,
        tmp_path_factory.mktemp("kills"),
        selected_parameters(request, "kill"),
        nproc=2,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("kill", [MID_EPOCH], ids=str)
def test_torchrun_sigkill_of_rank_1_mid_epoch_resumes_bit_identical(runs: KilledRuns, kill: Kill) -> None:
    assert_same_as(runs.reference(), runs.resumed(kill).run_dir)


@pytest.mark.parametrize("kill", WRITES, ids=str)
def test_torchrun_sigkill_of_rank_0_during_checkpoint_write_resumes_bit_identical(
    runs: KilledRuns, kill: Kill
) -> None:
    """Asynchronous: the uninterrupted run committed synchronously (the files must be the same all
    the same)."""
    resumed = runs.resumed(kill)
    assert temporaries(resumed.run_dir) == [], "the rerun removes what the killed write left"
    assert_same_as(runs.reference(), resumed.run_dir, f"resumed from step {resumed.seen}: ")


@pytest.mark.parametrize("kill", SIGNALS, ids=str)
def test_torchrun_signal_to_one_rank_stops_every_rank_at_one_committed_step(
    runs: KilledRuns, kill: Kill
) -> None:
    run_dir = runs.resumed(kill).run_dir
    assert_same_run(runs.reference(), run_dir)
    assert status(run_dir) == "finished"


def test_torchrun_three_ranks_sigkill_mid_epoch_resumes_bit_identical(tmp_path):
    """3 ranks: the resumed DDP starts from its flat bucket layout, the uninterrupted one had rebuilt
    its buckets; the sums must not change. The uninterrupted run is trained first in the same launch."""
    reference_dir, run_dir, signals = tmp_path / "reference", tmp_path / "run", tmp_path / "signals"
    signals.mkdir()
    # 4 steps per epoch: step 7 is the third batch of epoch 2; steps 3, 4 and 6 were committed.
    arguments = [
        *pause_arguments(signals, 2, 7),
        "--checkpoint-every",
        "3",
        "--reference",
        str(reference_dir),
    ]
    with Torchrun(SCRIPT, str(run_dir), *arguments, nproc=3) as launch:
        launch.wait_until(lambda: (signals / "ready").exists(), TIMEOUT, "rank 2 to finish step 7")
        launch.signal_worker(2, signal.SIGKILL)
        killed = launch.wait(TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    assert committed_step(run_dir) == 6
    resumed = run_torchrun(SCRIPT, str(run_dir), "--checkpoint-every", "3", nproc=3, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.describe()
    assert_same_as(reference_dir, run_dir)


def test_torchrun_process_group_started_by_the_script_trains_the_same_and_exits_cleanly(runs, tmp_path):
    """The script starts the group itself and destroys it after training (as torch asks); the
    library uses that group. Every worker must exit 0: a DDP wrapper still held by the library when
    the group goes made workers abort (SIGABRT) at exit in about one launch in three."""
    run_dir = tmp_path / "run"
    launch = run_torchrun(SCRIPT, str(run_dir), "--init-group", nproc=2, timeout=TIMEOUT)
    assert launch.returncode == 0 and launch.failed_workers() == {}, launch.describe()
    assert_same_as(runs.reference(), run_dir)
