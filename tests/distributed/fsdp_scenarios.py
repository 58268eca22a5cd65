"""FSDP2 scenarios under torchrun, many in one launch; rank 0 writes what it found to a JSON file.

Run by tests/distributed/test_fsdp.py::

    torchrun --standalone --nproc-per-node=2 tests/distributed/fsdp_scenarios.py WORKDIR

For each scenario of :data:`SCENARIOS` it trains an uninterrupted run with ``strategy="fsdp"``, then
a second run directory interrupted by an exception that a callback raises on every rank after chosen
batches (mid-epoch, mid-accumulation group, at an epoch's last batch before its commit), each time
with a new network, optimizer and Experiment as a restarted script builds them, resumes it to the
end, and checks (into ``checks``):

- ``interrupts``: each stop came out of ``train`` on every rank;
- ``resume_state``: the full (gathered) model and optimizer state dicts of both runs, bit for bit,
  on every rank; the same history; the run directories equal (every commit's tree file but for its
  times and ``.metadata`` digest, its shards read whole, best weights, log.tsv, TensorBoard, status);
- ``layout``: a temporary folder that a kill inside a commit left (planted before the last resume)
  is removed; every commit is a folder ``state-NNNNNN/`` holding ``.metadata``, one shard file per
  rank and ``tree.pt`` (read with ``weights_only=True``; the sharded nodes hold the digest of
  ``.metadata``, the per-rank nodes every rank's state); the best
  weights are a plain full state dict that loads into the unsharded network;
- ``validation``: val_loss and evaluate() count every validation sample once, ranks with unequal
  numbers of batches included;
- ``inference`` (when asked): test() of the best and of the last weights on every rank;
- ``sharded``: the network trained is sharded, its children too (``fully_shard`` on each child
  holding parameters).

With ``compile`` it also records (``details``) how many graphs torch.compile's backend was given
on each rank.

Then: a network the user sharded (root only) is kept as it is (``user_sharded``); "16-mixed"
and the callbacks that save or load weights themselves are refused, nothing written
(``refusals``); an optimizer whose step is a collective resumes (``collective_optimizer``); after
the "fsdp" scenario, a commit whose ``.metadata`` was replaced by a pickle that would create a
file is skipped with a warning naming it, the file is not created, and the run resumed from the
commit before ends as the uninterrupted one (``planted_metadata``); a NaN in one rank's shards is
refused on every rank (``non_finite``), and what a callback changes while the writer thread waits
is not in the commit (``live_state``; both in tests/distributed/fsdp_writers.py). Rank 0 writes
WORKDIR/result.json; a rank that meets an unexpected error writes WORKDIR/errors/rank-N.txt and
exits at once.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import math
import os
import pickle
import shutil
import signal
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.utils.data import TensorDataset

from tests.distributed import checks
from tests.distributed.fsdp_writers import live_state, non_finite
from tests.distributed.scenarios import gather, write_json
from tests.distributed.workload import (
    FEATURES,
    Data,
    StopAtBatch,
    make_data_as,
    make_experiment,
    make_network,
    train,
)
from tests.support.run_comparison import run_differences, tree_differences
from tests.support.training import make_data

FULL = StateDictOptions(full_state_dict=True)


@dataclass(frozen=True)
class FsdpScenario:
    """One uninterrupted FSDP2 run and one interrupted after ``stops`` (batches counted from 1)."""

    stops: tuple[int, ...]
    data: str = "tuple"
    samples: int = 96
    valid_samples: int = 40  # 20 per rank, 3 batches each
    batch_size: int = 8
    epochs: int = 3
    precision: str = "32-true"
    accumulate: int = 1
    checkpoint_every: int = 2
    async_checkpoint: bool = False
    #: After the final resume, test() the best and last weights (see :func:`inference_problems`).
    check_inference: bool = False
    #: Train with :func:`weighted_step` (``train_step``; no loss function) on "weighted" data.
    custom_step: bool = False
    #: ``Experiment(compile=...)``: torch.compile options (None: not compiled).
    compile: dict[str, Any] | None = None
    #: The network given to the Experiment compiled already by the user (with ``compile``'s options).
    compiled_by_user: bool = False

    def options(self, world_size: int) -> dict[str, Any]:
        per_rank = -(-self.samples // world_size)
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "async_checkpoint": self.async_checkpoint,
            "batches_per_epoch": -(-per_rank // self.batch_size),
            "experiment_options": {
                "strategy": "fsdp",
                "precision": self.precision,
                "accumulate_grad_batches": self.accumulate,
                **({"loss_function": None, "train_step": weighted_step} if self.custom_step else {}),
                **(
                    {"compile": self.compiled()}
                    if self.compile is not None and not self.compiled_by_user
                    else {}
                ),
            },
            **({"compile_given": self.compiled()} if self.compiled_by_user else {}),
        }

    def compiled(self) -> dict[str, Any]:
        """The compile options, backend "counting" given as :func:`counting_backend`."""
        options = dict(self.compile or {})
        if options.get("backend") == "counting":
            options["backend"] = counting_backend
        return options

    def make_data(self) -> Any:
        if self.data == "weighted":
            return Data(weighted(self.samples, seed=1), weighted(self.valid_samples, seed=2))
        return make_data_as(
            self.data, samples=self.samples, valid_samples=self.valid_samples, batch_size=self.batch_size
        )


#: With 2 ranks, 6 batches per epoch. "fsdp": stops mid-epoch after a step commit (3), at an epoch's
#: last batch before its commit (6), mid-epoch again (11); its ranks have 17 and 16 validation
#: samples (3 and 2 batches: evaluation pads). "fsdp-bf16-accumulate" (groups of 2
#: batches, a commit at every optimizer step): stops in the middle of a group (3, 9). "fsdp-async"
#: (asynchronous commits every 3 steps): stops mid-epoch (4, 8). "fsdp-custom-step": the user's
#: step(trainer, batch) on (x, y, weight) batches, in groups of 2 batches: stops mid-group (5) and
#: mid-epoch (8). "fsdp-compile": the network compiled by the library (a backend that runs the
#: graphs as "eager" does, and counts them): stops mid-epoch (4, 9). "fsdp-user-compiled": the
#: network given compiled by the user (same backend): stops mid-epoch (5).
SCENARIOS = {
    "fsdp": FsdpScenario(
        stops=(3, 6, 11), valid_samples=33, check_inference=True
    ),  # 3 validation batches on rank 0, 2 on rank 1
    "fsdp-async": FsdpScenario(stops=(4, 8), data="loader", checkpoint_every=3, async_checkpoint=True),
    "fsdp-bf16-accumulate": FsdpScenario(
        stops=(3, 9), data="dataset", precision="bf16-mixed", accumulate=2, checkpoint_every=1
    ),
    "fsdp-custom-step": FsdpScenario(stops=(5, 8), data="weighted", custom_step=True, accumulate=2),
    "fsdp-compile": FsdpScenario(stops=(4, 9), compile={"backend": "counting"}),
    "fsdp-user-compiled": FsdpScenario(stops=(5,), compile={"backend": "counting"}, compiled_by_user=True),
}


#: The graphs that the "counting" backend of torch.compile was given, in this process.
COMPILED_GRAPHS: list[Any] = []


def counting_backend(graph: Any, example_inputs: Any) -> Any:
    """A torch.compile backend that runs each graph as it is (as backend "eager" does), counted."""
    COMPILED_GRAPHS.append(graph)
    return graph.forward


def weighted(samples: int, seed: int) -> TensorDataset:
    """(x, y, weight) samples: the batches of a custom step."""
    x, y = make_data(samples, FEATURES, seed=seed)
    return TensorDataset(x, y, torch.linspace(0.5, 1.5, samples))


def weighted_step(trainer: Any, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The user's step: a weighted cross-entropy through the (sharded) network."""
    x, y, weight = batch
    y_pred = trainer.network(x)
    losses = torch.nn.functional.cross_entropy(y_pred, y, reduction="none")
    return {"loss": (weight * losses).mean(), "y_pred": y_pred, "y_true": y}


def full_states(experiment: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole model and optimizer state dicts, gathered from the shards (a collective)."""
    network = experiment.network
    model = get_model_state_dict(network, options=FULL)
    optimizer = get_optimizer_state_dict(network, experiment.optimizer, options=FULL)
    return _cloned(model), _cloned(optimizer)


def _cloned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _cloned(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(item) for item in value)
    return value


def run_scenario(scenario: FsdpScenario, runs_dir: Path, name: str) -> dict[str, Any]:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    reference_dir, resumed_dir = runs_dir / f"{name}-uninterrupted", runs_dir / f"{name}-resumed"
    found: dict[str, list[str]] = defaultdict(list)
    options = scenario.options(world_size)
    reference = train(reference_dir, scenario.make_data(), **options)
    found["sharded"] += sharding_problems(reference.experiment.network)
    details = {"compiled_graphs": gather(len(COMPILED_GRAPHS))} if scenario.compile is not None else {}
    valid = scenario.make_data().valid
    if isinstance(valid, tuple):  # (x, y) tensors, which the check evaluates in one forward
        found["validation"] += validation_problems(reference, valid)
    reference_model, reference_optimizer = full_states(reference.experiment)
    if scenario.check_inference and rank == 0:  # for optimizer_loading and a one-process test
        torch.save(reference_optimizer, runs_dir / f"{name}-optimizer.pt")
        torch.save(reference_model, runs_dir / f"{name}-model.pt")
    for stop in scenario.stops:
        interrupted = train(resumed_dir, scenario.make_data(), stop_at=stop, **options)
        kind = type(interrupted.error).__name__ if interrupted.error else None
        if kind != "Interrupt":
            found["interrupts"].append(f"stop at batch {stop}: rank {rank} ended with {kind}")
    if rank == 0:
        plant_cut_commit(resumed_dir)
    gather(None)  # the others resume once it is there
    resumed = train(resumed_dir, scenario.make_data(), **options)
    resumed_model, resumed_optimizer = full_states(resumed.experiment)
    local = [f"rank {rank}: network{d}" for d in tree_differences(reference_model, resumed_model)]
    local += [f"rank {rank}: optimizer{d}" for d in tree_differences(reference_optimizer, resumed_optimizer)]
    found["resume_state"] += [p for problems in gather(local) for p in problems]
    found["resume_state"] += checks.history_problems(gather(reference.history), gather(resumed.history))
    found["interrupts"] = [p for problems in gather(found["interrupts"]) for p in problems]
    if scenario.check_inference:
        found["inference"] += inference_problems(resumed, scenario.make_data().valid)
    if rank == 0:
        found["resume_state"] += run_differences(reference_dir, resumed_dir, scenario.epochs)
        for run_dir in (reference_dir, resumed_dir):
            found["layout"] += [f"{run_dir.name}: {p}" for p in layout_problems(run_dir, world_size)]
    return {"checks": dict(found), "details": details}


def validation_problems(reference: Any, valid: Any) -> list[str]:
    """val_loss of the last epoch, and evaluate() after training, against the mean loss over every
    validation sample counted once (each rank one forward over its stride, summed over the ranks)."""
    share = checks.validation_share(
        reference.experiment.network, valid, dist.get_rank(), dist.get_world_size()
    )
    shares = gather(share)
    expected = sum(total for total, _ in shares) / sum(count for _, count in shares)
    logged = {
        "val_loss of the last epoch": reference.history[-1]["val_loss"],
        "evaluate()['test_loss']": reference.experiment.evaluate(valid, batch_size=8)["test_loss"],
    }
    return [
        f"{what} is {value!r}; the mean over the {len(valid[1])} samples is {expected!r}"
        for what, value in logged.items()
        if not math.isclose(value, expected, rel_tol=1e-5)
    ]


def inference_problems(outcome: Any, valid: Any) -> list[str]:
    """test(checkpoint="best") (the best-weights file, a full state dict scattered to the shards)
    and test(checkpoint="last") (the newest commit's shards): the validation loss of that epoch."""
    history, experiment = outcome.history, outcome.experiment
    best = min(history, key=lambda row: row["val_loss"])
    expected = {"best": best["val_loss"], "last": history[-1]["val_loss"]}
    problems = []
    for checkpoint, value in expected.items():
        tested = experiment.test(valid, checkpoint=checkpoint, batch_size=8, progress=False)["test_loss"]
        if not math.isclose(tested, value, rel_tol=1e-5):
            problems.append(
                f"rank {dist.get_rank()}: test(checkpoint={checkpoint!r}) gave {tested!r}, expected {value!r}"
            )
    return [p for rank_problems in gather(problems) for p in rank_problems]


def plant_cut_commit(run_dir: Path) -> None:
    """What a kill of a rank inside a commit leaves, after DCP wrote ``.metadata`` and before the
    rename: a temporary folder complete by DCP's own rule, which the next start must remove (and
    never take for a commit)."""
    checkpoints = run_dir / "checkpoints"
    newest = sorted(checkpoints.glob("state-*"))[-1]
    cut = checkpoints / f".state-{int(newest.name.split('-')[1]) + 50:06d}.tmp"
    shutil.copytree(newest, cut)
    (cut / "tree.pt").unlink()


def sharding_problems(network: torch.nn.Module) -> list[str]:
    """The network (the module inside, when it is compiled) and each child holding parameters are
    sharded."""
    network = getattr(network, "_orig_mod", network)
    problems = []
    if not isinstance(network, FSDPModule):
        problems.append(f"the network trained is a {type(network).__name__}, not sharded by fully_shard")
    for child_name, child in network.named_children():
        holds = next(child.parameters(), None) is not None
        if holds != isinstance(child, FSDPModule):
            problems.append(
                f"child {child_name!r} ({type(child).__name__}): sharded {not holds}, expected {holds}"
            )
    return problems


def tree_of(commit: Path) -> dict[str, Any]:
    return torch.load(commit / "tree.pt", map_location="cpu", weights_only=True)


def layout_problems(run_dir: Path, world_size: int) -> list[str]:
    checkpoints = run_dir / "checkpoints"
    problems = []
    leftovers = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("."))
    if leftovers:
        problems.append(f"temporary entries left: {leftovers}")
    commits = sorted(p for p in checkpoints.iterdir() if p.name.startswith("state-"))
    if not commits or not all(p.is_dir() for p in commits):
        problems.append(f"commits should be folders: {[p.name for p in commits]}")
        return problems
    shard_files = {f"__{rank}_0.distcp" for rank in range(world_size)}
    for commit in commits:
        names = {p.name for p in commit.iterdir()}
        if names != {".metadata", "tree.pt", *shard_files}:
            problems.append(f"{commit.name} holds {sorted(names)}")
            continue
        tree = tree_of(commit)
        digest = hashlib.sha256((commit / ".metadata").read_bytes()).hexdigest()
        for node in ("model", "optimizer"):
            recorded = tree["nodes"][node].get("sharded", {}).get("metadata_sha256")
            if recorded != digest:
                problems.append(
                    f"{commit.name}: nodes[{node!r}] records digest {recorded}, .metadata has {digest}"
                )
        ranks = tree["nodes"]["rng"].get("ranks")
        if tree.get("world_size") != world_size or len(ranks or []) != world_size:
            problems.append(
                f"{commit.name}: world_size {tree.get('world_size')}, {len(ranks or [])} rng entries"
            )
    bests = sorted(checkpoints.glob("best-epoch*.pt"))
    if not bests:
        problems.append("no best-weights file")
    for best in bests:
        weights = torch.load(best, map_location="cpu", weights_only=True)
        try:
            make_network().load_state_dict(weights)  # strict: the unsharded network's keys and shapes
        except RuntimeError as error:
            problems.append(f"{best.name} does not load into the unsharded network: {error}")
    return problems


class CreatesAFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``, which creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def committed_steps(run_dir: Path) -> list[tuple[str, int]]:
    """Each commit folder's name and global step, newest first."""
    commits = sorted((run_dir / "checkpoints").glob("state-*"), reverse=True)
    return [(c.name, int(tree_of(c)["nodes"]["progress"]["global_step"])) for c in commits]


def planted_metadata(runs_dir: Path) -> list[str]:
    """The "fsdp" scenario's run interrupted after batch 11 (commits of steps 10 and 8 kept), the
    newest commit's ``.metadata`` replaced by a pickle whose unpickling creates a file, then resumed
    with every rank: the file must not be created; rank 0 warns, naming the planted file, that it
    resumes from the previous commit; the run ends as the uninterrupted "fsdp" run (its directory,
    and its whole model and optimizer state, bit for bit)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    scenario, run_dir = SCENARIOS["fsdp"], runs_dir / "planted-metadata"
    marker, probe = runs_dir / "planted-payload-ran", runs_dir / "planted-payload-probe"
    options = scenario.options(world_size)
    problems = []
    train(run_dir, scenario.make_data(), stop_at=11, **options)
    (newest, newest_step), (previous, previous_step) = committed_steps(run_dir)[:2]
    planted = run_dir / "checkpoints" / newest / ".metadata"
    if rank == 0:
        pickle.loads(pickle.dumps(CreatesAFile(probe)))  # noqa: S301 - the payload does create a file
        if not probe.exists():
            problems.append("the payload created no file when unpickled: the test proves nothing")
        planted.write_bytes(pickle.dumps(CreatesAFile(marker)))
    gather(None)  # every rank resumes once it is planted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(run_dir, scenario.make_data(), **options)
    if marker.exists():
        problems.append(f"rank {rank}: resuming unpickled the planted {planted}: {marker} was created")
    if resumed.error is not None:
        problems.append(f"rank {rank}: the resume raised {resumed.error!r}")
    model, optimizer = full_states(resumed.experiment)
    messages = [str(w.message) for w in caught if "Skipped unreadable checkpoint" in str(w.message)]
    if rank == 0:
        expected = f"{planted} is not the file that was committed"
        if not any(expected in m and f"resuming from {previous}" in m for m in messages):
            problems.append(
                f"rank 0 did not warn that it skipped {planted} (step {newest_step}) and resumed from "
                f"{previous} (step {previous_step}); warnings: {[str(w.message) for w in caught]}"
            )
        expected_model = torch.load(runs_dir / "fsdp-model.pt", weights_only=True)
        expected_optimizer = torch.load(runs_dir / "fsdp-optimizer.pt", weights_only=True)
        problems += [f"network{d}" for d in tree_differences(expected_model, model)]
        problems += [f"optimizer{d}" for d in tree_differences(expected_optimizer, optimizer)]
        if not marker.exists():  # the comparison reads every commit's .metadata with pickle itself
            problems += run_differences(runs_dir / "fsdp-uninterrupted", run_dir, scenario.epochs)
    return [p for rank_problems in gather(problems) for p in rank_problems]


def user_sharded(runs_dir: Path) -> list[str]:
    """A network the user sharded (the root only) is trained as it is: its children stay unsharded."""
    network = make_network()
    fully_shard(network)
    data = FsdpScenario(stops=()).make_data()
    experiment = make_experiment(runs_dir / "user-sharded", network=network, strategy="fsdp")
    problems = []
    try:
        experiment.train(data.train, data.valid, epochs=1, batch_size=8, progress=False)
    except Exception as error:  # noqa: BLE001 - the error is the result
        problems.append(f"train raised {error!r}")
    if experiment.network is not network:
        problems.append("the Experiment trains another module than the one the user sharded")
    sharded_children = [n for n, c in network.named_children() if isinstance(c, FSDPModule)]
    if sharded_children:
        problems.append(f"the library sharded the user's children {sharded_children}")
    return problems


class AgreeingAdamW(torch.optim.AdamW):
    """AdamW whose step is a collective (as an optimizer that reduces a norm over the shards is):
    every rank must step together, the step that DCP runs to initialise an optimizer's state too."""

    def step(self, closure: Any = None) -> Any:
        dist.barrier()
        return super().step(closure)


def collective_optimizer(runs_dir: Path) -> list[str]:
    """A run with :class:`AgreeingAdamW`, interrupted after its first commit and resumed: checking
    the checkpoint on rank 0 alone must not step the optimizer there (the ranks would hang)."""
    from experiment import Experiment
    from tests.support.training import Interrupt

    problems = []
    data = FsdpScenario(stops=()).make_data()
    for stop in (3, None):
        experiment = Experiment(
            runs_dir / "collective-optimizer",
            make_network(),
            optimizer=lambda parameters: AgreeingAdamW(parameters, lr=0.01),
            loss_function="cross_entropy",
            strategy="fsdp",
        )
        callbacks = [] if stop is None else [StopAtBatch(stop, 6)]
        try:
            experiment.train(
                data.train,
                data.valid,
                epochs=1,
                batch_size=8,
                checkpoint_every=2,
                callbacks=callbacks,
                progress=False,
            )
        except Interrupt:
            pass
        except Exception as error:  # noqa: BLE001 - the error is the result
            problems.append(
                f"rank {dist.get_rank()}: {'the resume' if stop is None else 'the first run'} raised {error!r}"
            )
    return [p for rank_problems in gather(problems) for p in rank_problems]


def weight_callbacks(runs_dir: Path) -> dict[str, Any]:
    """The callbacks that save or load weights themselves, by case (each refused with FSDP2)."""
    from experiment import (
        BestModelRestore,
        DelayCallback,
        ModelCheckpoint,
        OptimizerCheckpoint,
        PeriodicSaveLambda,
    )

    saved = str(runs_dir / "saved-{epoch}.pt")
    return {
        "ModelCheckpoint": ModelCheckpoint(saved),
        "OptimizerCheckpoint": OptimizerCheckpoint(saved),
        "BestModelRestore": BestModelRestore(),
        "PeriodicSaveLambda": PeriodicSaveLambda(lambda fd, epoch, logs: None, saved),
        "DelayCallback": DelayCallback([ModelCheckpoint(saved)], epoch_delay=1),
    }


def optimizer_loading(runs_dir: Path) -> list[str]:
    """load_optimizer_state under FSDP2 into a fresh sharded optimizer, of the "fsdp" run's last
    commit (its shards) and of a file of ``optimizer.state_dict()`` (full, keyed by index, as
    OptimizerCheckpoint writes it in one process): the whole state afterwards is the run's, bit for
    bit; a file that is no optimizer state is refused on every rank."""
    from experiment import StateMismatchError

    rank = dist.get_rank()
    expected = torch.load(runs_dir / "fsdp-optimizer.pt", weights_only=True)
    names = [name for name, _ in make_network().named_parameters()]
    index = {name: position for position, name in enumerate(names)}
    by_index = {
        "state": {index[name]: value for name, value in expected["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in expected["param_groups"]],
    }
    file_path, wrong_path = runs_dir / "optimizer-by-index.pt", runs_dir / "not-an-optimizer.pt"
    if rank == 0:
        torch.save(by_index, file_path)
        torch.save({"last_epoch": 3}, wrong_path)
    gather(None)
    newest = sorted((runs_dir / "fsdp-uninterrupted" / "checkpoints").glob("state-*"))[-1]
    problems = []
    for source in (newest, file_path):
        experiment = make_experiment(runs_dir / "loads-optimizer", network=make_network(7), strategy="fsdp")
        experiment.load_optimizer_state(source)
        _, loaded = full_states(experiment)
        problems += [f"rank {rank}: {source.name}: optimizer{d}" for d in tree_differences(expected, loaded)]
    try:
        experiment.load_optimizer_state(wrong_path)
        problems.append(f"rank {rank}: {wrong_path.name} was loaded")
    except StateMismatchError as error:
        if "not-an-optimizer.pt holds a dict with the keys ['last_epoch']" not in str(error):
            problems.append(f"rank {rank}: {wrong_path.name}: {error}")
    return [p for rank_problems in gather(problems) for p in rank_problems]


def refusals(runs_dir: Path) -> dict[str, str]:
    """The errors "16-mixed" and the callbacks that handle weights get with FSDP2, by case:
    'Class: message', and what train() left in the run directory when it is not empty."""
    from experiment import Experiment

    found = {}
    try:
        Experiment(runs_dir / "fp16", make_network(), strategy="fsdp", precision="16-mixed")
    except Exception as error:  # noqa: BLE001 - the error is the result
        found["16-mixed"] = f"{type(error).__name__}: {error}"
    data = FsdpScenario(stops=()).make_data()
    for case, callback in weight_callbacks(runs_dir).items():
        run_dir = runs_dir / f"refused-{case}"
        experiment = make_experiment(run_dir, network=make_network(), strategy="fsdp")
        try:
            experiment.train(data.train, epochs=1, batch_size=8, callbacks=[callback], progress=False)
        except Exception as error:  # noqa: BLE001 - the error is the result
            found[case] = f"{type(error).__name__}: {error}"
        written = sorted(p.name for p in run_dir.rglob("*")) if run_dir.exists() else []
        if written:
            found[case] = found.get(case, "") + f" (the run directory holds {written})"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    rank = int(os.environ["RANK"])
    errors_dir = args.workdir / "errors"
    errors_dir.mkdir(parents=True, exist_ok=True)
    stacks = open(errors_dir / f"stacks-rank-{rank}.txt", "w")  # noqa: SIM115 - open until exit
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    torch.set_num_threads(1)
    runs_dir = args.workdir / "runs"
    result: dict[str, Any] = {"scenarios": {}, "seconds": {}}
    try:
        for name in list(SCENARIOS) if args.only is None else args.only:
            started = time.perf_counter()
            result["scenarios"][name] = run_scenario(SCENARIOS[name], runs_dir, name)
            result["seconds"][name] = round(time.perf_counter() - started, 2)
            if rank == 0:
                write_json(args.workdir / "result.json", result)
        result["user_sharded"] = [p for problems in gather(user_sharded(runs_dir)) for p in problems]
        result["refusals"] = gather(refusals(runs_dir))
        result["collective_optimizer"] = collective_optimizer(runs_dir)
        result["non_finite"] = non_finite(runs_dir)
        result["live_state"] = live_state(runs_dir)
        if args.only is None or "fsdp" in args.only:
            result["optimizer_loading"] = optimizer_loading(runs_dir)
            started = time.perf_counter()
            result["planted_metadata"] = planted_metadata(runs_dir)
            result["seconds"]["planted_metadata"] = round(time.perf_counter() - started, 2)
    except BaseException:
        (errors_dir / f"rank-{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)
    if rank == 0:
        result["complete"] = True
        write_json(args.workdir / "result.json", result)


if __name__ == "__main__":
    main()
