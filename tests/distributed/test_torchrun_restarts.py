"""torchrun's own restarts (``--max-restarts``), after a crash and after the loss of a node: the same
script, started again by torchrun, resumes the run from its last commit and ends bit-identical to
the uninterrupted run. Both train an ``elastic="exact"`` run with elastic_scenarios.py (a global
batch of 12 in 6 groups, 4 steps per epoch, 2 epochs, a commit every 2 steps), where one worker of
torchrun's first attempt waits after step 7 (the last commit being step 6's) to be killed there.

After a crash: a standalone launch of 2 workers, rank 1 SIGKILLed; torchrun restarts both, whose
process group starts anew: by default through the store that torchrun's agent shares with its
workers, which still holds the addresses of the failed attempt; with
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, through a store that rank 0 hosts, as in the first attempt.

After the loss of a node: two torchrun agents on this machine play two nodes (``--nnodes=1:2
--nproc-per-node=1``, a c10d rendezvous, ``--max-restarts=2``). The node of rank 0 (whose worker
writes the run directory and holds its lock) is SIGKILLed, agent and worker. The survivor's worker
fails in its next collective at once ("Connection closed by peer": no timeout is waited for),
torchrun re-rendezvouses alone and starts the script again on a world of one, which resumes from
step 6 and must end bit-identical to the uninterrupted single-process run.

The rendezvous store is held by the test, as a cluster's rendezvous host outlives its nodes (the
agent that hosted it could not be the one lost). ``--local-addr`` pins which node gets rank 0
(ranks follow the nodes' addresses). The lost node joins first, with a long ``last_call_timeout``
(the first node to join waits that long for the others); the survivor's short one is what it waits,
alone, after the loss. ``keep_alive_interval=1,keep_alive_max_attempt=3`` lets the survivor declare
the lost node dead 3 s after its last heartbeat (torch's default: 15 s). Measured on 2 cores: the
survivor's worker fails 0.1 s after the kill, torchrun sees it exit 1-2.5 s later, and the new
round completes 1.5-2.5 s after that (about 40 s with torch's default timeouts).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend

from experiment.inspection.summary import summarize
from tests.distributed.elastic_workload import read_phase, run_phase
from tests.distributed.test_torchrun_kills import TIMEOUT, committed_step
from tests.support.state_checks import assert_same_tree, newest_state, read_log
from tests.support.torchrun import Torchrun

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("elastic_scenarios.py")
RUN_ID = "membership"
SAMPLES, BATCH_SIZE, EPOCHS, GROUPS, PAUSE_AT = 45, 6, 2, 6, 7
#: The run X, 6 samples per process on two: rank 0 of the first attempt waits after step 7, a
#: library error ends the script (as a user's) so that torchrun sees the worker fail.
SPEC = f"X:{SAMPLES}:{BATCH_SIZE}:{EPOCHS}:0:exact={GROUPS}:pause={PAUSE_AT}:pausing=0:raise=1"


def node_options(port: int, address: str, last_call: int) -> list[str]:
    """torchrun's options for one node of the run (``address`` orders the nodes' ranks)."""
    conf = f"is_host=0,last_call_timeout={last_call},keep_alive_interval=1,keep_alive_max_attempt=3"
    return [
        "--nnodes=1:2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={RUN_ID}",
        f"--rdzv-conf={conf}",
        "--max-restarts=2",
        f"--local-addr={address}",
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run, in this process: run_phase's record, and its directory as ``run_dir``."""
    run_dir = tmp_path_factory.mktemp("reference") / "X"
    outcome = run_phase(
        run_dir,
        samples=SAMPLES,
        batch_size=2 * BATCH_SIZE,
        epochs=EPOCHS,
        stop_at=0,
        elastic="exact",
        groups=GROUPS,
    )
    assert outcome["error"] is None, outcome["error"]
    return {**outcome, "run_dir": run_dir}


def assert_same_as_reference(run_dir: Path, resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    """The run ends as the reference: the final weights bit for bit (in memory, and the model and
    optimizer of the last commit), steps 7 and 8 trained after the resume, one log row per epoch."""
    assert resumed["error"] is None, resumed["error"]
    assert sorted(resumed["steps"]) == [7, 8], "the script resumed at step 6's commit"
    assert resumed["weight_bits"] == reference["weight_bits"]
    final, expected = newest_state(run_dir)["nodes"], newest_state(reference["run_dir"])["nodes"]
    for node in ("model", "optimizer"):
        assert_same_tree(final[node], expected[node], node, ("nodes", node))
    assert final["progress"]["global_step"] == expected["progress"]["global_step"] == 8
    # One row per epoch. Their losses are the same up to summation order only: each process sums its
    # groups' losses in float32 before the float64 total over the processes.
    logged, expected_log = read_log(run_dir), read_log(reference["run_dir"])
    assert logged["epoch"].tolist() == expected_log["epoch"].tolist() == [1, 2]
    assert (logged["loss"] - expected_log["loss"]).abs().max() < 1e-6, (logged, expected_log)
    recorded = json.loads((run_dir / "experiment.json").read_text())
    assert recorded["status"] == "finished", recorded.get("message")
    assert recorded["created_with"]["global_batch"] == 2 * BATCH_SIZE


@pytest.mark.parametrize("shared_store", [True, False], ids=["agent-store", "own-store"])
def test_torchrun_restart_after_a_crash_resumes_the_run_bit_identical(tmp_path, reference, shared_store):
    workdir, run_dir = tmp_path / "work", tmp_path / "work" / "X"
    env = {} if shared_store else {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    spec = SPEC.replace("pausing=0", "pausing=1")
    launcher = ("--standalone", "--max-restarts=1")
    with Torchrun(SCRIPT, str(workdir), spec, nproc=2, env=env, launcher=launcher) as launch:
        launch.wait_until(
            (workdir / "signals" / "X" / "ready").exists, TIMEOUT, f"rank 1 to finish step {PAUSE_AT}"
        )
        assert committed_step(run_dir) == 6, "the last commit before the kill is step 6's"
        launch.signal_worker(1, signal.SIGKILL)
        finished = launch.wait(TIMEOUT)
    assert finished.returncode == 0 and not finished.timed_out, finished.describe()
    assert_same_as_reference(run_dir, read_phase(workdir / "records" / "X-w2-rank0.json"), reference)
    assert "changes" not in json.loads((run_dir / "experiment.json").read_text())


@pytest.fixture
def rendezvous_store() -> Iterator[dist.TCPStore]:
    """The c10d rendezvous's store, on a free port of this machine."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    yield store
    del store


def test_torchrun_lost_node_restarts_the_survivor_on_one_process_bit_identical(
    tmp_path, reference, rendezvous_store
):
    workdir, run_dir = tmp_path / "work", tmp_path / "work" / "X"
    rendezvous = C10dRendezvousBackend(rendezvous_store, RUN_ID)
    env = {"LOGLEVEL": "INFO"}  # torchrun's rendezvous and restarts, in a failure's description
    port = rendezvous_store.port
    with Torchrun(
        SCRIPT, str(workdir), SPEC, nproc=1, env=env, launcher=node_options(port, "127.0.0.1", 60)
    ) as lost:
        lost.wait_until(lambda: rendezvous.get_state() is not None, TIMEOUT, "the first node to join")
        survivor_options = node_options(port, "127.0.0.2", 1)
        with Torchrun(SCRIPT, str(workdir), SPEC, nproc=1, env=env, launcher=survivor_options) as survivor:
            ready = workdir / "signals" / "X" / "ready"
            lost.wait_until(ready.exists, TIMEOUT, f"rank 0 to finish step {PAUSE_AT}")
            assert (lost.worker_pids(), survivor.worker_pids().keys()) == ({0: int(ready.read_text())}, {1})
            assert committed_step(run_dir) == 6, "the last commit before the kill is step 6's"
            lost.kill_node()
            finished = survivor.wait(TIMEOUT)
    assert finished.returncode == 0 and not finished.timed_out, finished.describe()
    first_attempt = (workdir / "errors" / "rank-1.txt").read_text()
    assert "by peer" in first_attempt, first_attempt  # its collective failed: the peer was gone

    resumed = read_phase(workdir / "records" / "X-w1-rank0.json")
    assert_same_as_reference(run_dir, resumed, reference)
    recorded = json.loads((run_dir / "experiment.json").read_text())
    assert [(c["from"], c["to"]) for c in recorded["changes"] if c["what"] == "world_size"] == [(2, 1)]
    assert "processes 2 -> 1)" in summarize(run_dir).training()  # what exp status shows
    warned = [message for message in resumed["warnings"] if "elastic run" in message]
    assert len(warned) == 1 and "saved by 2 process(es) and resumes on 1" in warned[0], warned
