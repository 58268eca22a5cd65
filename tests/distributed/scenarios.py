"""Training scenarios under torchrun, many in one launch; rank 0 writes what it found to a JSON file.

Run by tests/distributed/test_torchrun.py (any number of ranks, 2 there)::

    torchrun --standalone --nproc-per-node=2 tests/distributed/scenarios.py WORKDIR \
        [--single-process-run DIR] [--only NAME ...]

For each scenario of :data:`SCENARIOS` (data given as a tuple, a Dataset, a DataLoader or one with the
user's DistributedSampler; fp32, bf16 or fp16 autocast; with or without gradient accumulation;
synchronous or asynchronous commits; a network given bare or wrapped in DistributedDataParallel) it
trains an uninterrupted run, then a second run directory interrupted by an exception that a callback
raises on every rank at chosen batches (mid-epoch, at an epoch's last batch, in the middle of an
accumulation group), building a new network, optimizer and Experiment in this same process each time
as a restarted script would, and finally resumes it to the end, then (when the scenario asks) tests,
evaluates and predicts with it. What it checks is listed in :func:`run_scenario`. With
``--single-process-run DIR`` (a run made by one process) it also resumes DIR with every rank and
records the error each one gets: a different world size must be refused.

Rank 0 writes WORKDIR/result.json after each scenario, so that a launch that dies midway still tells
what it found so far. A rank that meets an unexpected error writes WORKDIR/errors/rank-N.txt and
exits at once (torchrun then ends the others).
"""

from __future__ import annotations

import argparse
import copy
import faulthandler
import gc
import json
import math
import os
import random
import signal
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tests.distributed import checks, inference
from tests.distributed.workload import (
    SEED,
    USER_SAMPLER_SEED,
    Data,
    Outcome,
    make_data_as,
    train,
)
from tests.support.run_comparison import run_differences


@dataclass(frozen=True)
class Scenario:
    """One uninterrupted run and one interrupted at ``stops`` (batches of the run, counted from 1)."""

    data: str
    samples: int
    stops: tuple[int, ...]
    valid_samples: int = 40
    batch_size: int = 8
    epochs: int = 3
    precision: str = "32-true"
    accumulate: int = 1
    checkpoint_every: int = 2
    async_checkpoint: bool = False
    #: Not 0: rank 1 draws other initial weights in the uninterrupted run; DDP must start every rank
    #: from rank 0's, or that run will not match the resumed one (whose ranks all draw seed 0's).
    rank1_network_seed: int = 0
    #: Check that val_loss is the mean over every validation sample, each counted once.
    check_validation: bool = False
    #: After the final resume, check test(), evaluate() and predict() against one process.
    check_inference: bool = False
    #: Give the Experiment the network wrapped in DistributedDataParallel by the user.
    wrap_ddp: bool = False

    @property
    def sampler_seed(self) -> int:
        """The seed of the DistributedSampler that must order the training data."""
        return USER_SAMPLER_SEED if self.data == "user-sampler" else SEED

    def batches_per_epoch(self, world_size: int) -> int:
        return math.ceil(math.ceil(self.samples / world_size) / self.batch_size)

    def make_data(self) -> Data:
        return make_data_as(
            self.data, samples=self.samples, valid_samples=self.valid_samples, batch_size=self.batch_size
        )

    def experiment_options(self) -> dict[str, Any]:
        return {"precision": self.precision, "accumulate_grad_batches": self.accumulate}

    def train_options(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "async_checkpoint": self.async_checkpoint,
        }


#: With 2 ranks: "tuple", "loader", "user-sampler" have 6 batches per epoch, "dataset-accumulate" 5
#: (3 optimizer steps: 2 + 2 + 1), "tuple-fp16-accumulate" 6 (3 steps). Stops: mid-epoch after a step
#: commit (3; 4), an epoch's last batch before its commit (6; 5; 12), mid-epoch again (11; 8; 9), in
#: the middle of an accumulation group (3, 8; 5, 9).
SCENARIOS = {
    "tuple": Scenario(
        "tuple",
        samples=96,
        valid_samples=41,
        stops=(3, 6, 11),
        rank1_network_seed=99,
        check_validation=True,
        check_inference=True,
    ),
    "dataset-accumulate": Scenario("dataset", samples=80, stops=(3, 5, 8), accumulate=2, checkpoint_every=1),
    "loader-bf16-async": Scenario(
        "loader", samples=96, stops=(4, 8), precision="bf16-mixed", checkpoint_every=3, async_checkpoint=True
    ),
    "tuple-fp16-accumulate": Scenario(
        "tuple", samples=96, stops=(5, 9), precision="16-mixed", accumulate=2, checkpoint_every=2
    ),
    "loader-user-sampler": Scenario("user-sampler", samples=96, stops=(4, 9), checkpoint_every=3),
    "tuple-user-ddp": Scenario("tuple", samples=96, stops=(5, 12), rank1_network_seed=99, wrap_ddp=True),
}


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def draws() -> list[float]:
    """A fingerprint of this rank's random streams (torch, Python, NumPy) as training left them."""
    return [*torch.rand(2).tolist(), random.random(), float(np.random.random())]


def optimizer_state(outcome: Outcome) -> dict[str, Any]:
    return copy.deepcopy(outcome.experiment.optimizer.state_dict())


def run_scenario(scenario: Scenario, runs_dir: Path, name: str, audit: checks.WriteAudit) -> dict[str, Any]:
    """Train the scenario's two runs and check, into ``checks`` (name -> problems):

    - ``interrupts``: the exception raised at each stop came out of ``train`` on every rank;
    - ``resume_state``: each rank's network and optimizer end bit-identical to the uninterrupted
      run's, and the run directories match (every checkpoint file, log.tsv, TensorBoard, status);
    - ``history``: every rank returns the same history, the resumed run the uninterrupted one's,
      and log.tsv holds its values;
    - ``random_streams``: each rank's draws after training differ between ranks and are the same in
      both runs; ``seeding``: rank r starts with seed SEED + r;
    - ``checkpoint``: the newest state file holds the world size and every rank's state;
    - ``writers``: rank 0 alone writes; ``ddp``: the parameters are the same on every rank;
    - ``sampler`` (Dataset and DataLoader data): each rank loads its DistributedSampler share (of
      the user's sampler, which the library keeps and moves to each epoch, for "user-sampler");
    - ``validation`` (when asked): val_loss is the mean over every validation sample, once each;
    - ``inference_logs``, ``test_log``, ``predictions`` (when asked): test(), evaluate() and
      predict() after the final resume (see :func:`inference.inference_problems`);
    - ``wrapped`` (a network given in the user's DistributedDataParallel): training went through
      it, and every checkpoint file holds the bare module's keys.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    reference_dir, resumed_dir = runs_dir / f"{name}-uninterrupted", runs_dir / f"{name}-resumed"
    found: dict[str, list[str]] = defaultdict(list)
    options = {
        **scenario.train_options(),
        "batches_per_epoch": scenario.batches_per_epoch(world_size),
        "experiment_options": scenario.experiment_options(),
        "wrap_ddp": scenario.wrap_ddp,
    }
    audit.take()
    reference_data = scenario.make_data()
    network_seed = scenario.rank1_network_seed if rank == 1 else 0
    reference = train(reference_dir, reference_data, network_seed=network_seed, **options)
    reference_draws = draws()
    reference_states = (copy.deepcopy(reference.experiment.network.state_dict()), optimizer_state(reference))
    _check_reference(scenario, reference, reference_data, found)
    stops = [_interrupt(scenario, resumed_dir, stop, options, found) for stop in scenario.stops]
    resumed = train(resumed_dir, scenario.make_data(), **options)
    resumed_draws = draws()
    local = checks.state_problems(
        rank, reference_states[0], resumed.experiment.network.state_dict(), "network "
    )
    local += checks.state_problems(rank, reference_states[1], optimizer_state(resumed), "optimizer ")
    found["resume_state"] += [problem for problems in gather(local) for problem in problems]
    found["random_streams"] += checks.stream_problems(gather(reference_draws), gather(resumed_draws))
    found["history"] += checks.history_problems(gather(reference.history), gather(resumed.history))
    for check, problems in _rank_problems(rank, {"uninterrupted": reference, "resumed": resumed}).items():
        found[check] += [problem for rank_problems in gather(problems) for problem in rank_problems]
    if scenario.check_inference:  # before the audit: rank 0 alone writes test_log.tsv
        _check_inference(resumed, reference_data, resumed_dir, scenario.epochs, found)
    pids, audits = gather(os.getpid()), gather(audit.take())
    if rank == 0:
        found["resume_state"] += run_differences(reference_dir, resumed_dir, scenario.epochs)
        for run_dir, outcome in ((reference_dir, reference), (resumed_dir, resumed)):
            found["history"] += checks.log_problems(run_dir, outcome.history)
            found["writers"] += checks.writer_problems(run_dir, pids, audits)
            model_keys = list(outcome.experiment.network.state_dict())
            found["checkpoint"] += [
                f"{run_dir.name}: {p}" for p in checks.checkpoint_problems(run_dir, world_size, model_keys)
            ]
            if scenario.wrap_ddp:
                found["wrapped"] += checks.saved_weights_problems(run_dir, model_keys)
    details = {"stops": stops, "history": reference.history}
    return {"checks": dict(found), "details": checks.to_plain(details)}


def _check_reference(scenario: Scenario, reference: Outcome, data: Data, found: dict[str, list[str]]) -> None:
    """The uninterrupted run: the same parameters on every rank, the seed of each rank, and (when the
    scenario asks) the validation loss and the samples each rank loaded."""
    world_size = dist.get_world_size()
    parameters = {
        key: value.detach().clone() for key, value in reference.experiment.network.named_parameters()
    }
    gathered = gather(parameters)
    for rank, rank_parameters in enumerate(gathered):
        found["ddp"] += [
            f"after training, rank {rank}'s parameters differ from rank 0's: {difference}"
            for difference in checks.tree_differences(gathered[0], rank_parameters)
        ]
    found["seeding"] += [
        f"rank {rank} began training with torch.initial_seed() {seed}, expected {SEED} + {rank}"
        for rank, seed in enumerate(gather(reference.initial_seed))
        if seed != SEED + rank
    ]
    if scenario.check_validation:
        found["validation"] += _validation(reference, data, world_size)
    if data.recorder is not None:
        loaded = gather(reference.epochs_loaded)
        found["sampler"] += checks.sampler_problems(
            loaded, scenario.samples, world_size, scenario.sampler_seed
        )
    if scenario.data == "user-sampler":
        found["sampler"] += [
            f"rank {rank}: the user's DistributedSampler was left at epoch {epoch}; expected "
            f"{scenario.epochs - 1}, set by the library at the last pass"
            for rank, epoch in enumerate(gather(data.train.sampler.epoch))
            if epoch != scenario.epochs - 1
        ]
    if scenario.wrap_ddp:
        expected = scenario.epochs * scenario.batches_per_epoch(world_size)
        found["wrapped"] += [
            f"rank {rank}: the user's DistributedDataParallel ran {calls} forward passes; expected one "
            f"per training batch ({expected})"
            for rank, calls in enumerate(gather(reference.wrapper_calls))
            if calls != expected
        ]


def _interrupt(
    scenario: Scenario, run_dir: Path, stop: int, options: dict[str, Any], found: dict[str, list[str]]
) -> dict[str, Any]:
    """Train ``run_dir`` (resuming it) until a callback raises Interrupt after batch ``stop`` on
    every rank; check that each rank's train() raised it. Returns what each rank saw."""
    interrupted = train(run_dir, scenario.make_data(), stop_at=stop, **options)
    error = interrupted.error
    outcomes = gather([type(error).__name__ if error else None, str(error or ""), interrupted.stopped_at])
    found["interrupts"] += [
        f"stop at batch {stop}: on rank {rank}, train() ended with {kind or 'no error'} ({message}); "
        "expected the Interrupt raised by the callback"
        for rank, (kind, message, _) in enumerate(outcomes)
        if kind != "Interrupt"
    ]
    return {"batch": stop, "ranks": outcomes}


def _rank_problems(rank: int, outcomes: dict[str, Outcome]) -> dict[str, list[str]]:
    """What this rank alone can see: ``exp.network`` is the user's module (``ddp``), and the logs
    the callbacks got at each epoch end are the history's (``history``)."""
    found: dict[str, list[str]] = {"ddp": [], "history": []}
    for label, outcome in outcomes.items():
        if outcome.experiment.network is not outcome.network:
            kind = type(outcome.experiment.network).__name__
            found["ddp"].append(f"rank {rank}, {label} run: exp.network is a {kind}, not the user's module")
        history = outcome.history or []
        trained = history[len(history) - len(outcome.epoch_logs) :]
        if checks.without_time(outcome.epoch_logs) != checks.without_time(trained):
            found["history"].append(
                f"rank {rank}, {label} run: the callbacks' epoch logs {checks.without_time(outcome.epoch_logs)} "
                f"are not the history's {checks.without_time(trained)}"
            )
    return found


def _validation(reference: Any, data: Data, world_size: int) -> list[str]:
    """val_loss of the last epoch against each rank's loss sum over its stride of the samples,
    summed over the ranks, with the network as training left it (as it was at the last validation)."""
    valid = data.valid
    share = checks.validation_share(reference.experiment.network, valid, dist.get_rank(), world_size)
    shares = gather(share)
    expected = sum(total for total, _ in shares) / sum(count for _, count in shares)
    counts = [count for _, count in shares]
    logged = reference.history[-1]["val_loss"] if reference.history else float("nan")
    if not math.isclose(logged, expected, rel_tol=1e-5):
        return [
            f"val_loss of the last epoch is {logged!r}; the mean loss over the {len(valid[1])} validation "
            f"samples, each rank evaluating its stride ({counts} samples), is {expected!r}"
        ]
    return []


def _check_inference(
    outcome: Outcome, data: Data, run_dir: Path, epochs: int, found: dict[str, list[str]]
) -> None:
    """test(), evaluate() and predict() with every rank; rank 0 compares what each got with one
    process (see :func:`inference.inference_problems`)."""
    gathered = gather(inference.run_inference(outcome.experiment, data.valid))
    if dist.get_rank() == 0:
        for check, problems in inference.inference_problems(gathered, data.valid, run_dir, epochs).items():
            found[check] += problems


def run_refusal(run_dir: Path) -> list[Any]:
    """Resume a run made by one process with every rank; each rank's (error class, message)."""
    scenario = SCENARIOS["tuple"]
    data = make_data_as("tuple", samples=scenario.samples, valid_samples=40, batch_size=scenario.batch_size)
    try:
        outcome = train(run_dir, data, epochs=2, batch_size=scenario.batch_size, checkpoint_every=2)
        result = [type(outcome.error).__name__, str(outcome.error)] if outcome.error else [None, "no error"]
    except Exception as error:  # noqa: BLE001 - what every rank got is the result
        result = [type(error).__name__, str(error)]
    return gather(result)


def write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--single-process-run", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    args = parser.parse_args()
    rank = int(os.environ["RANK"])
    errors_dir = args.workdir / "errors"
    errors_dir.mkdir(parents=True, exist_ok=True)
    # The stacks of every thread, when the test times out (tests/support/torchrun.py sends SIGUSR1).
    stacks = open(errors_dir / f"stacks-rank-{rank}.txt", "w")  # noqa: SIM115 - open until exit
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    torch.set_num_threads(1)
    runs_dir = args.workdir / "runs"
    audit = checks.WriteAudit(runs_dir)
    result: dict[str, Any] = {"world_size": int(os.environ["WORLD_SIZE"]), "scenarios": {}, "seconds": {}}
    names = args.only or list(SCENARIOS)
    try:
        # The user's DistributedDataParallel needs a group: the script starts it when no Experiment
        # of an earlier scenario will have (a launch of --only such scenarios), and destroys it.
        started_here = bool(names) and SCENARIOS[names[0]].wrap_ddp
        if started_here:
            dist.init_process_group("gloo")
        result["group_started_before"] = dist.is_initialized()
        for name in names:
            started = time.perf_counter()
            outcome = run_scenario(SCENARIOS[name], runs_dir, name, audit)
            result["scenarios"][name] = outcome
            result["seconds"][name] = round(time.perf_counter() - started, 2)
            if rank == 0:
                write_json(args.workdir / "result.json", result)
        if args.single_process_run is not None:
            result["refusal"] = run_refusal(args.single_process_run)
    except BaseException:
        (errors_dir / f"rank-{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)
    result["group_started_by_library"] = dist.is_initialized() and not result["group_started_before"]
    if rank == 0:
        result["complete"] = True
        write_json(args.workdir / "result.json", result)
    if started_here:
        gc.collect()  # no DDP wrapper may outlive the group
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
