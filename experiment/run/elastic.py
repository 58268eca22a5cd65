"""Elastic runs: resuming on another number of processes (``Experiment(elastic=True)``).

An elastic run records, when it is created, ``elastic`` and its global batch (``batch_size`` times
the number of processes then) in experiment.json's ``created_with``. Its training data is then
ordered and split independently of the world size (:mod:`experiment.training.elastic_data`), so a
resume on another number of processes goes on with the same global batches and the same optimizer
steps. What differs from one world size to another is handled here, before anything is loaded:

- :func:`elastic_layout` refuses ``elastic`` changed on an existing run and a world size that
  cannot serve the global batch;
- :func:`reshared` gives each rank its share of a checkpoint written by another number of
  processes: its random state derived from ``(seed, step, rank)`` (randomness is not continued
  across a change), and the epoch's running sums of every saved rank on rank 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from experiment.arguments import check_int, reject
from experiment.errors import ConfigurationError, DataError, StateMismatchError
from experiment.state.rng import derived_rng
from experiment.store.directory import RunDirectory
from experiment.training.distributed import World

#: What ``Experiment(elastic=...)`` accepts.
ELASTIC_MODES = (False, True, "exact")
#: Exact mode's default groups: one per this many samples of a process's batch at creation, at
#: least one and at most :data:`GROUPS_PER_PROCESS` per process. A group is one forward and backward:
#: smaller ones cost more than the 1.10 times a DDP step that the default is held to (measured by
#: scripts/bench_elastic.py; see the README).
SAMPLES_PER_GROUP = 256
#: The most groups per process at creation that exact mode chooses by default.
GROUPS_PER_PROCESS = 4


@dataclasses.dataclass(frozen=True)
class ElasticLayout:
    """How an elastic run cuts its training data, fixed when it is created.

    Attributes:
        mode: True, or "exact" (gradients summed in a fixed order).
        global_batch: samples per global batch.
        groups: groups per global batch in exact mode (None otherwise).
    """

    mode: bool | str
    global_batch: int
    groups: int | None = None


def check_elastic(
    value: Any, strategy: str, *, groups: Any = None, precision: str = "32-true", custom_step: bool = False
) -> bool | str:
    """``value`` if it is an elastic mode this run can train with.

    Raises:
        ConfigurationError: an unknown mode, exact mode with FSDP2, ``groups`` without exact mode or not
            a positive integer, exact mode with "16-mixed" or a custom training step.
    """
    if not any(value is mode or (isinstance(mode, str) and value == mode) for mode in ELASTIC_MODES):
        raise reject("elastic", value, "False, True or 'exact'")
    if value == "exact" and strategy == "fsdp":
        raise ConfigurationError(
            "elastic='exact': received strategy='fsdp', whose gradients FSDP2 reduce-scatters in an "
            "order of its own; expected strategy='auto' or 'ddp'. Pass elastic=True with FSDP2 (the "
            "same run up to summation order: DCP reshards the model and optimizer on load)."
        )
    if groups is not None:
        check_int("elastic_groups", groups, minimum=1, expected="a positive integer or None")
        if value != "exact":
            raise reject(
                "elastic_groups", groups, "None unless elastic='exact', which alone cuts batches in groups"
            )
    if value == "exact" and (precision == "16-mixed" or custom_step):
        what = "precision='16-mixed'" if precision == "16-mixed" else "a custom train_step"
        raise ConfigurationError(
            f"elastic='exact': received {what}; expected the built-in step in '32-true' or "
            "'bf16-mixed', which exact mode runs one group of samples at a time. Pass elastic=True "
            "(the same run up to summation order), or drop the option."
        )
    return value


def refuse_running_statistics(network: nn.Module) -> None:
    """Refuse, for ``elastic="exact"``, a network with running statistics (BatchNorm's): each
    process updates them with its own groups, so what is saved (rank 0's) depends on their number.

    Raises:
        ConfigurationError: a module tracks running statistics.
    """
    tracking = [
        name or type(module).__name__
        for name, module in network.named_modules()
        if getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None
    ]
    if tracking:
        raise ConfigurationError(
            f"elastic='exact': received a network whose modules {tracking} track running statistics, "
            "which each process updates with its own groups, so they would depend on the number of "
            "processes; expected none. Build them with track_running_stats=False (or use GroupNorm or "
            "LayerNorm), or pass elastic=True (the same run up to summation order)."
        )


def elastic_layout(
    directory: RunDirectory,
    elastic: bool | str,
    train_data: Any,
    batch_size: int,
    world: World,
    *,
    groups: int | None = None,
) -> ElasticLayout | None:
    """The layout of an elastic run: the recorded one, or, for a new run, a global batch of the
    per-process batch (``batch_size``, or a DataLoader's) times the number of processes, cut in
    exact mode into ``groups`` groups (by default one per :data:`SAMPLES_PER_GROUP` samples of the
    per-process batch, one to :data:`GROUPS_PER_PROCESS` per process); None
    when the run is not elastic.

    Raises:
        ConfigurationError: ``elastic`` differs from the one the run was created with, or the
            global batch has fewer samples (or groups) than there are processes.
        DataError: a new elastic run's DataLoader has no ``batch_size``.
    """
    recorded = directory.read_metadata().get("created_with") if directory.is_run() else None
    if recorded is not None:
        then = recorded.get("elastic", False)
        if then != elastic:
            raise ConfigurationError(
                f"elastic: received {elastic!r}, but the run in {directory.path} was created with "
                f"elastic={then!r}; expected elastic={then!r}. A run cannot change how it is elastic "
                "once created: pass the same value, or train in a new directory."
            )
        if not elastic:
            return None
        layout = ElasticLayout(elastic, int(recorded["global_batch"]), recorded.get("elastic_groups"))
    else:
        if not elastic:
            return None
        per_process = train_data.batch_size if isinstance(train_data, DataLoader) else batch_size
        if per_process is None:
            raise DataError(
                "train_data: received a DataLoader without batch_size (it has a batch_sampler); an "
                "elastic run needs a batch size to fix its global batch. Build the DataLoader with "
                "batch_size=, or pass the Dataset and batch_size= to train()."
            )
        size = int(per_process) * world.size
        if elastic == "exact":
            groups = default_groups(int(per_process), world.size) if groups is None else groups
        layout = ElasticLayout(elastic, size, groups if elastic == "exact" else None)
    units, what = (layout.global_batch, "sample(s)") if layout.groups is None else (layout.groups, "group(s)")
    if world.size > units:
        raise ConfigurationError(
            f"elastic: the run's global batch holds {units} {what} and this launch has {world.size} "
            f"processes; expected at most {units} processes, since each takes at least one of "
            "every global batch. Launch fewer processes."
        )
    return layout


def default_groups(per_process: int, processes: int) -> int:
    """Exact mode's groups when none are given: one per :data:`SAMPLES_PER_GROUP` samples of the
    per-process batch, at least one and at most :data:`GROUPS_PER_PROCESS` per process."""
    return processes * max(1, min(GROUPS_PER_PROCESS, per_process // SAMPLES_PER_GROUP))


def rank_seed(seed: int, step: int, rank: int) -> int:
    """The seed of ``rank``'s random state after a change of world size at optimizer ``step``."""
    digest = hashlib.sha256(f"experiment/elastic/{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def reshared(saved: dict[str, Any], rank: int, seed: int) -> dict[str, Any]:
    """A checkpoint ``saved`` by another number of processes, as ``rank`` resumes it: its random
    state derived from ``(seed, step, rank)``, and on rank 0 the running sums of every saved rank
    (zero on the others, so that their sum over the ranks is the saved one).

    Raises:
        StateMismatchError: the checkpoint stops in the middle of an epoch whose epoch metrics
            hold per-process state, which cannot be split anew.
    """
    nodes = dict(saved["nodes"])
    step = int(nodes["progress"]["global_step"])
    randoms = _ranks(nodes["rng"])
    first = randoms[0]
    generators = len(first["step"]["generators"])
    derived = derived_rng(rank_seed(seed, step, rank), generators)
    nodes["rng"] = {
        **first,
        "step": derived,
        "pass": None if first["pass"] is None else derived,
    }
    nodes["train_metrics"] = _metrics_share(_ranks(nodes["train_metrics"]), rank, nodes["progress"])
    return {**saved, "nodes": nodes}


def _ranks(state: Any) -> list[Any]:
    """Every rank's entry of a per-rank node (a single process's node is its one entry)."""
    if isinstance(state, dict) and "ranks" in state and "world_size" in state:
        return list(state["ranks"])
    return [state]


def _metrics_share(states: list[dict[str, Any]], rank: int, progress: dict[str, Any]) -> dict[str, Any]:
    if progress["steps_in_epoch"] > 0 and any(state["epoch_metrics"] for state in states):
        names = sorted(states[0]["epoch_metrics"])
        raise StateMismatchError(
            f"the checkpoint stops {progress['steps_in_epoch']} batch(es) into an epoch with epoch "
            f"metrics {names}, whose state each of the {len(states)} processes that wrote it holds "
            "for its own samples and which cannot be split between another number of processes; "
            "expected a checkpoint at an epoch end. Resume it with as many processes as before, "
            "then change their number at an epoch end (checkpoints are committed there)."
        )
    if rank != 0:
        return {"samples": 0, "sums": None, "epoch_metrics": {}}
    sums = [state["sums"] for state in states if state["sums"] is not None]
    total = None
    for item in sums:
        total = item.clone() if total is None else total + item
    return {
        "samples": sum(int(state["samples"]) for state in states),
        "sums": total,
        "epoch_metrics": {},
    }
