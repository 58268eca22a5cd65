"""Training under torchrun with 2 ranks: one launch of scenarios.py runs every scenario in-process
(interrupt by an exception on every rank, resume, compare with an uninterrupted run; then test,
evaluate and predict with one of them); each test here asserts on one kind of check, for each
scenario, from the result file rank 0 wrote.

The launch takes about 25 s on a 2-core machine (4 s of it is torchrun starting); the scenarios and
their stops are described in scenarios.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from experiment.errors import StateMismatchError
from tests.distributed.scenarios import SCENARIOS
from tests.distributed.workload import make_data_as, train
from tests.support.scenario_launch import ScenarioLaunch, assert_no_problems, launch_scenarios
from tests.support.state_checks import snapshot_files

SCRIPT = Path(__file__).with_name("scenarios.py")
WORLD_SIZE = 2
NAMES = sorted(SCENARIOS)
LOCK_FILES = (".lock", ".lock.holder")  # taken (and the holder rewritten) before anything is checked


@dataclass
class Launched(ScenarioLaunch):
    """The scenarios launch, and the single-process run's files before the launch tried to resume it."""

    single_process_files: dict[str, tuple[bytes, int]]


def single_process_run(run_dir: Path) -> None:
    """One epoch of the "tuple" scenario's network and data, trained by this (single) process."""
    data = make_data_as("tuple", samples=96, valid_samples=40, batch_size=8)
    outcome = train(run_dir, data, epochs=1, batch_size=8, checkpoint_every=2)
    assert outcome.error is None and outcome.history is not None


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Launched:
    workdir = tmp_path_factory.mktemp("torchrun")
    single_process_run(workdir / "single-process")
    files = snapshot_files(workdir / "single-process", ignore=LOCK_FILES)
    single = str(workdir / "single-process")
    launched = launch_scenarios(
        SCRIPT, workdir, "--single-process-run", single, nproc=WORLD_SIZE, timeout=180
    )
    return Launched(**vars(launched), single_process_files=files)


def test_torchrun_scenarios_launch_completes_on_every_rank(launched):
    assert launched.launch.returncode == 0, launched.describe()
    assert launched.errors == {}, launched.describe()
    assert launched.result.get("complete"), launched.describe()


def test_torchrun_experiment_starts_the_process_group(launched):
    assert launched.result.get("group_started_before") is False, launched.describe()
    assert launched.result.get("group_started_by_library") is True, launched.describe()


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_interrupt_raised_on_every_rank_propagates_out_of_train(launched, name):
    assert_no_problems(launched.checks(name, "interrupts"))


@pytest.mark.parametrize(
    ("name", "mid_group"),
    [("dataset-accumulate", [True, False, True]), ("tuple-fp16-accumulate", [True, True])],
)
def test_torchrun_stops_land_inside_accumulation_groups(launched, name, mid_group):
    """The scenarios do interrupt where they mean to: between the micro-batches of a group."""
    launched.checks(name, "interrupts")  # fails if the scenario did not complete
    stops = launched.result["scenarios"][name]["details"]["stops"]
    where = [stop["ranks"][0][2] for stop in stops]
    assert [not place["optimizer_stepped"] for place in where] == mid_group, where


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_resume_ends_bit_identical_to_uninterrupted(launched, name):
    assert_no_problems(launched.checks(name, "resume_state"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_every_rank_returns_the_logged_history(launched, name):
    assert_no_problems(launched.checks(name, "history"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_random_streams_per_rank_survive_resume(launched, name):
    assert_no_problems(launched.checks(name, "random_streams"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_each_rank_seeds_with_seed_plus_rank(launched, name):
    assert_no_problems(launched.checks(name, "seeding"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_checkpoint_holds_world_size_and_every_rank_state(launched, name):
    assert_no_problems(launched.checks(name, "checkpoint"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_rank_zero_alone_writes(launched, name):
    assert_no_problems(launched.checks(name, "writers"))


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_parameters_equal_on_every_rank(launched, name):
    """In "tuple", rank 1 builds other initial weights: DDP must start it from rank 0's."""
    assert_no_problems(launched.checks(name, "ddp"))


@pytest.mark.parametrize("name", ["dataset-accumulate", "loader-bf16-async", "loader-user-sampler"])
def test_torchrun_training_data_sharded_by_distributed_sampler(launched, name):
    """In "loader-user-sampler" the DataLoader has the user's DistributedSampler (another seed than
    the run's): the library keeps it and calls its set_epoch at each pass."""
    assert_no_problems(launched.checks(name, "sampler"))


def test_torchrun_validation_loss_counts_every_sample_once(launched):
    assert_no_problems(launched.checks("tuple", "validation"))


def test_torchrun_test_and_evaluate_give_every_rank_the_logs_of_one_process(launched):
    """test(checkpoint="last") and evaluate() (each rank its stride of 41 samples, summed) and
    evaluate(return_pred=True) (every rank all of them): the logs one process computes over the same
    batches with the same weights, bit for bit, on every rank."""
    assert_no_problems(launched.checks("tuple", "inference_logs"))


def test_torchrun_test_appends_one_row_to_test_log(launched):
    """Rank 0 alone writes it: "writers" of the same scenario sees no write by another rank."""
    assert_no_problems(launched.checks("tuple", "test_log"))
    assert_no_problems(launched.checks("tuple", "writers"))


def test_torchrun_predict_and_return_pred_give_every_rank_all_outputs(launched):
    assert_no_problems(launched.checks("tuple", "predictions"))


def test_torchrun_network_given_in_users_ddp_trains_through_it_and_saves_bare_module(launched):
    """Training runs through the user's wrapper (one forward per batch) and every checkpoint file
    holds the module's keys without 'module.'; resume identity is checked with every scenario."""
    assert_no_problems(launched.checks("tuple-user-ddp", "wrapped"))


def test_torchrun_resume_with_another_world_size_is_refused(launched):
    """A run made by one process, resumed by 2 ranks: StateMismatchError naming the world size."""
    refusal = launched.result.get("refusal")
    assert refusal is not None, launched.describe()
    for rank, (kind, message) in enumerate(refusal):
        assert kind == "StateMismatchError", f"rank {rank}: {kind}: {message}"
        assert re.search(r"(?i)world.size", message), f"rank {rank}: {message}"
    after = snapshot_files(launched.workdir / "single-process", ignore=LOCK_FILES)
    changed = sorted(
        name
        for name in {*after, *launched.single_process_files}
        if after.get(name) != launched.single_process_files.get(name)
    )
    assert changed == [], "the refused resume changed files of the run directory"


def test_single_process_resume_of_torchrun_run_is_refused(launched):
    """A run made by 2 ranks, resumed by one process: StateMismatchError naming the world size."""
    launched.checks("tuple", "resume_state")  # fails if the scenario did not complete
    run_dir = launched.workdir / "runs" / "tuple-uninterrupted"
    data = make_data_as("tuple", samples=96, valid_samples=41, batch_size=8)
    before = snapshot_files(run_dir, ignore=LOCK_FILES)
    with pytest.raises(StateMismatchError, match="(?i)world.size"):
        train(run_dir, data, epochs=4, batch_size=8, checkpoint_every=2)
    assert snapshot_files(run_dir, ignore=LOCK_FILES) == before, "the refused resume changed files"
