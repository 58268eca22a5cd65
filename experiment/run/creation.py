"""What a run was created with, and how a resumed call differs from it.

experiment.json records, at the run's first call, the optimizer's class and hyperparameters, the
shape of the data (its kind, batch size, samples, batches per pass, steps per epoch), the config,
and whether the run is elastic with its global batch (and groups, in exact mode; see
:mod:`experiment.run.elastic`). A later call is compared with that record before anything is loaded:

- what cannot stay exact is refused: other optimizer hyperparameters (the checkpoint would
  silently keep the old ones), another precision, accumulation or custom step (by its name), data
  of another kind, and, in the middle of an epoch, another batch size, dataset length or number of
  steps per epoch; another strategy, unless an elastic run goes between one process and DDP;
- what can be applied deliberately (another batch size or dataset at an epoch boundary, another
  config) is applied with a warning and recorded in experiment.json's ``changes``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from experiment.training.data import BatchSource
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan

_DATA_FIELDS = ("batch_size", "samples", "batches_per_pass", "steps_per_epoch")


def creation_record(loop: TrainingLoop, plan: TrainingPlan) -> dict[str, Any]:
    """The record of a call: the optimizer's class and hyperparameters per group, precision,
    accumulation, world size and strategy, an elastic run's layout, and the shape of each data
    source."""
    data = {"train_data": data_shape(plan.train)}
    if plan.valid is not None:
        data["valid_data"] = data_shape(plan.valid)
    # An elastic run's layout (:mod:`experiment.run.elastic`); the record of any other run is unchanged.
    elastic = (
        {"elastic": plan.elastic, "global_batch": plan.global_batch, "elastic_groups": plan.elastic_groups}
        if plan.elastic
        else {}
    )
    return {
        "optimizer_class": f"{type(loop.optimizer).__module__}.{type(loop.optimizer).__qualname__}",
        "optimizer": hyperparameters(loop.optimizer),
        "precision": loop.precision.name,
        "accumulate_grad_batches": loop.accumulate_grad_batches,
        "world_size": loop.world.size,
        "strategy": loop.strategy.name,
        **elastic,
        "train_step": _step_name(loop.custom_train_step),
        "eval_step": _step_name(loop.eval_step),
        "data": data,
    }


def _step_name(step: Any) -> str | None:
    """A custom step as its module and qualified name (None: the built-in step)."""
    if step is None:
        return None
    return f"{getattr(step, '__module__', '?')}.{getattr(step, '__qualname__', type(step).__qualname__)}"


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings as JSON values (``params`` and ``initial_lr`` left out)."""
    groups = []
    for group in optimizer.param_groups:
        settings = {
            key: _json_value(value) for key, value in group.items() if key not in ("params", "initial_lr")
        }
        groups.append(json.loads(json.dumps(settings)))
    return groups


def data_shape(source: BatchSource) -> dict[str, Any]:
    """How a data source was given (its kind) and its shape, as experiment.json records them."""
    loader = source.loader
    dataset = getattr(loader, "dataset", None)
    try:
        samples = len(dataset) if dataset is not None else None
    except TypeError:
        samples = None
    return {
        "kind": source.kind,
        "batch_size": getattr(loader, "batch_size", None),
        "samples": samples,
        "batches_per_pass": source.pass_length,
        "steps_per_epoch": source.steps_per_epoch,
    }


def creation_problems(recorded: dict[str, Any], current: dict[str, Any], *, mid_epoch: bool) -> list[str]:
    """What in ``current`` cannot resume the run ``recorded`` describes exactly."""
    problems = _optimizer_problems(recorded["optimizer"], current["optimizer"])
    for field in ("precision", "accumulate_grad_batches", "train_step", "eval_step", "strategy"):
        if field == "strategy" and _elastic_strategies(recorded, current):
            continue
        if field in recorded and recorded[field] != current[field]:
            problems.append(
                f"{field} was {recorded[field]!r} when the run was created and is {current[field]!r} "
                "now; the run cannot resume exactly with another one. Pass the same value, or train "
                "in a new directory."
            )
    for role, now in current["data"].items():
        then = recorded["data"].get(role)
        if then is None:
            continue
        if then["kind"] != now["kind"]:
            problems.append(
                f"{role} was a {then['kind']} when the run was created and is a {now['kind']} now; the "
                f"order of its batches would differ. Pass a {then['kind']} as before."
            )
        elif mid_epoch and role == "train_data":
            problems += [
                f"{role}: {field} was {then[field]} when the run was created and is {now[field]} now; "
                "the checkpoint stops in the middle of an epoch, which can resume exactly only on the same "
                "data. Pass the same data and batch size, or resume from an epoch end in a new directory."
                for field in _DATA_FIELDS
                if then.get(field) != now.get(field)
            ]
    return problems


def _elastic_strategies(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether an elastic run goes from one process to DDP or back (the same run, another world size)."""
    strategies = {recorded.get("strategy"), current["strategy"]}
    return bool(recorded.get("elastic")) and strategies <= {"single", "ddp"}


def creation_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The data settings that changed at an epoch boundary (applied, with a warning)."""
    changes = []
    for role, now in current["data"].items():
        then = recorded["data"].get(role) or {}
        for field in _DATA_FIELDS:
            if role in recorded["data"] and then.get(field) != now.get(field):
                changes.append({"what": f"{role}.{field}", "from": then.get(field), "to": now.get(field)})
    return changes


def _optimizer_problems(then: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """One problem listing every hyperparameter that differs, with the advice once."""
    if len(then) != len(now):
        return []  # the state tree reports a different number of parameter groups
    differences = [
        f"{key} (group {index}): {old.get(key)!r} when the run was created, {new.get(key)!r} now"
        for index, (old, new) in enumerate(zip(then, now))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    if not differences:
        return []
    return [
        "the optimizer's hyperparameters differ from those the run was created with, and the "
        "checkpoint would silently keep the old values:\n      "
        + "\n      ".join(differences)
        + "\n    Build the optimizer as before (change a learning rate during a run with an LR "
        "scheduler or OptimizerPolicy), or train in a new directory."
    ]


def _json_value(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return repr(value)
