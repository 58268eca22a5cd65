"""FSDP2: the strategy that shards parameters, gradients and optimizer state over the ranks.

``strategy="fsdp"`` applies torch's ``fully_shard`` to each direct child module that holds
parameters, then to the root, over a one-dimensional device mesh of every rank; a network in which
the user applied ``fully_shard`` already is trained as it is. The sharding replaces the network's
parameters by new ones (DTensors), so an optimizer given as an instance is rebound to them, in
place (it must not have stepped yet).

Training goes through the network itself (each forward and backward gathers and reduce-scatters
its parameters and gradients). Since every forward is a collective, evaluation (validation, test,
evaluate) pads: a rank with fewer batches than another runs its last batch again, results discarded,
so that every rank runs as many forwards; padded batches count in no metric. Precision stays the library's: autocast of the forward pass and the
loss, as in one process and under DDP, so that a run computes the same function whatever its
strategy (FSDP2's ``MixedPrecisionPolicy`` would also cast the gathered parameters, which changes
the numerics; a user who wants it shards the network with their policy, which is kept).
"16-mixed" is refused: ``torch.amp.GradScaler`` would decide whether to skip a step from each
rank's shard of the gradients alone, so ranks could disagree.

The ``model`` and ``optimizer`` nodes hold sharded state (DTensors, keyed by parameter name), from
``torch.distributed.checkpoint.state_dict``; they are written by the directory commit backend
(:mod:`~experiment.run.commits.directory_backend`) with torch's Distributed Checkpoint and loaded
from it (:mod:`~experiment.store.shards`). This module and :mod:`~experiment.training.distributed`
are the only ones of the training layer that import ``torch.distributed``, with
:mod:`~experiment.training.sharded_tensors` (the DTensor helpers of the directory commit backends)
and :mod:`~experiment.training.fsdp_interop`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from experiment.errors import CheckpointError, ConfigurationError, DataError, StateMismatchError
from experiment.state.compatibility import model_mismatches
from experiment.state.torch_nodes import plain_module
from experiment.store import shards
from experiment.training.distributed import World
from experiment.training.fsdp_interop import cut_to_shards, refuse_weight_callbacks
from experiment.training.strategy import Strategy, checked_optimizer_state


class FullySharded(Strategy):
    """Parameters, gradients and optimizer state sharded over the ranks by FSDP2 (``fully_shard``).

    Args:
        world: the processes of the run (two or more).
    """

    name = "fsdp"
    shards_state = True

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.network: nn.Module | None = None

    def prepare(self, network: nn.Module, optimizer: Any = None) -> nn.Module:
        """Shard ``network`` (unless the user did; a network the user compiled: the module it wraps,
        so that its children are sharded and its state keeps the module's names) and rebind an
        optimizer instance to its new parameters; return the network to train.

        Raises:
            ConfigurationError: the optimizer instance has stepped already (its state belongs to
                the parameters the sharding replaced).
        """
        if not is_sharded(network):
            module = plain_module(network)  # a network the user compiled: the module it wraps
            names = {id(parameter): name for name, parameter in module.named_parameters()}
            device = next(module.parameters(), torch.empty(0)).device
            mesh = init_device_mesh(device.type, (self.world.size,))
            for child in module.children():
                if next(child.parameters(), None) is not None:
                    fully_shard(child, mesh=mesh)
            fully_shard(module, mesh=mesh)
            if isinstance(optimizer, torch.optim.Optimizer):
                _rebind(optimizer, names, dict(module.named_parameters()))
        self.network = network
        return network

    def forwards_to_run(self, source: Any) -> int:
        """The largest number of batches of ``source`` over the ranks (one control all-reduce): every
        FSDP2 forward is a collective, so a rank with fewer batches runs its last one again, its
        results discarded (see :func:`~experiment.training.evaluation.evaluate`).

        Raises:
            DataError: ``source`` does not say how many batches it holds.
        """
        batches = source.steps_per_epoch
        if batches is None:
            raise DataError(
                f"{source.role}: received data of unknown length; with strategy='fsdp' every rank must "
                "run as many forwards as the others, so evaluation needs to know each rank's number of "
                "batches. Give a map-style Dataset, (x, y) tensors or a DataLoader with a length."
            )
        return self.world.agree_on(batches=int(batches))["batches"]

    def check_callbacks(self, callbacks: Any) -> None:
        """Refuse the callbacks that save or load the network's or the optimizer's state themselves
        (see :func:`~experiment.training.fsdp_interop.refuse_weight_callbacks`)."""
        refuse_weight_callbacks(callbacks)

    def load_weights(self, network: nn.Module, weights: Any) -> None:
        """Load saved weights into the sharded network: a directory commit's ``model`` node from
        its shards, or a full state dict (best weights) scattered to each rank's shards."""
        module = plain_module(network)
        if shards.is_sharded_node(weights):
            ShardedModuleNode(module).load_state_dict(weights)
            return
        problems = model_mismatches(weights, module)
        if problems:
            raise CheckpointError("The saved weights do not fit the network: " + "; ".join(problems))
        set_model_state_dict(module, weights, options=StateDictOptions(full_state_dict=True))

    def load_optimizer_state(
        self, network: nn.Module, optimizer: torch.optim.Optimizer, state: Any, *, source: str
    ) -> None:
        """Load a saved optimizer state into the shards of ``optimizer``: a directory commit's
        ``optimizer`` node from its shards (DCP reshards), or a full state dict keyed by index,
        each tensor cut to this rank's shard. A collective of every rank.

        Raises:
            StateMismatchError: the state does not fit the optimizer; nothing is changed.
        """
        module = plain_module(network)
        if shards.is_sharded_node(state):
            node = ShardedOptimizerNode(module, optimizer)
            problems = node.state_problems(state)
            if problems:
                raise StateMismatchError(f"{source} does not fit the optimizer: " + "; ".join(problems))
            node.load_state_dict(state)
            return
        optimizer.load_state_dict(cut_to_shards(checked_optimizer_state(state, optimizer, source), optimizer))

    def model_node(self, network: nn.Module) -> ShardedModuleNode:
        """The ``model`` node: the network's sharded state dict."""
        return ShardedModuleNode(plain_module(network))

    def optimizer_node(self, optimizer: torch.optim.Optimizer) -> ShardedOptimizerNode:
        """The ``optimizer`` node: the optimizer's sharded state dict, keyed by parameter name."""
        if self.network is None:
            raise ConfigurationError("FullySharded.optimizer_node: prepare(network) was not called.")
        return ShardedOptimizerNode(plain_module(self.network), optimizer)


def is_sharded(network: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``network`` or to one of its modules."""
    return any(isinstance(module, FSDPModule) for module in network.modules())


def refuse_fsdp_precision(precision: Any) -> None:
    """Refuse "16-mixed" with FSDP2 (see the module docstring)."""
    if precision in ("16-mixed", "16"):
        raise ConfigurationError(
            f"precision={precision!r} with strategy='fsdp': the GradScaler would decide whether to skip "
            "a step from each rank's shard of the gradients alone, so the ranks could disagree; "
            "expected 'bf16-mixed' or '32-true'. Use precision='bf16-mixed'."
        )


def _rebind(
    optimizer: torch.optim.Optimizer, names: dict[int, str], sharded: dict[str, nn.Parameter]
) -> None:
    """Put the sharded parameters in place of the ones they replaced, in ``optimizer``'s groups."""
    if any(optimizer.state.values()):
        raise ConfigurationError(
            f"optimizer: received a {type(optimizer).__name__} that has stepped already; with "
            "strategy='fsdp' the network's parameters are replaced by sharded ones, to which the "
            "optimizer is rebound, and its state would belong to the old ones. Build the optimizer "
            "before training (or pass its name, e.g. optimizer='adamw')."
        )
    for group in optimizer.param_groups:
        group["params"] = [
            sharded[names[id(parameter)]] if id(parameter) in names else parameter
            for parameter in group["params"]
        ]


class ShardedModuleNode:
    """The ``model`` node of a sharded network: its sharded state dict (DTensors for parameters,
    tensors for buffers), loaded back from a directory commit's shards."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.network)

    def state_problems(self, saved: Any) -> list[str]:
        return shards.problems(saved, get_model_state_dict(self.network), "network")

    def load_state_dict(self, saved: Any) -> None:
        live = get_model_state_dict(self.network)
        set_model_state_dict(self.network, shards.load_into(saved, live, "network"))


class ShardedOptimizerNode:
    """The ``optimizer`` node of a sharded network's optimizer: its sharded state dict, keyed by
    parameter name, loaded back from a directory commit's shards."""

    def __init__(self, network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.network = network
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.network, self.optimizer)

    def state_problems(self, saved: Any) -> list[str]:
        """The parameter names of each group, saved and now (asked on rank 0 alone, so without
        ``get_optimizer_state_dict``: for a fresh optimizer it steps it, which may be a collective;
        the shapes of the state follow the parameters', which the ``model`` node checks)."""
        if not shards.is_sharded_node(saved):
            return shards.problems(saved, {}, "optimizer")
        names = {id(parameter): name for name, parameter in self.network.named_parameters()}
        live = [[names.get(id(p), "?") for p in group["params"]] for group in self.optimizer.param_groups]
        stored = [
            list(group.get("params", [])) for group in saved["sharded"]["skeleton"].get("param_groups", [])
        ]
        if stored == live:
            return []
        return [f"the optimizer's parameter groups hold {live} now, {stored} in the checkpoint"]

    def load_state_dict(self, saved: Any) -> None:
        live = get_optimizer_state_dict(self.network, self.optimizer)
        loaded = shards.load_into(saved, live, "optimizer")
        set_optimizer_state_dict(self.network, self.optimizer, loaded)


__all__ = [
    "FullySharded",
    "ShardedModuleNode",
    "ShardedOptimizerNode",
    "is_sharded",
    "refuse_fsdp_precision",
]
