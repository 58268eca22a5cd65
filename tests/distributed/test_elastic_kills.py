"""SIGKILL of a rank of an elastic run (``Experiment(elastic=True)``), then the same command on the
same number of ranks (bit-identical to the uninterrupted elastic run) and on another (it continues
from the same commit, the change recorded): real torchrun processes, train_script.py ``--elastic``.

The network holds BatchNorm, whose batch statistics depend on each rank's slice: across a change
of world size the run is the same run only up to that and to summation order, so the resume on 3
ranks is checked for what it must keep (the commit it continues from, the steps it trains, the
record of the change, one warning), not against a tolerance.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.distributed.test_torchrun_kills import TIMEOUT, assert_same_as, committed_step, pause_arguments
from tests.support.torchrun import Torchrun, run_torchrun

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("train_script.py")


def test_elastic_sigkill_of_rank_1_resumes_bit_identical_on_two_ranks_and_continues_on_three(tmp_path):
    run_dir, reference, signals = tmp_path / "run", tmp_path / "reference", tmp_path / "signals"
    signals.mkdir()
    # Killed at step 7, the first of epoch 2: the last commit is epoch 1's end (step 6), where the
    # run's epoch metric (F1, whose state each rank holds for its own samples) may change hands.
    arguments = ["--elastic", "--reference", str(reference), *pause_arguments(signals, 1, 7)]
    with Torchrun(SCRIPT, str(run_dir), *arguments, nproc=2) as launch:
        launch.wait_until(lambda: (signals / "ready").exists(), 2 * TIMEOUT, "rank 1 to finish step 7")
        launch.signal_worker(1, signal.SIGKILL)
        killed = launch.wait(TIMEOUT)
    assert killed.returncode != 0 and not killed.timed_out, killed.describe()
    assert committed_step(run_dir) == 6, "the last commit before the kill is epoch 1's end"
    on_three = tmp_path / "on-three"
    shutil.copytree(run_dir, on_three)

    again = run_torchrun(SCRIPT, str(run_dir), "--elastic", nproc=2, timeout=TIMEOUT)
    assert again.returncode == 0, again.describe()
    assert_same_as(reference, run_dir)

    moved = run_torchrun(SCRIPT, str(on_three), "--elastic", nproc=3, timeout=TIMEOUT)
    assert moved.returncode == 0, moved.describe()
    recorded = json.loads((on_three / "experiment.json").read_text())
    assert recorded["status"] == "finished", recorded.get("message")
    changes = [(c["from"], c["to"]) for c in recorded["changes"] if c["what"] == "world_size"]
    assert changes == [(2, 3)]
    assert recorded["created_with"]["global_batch"] == 16
    assert moved.stderr.count("saved by 2 process(es) and resumes on 3") == 1, moved.describe()
    final = json.loads((reference / "experiment.json").read_text())
    assert committed_step(on_three) == committed_step(reference), "the same optimizer steps in all"
    assert final["status"] == "finished"
