"""How a run is spread over processes: one strategy per run, asked by the loop and the run layer.

A :class:`Strategy` owns what changes with the way a run is distributed:

- the processes and their collectives (:attr:`Strategy.world`: agreements, barrier, gather,
  broadcast, sums) and which process writes the run's files (:attr:`Strategy.writes`);
- the module that training steps go through (:meth:`Strategy.training`): the network itself in
  one process, a ``DistributedDataParallel`` around it under torchrun;
- the model and optimizer as nodes of the state tree (:meth:`Strategy.model_node`,
  :meth:`Strategy.optimizer_node`): full state dicts for these two strategies. The strategy that
  shards parameters (FSDP2, :mod:`experiment.training.fsdp`) gives nodes of sharded state, which
  the directory commit backend writes (:attr:`Strategy.shards_state`).

The loop, the state tree and the commit path ask the strategy; none of them tests the kind of run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from experiment.arguments import reject
from experiment.errors import CheckpointError, ConfigurationError, StateMismatchError
from experiment.state.compatibility import model_mismatches, optimizer_mismatches
from experiment.state.optimizer_names import indexed, parameter_names
from experiment.state.stateful import Stateful
from experiment.state.torch_nodes import ModuleNode, OptimizerNode, plain_module
from experiment.store import shards
from experiment.training.distributed import SINGLE, World

STRATEGIES = ("auto", "single", "ddp", "fsdp")


class Strategy:
    """One process trains the whole network: the strategy of a run outside torchrun.

    Args:
        world: the processes of the run (a world of one here).
    """

    name = "single"
    #: Whether the model and optimizer nodes hold sharded state (written as a directory commit).
    shards_state = False
    #: Whether a resumed process runs one step that changes nothing first (DDP lays its gradient
    #: buckets out anew after its first backward: see ``GroupedStep.warm_up``).
    warms_up_on_resume = False

    def __init__(self, world: World = SINGLE) -> None:
        self.world = world

    def prepare(self, network: nn.Module, optimizer: Any = None) -> nn.Module:
        """The network to train, once on its device (FSDP2 shards it here and rebinds an
        ``optimizer`` instance to its new parameters); here the network itself."""
        return network

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.world.is_main

    @contextlib.contextmanager
    def training(self, network: nn.Module, device: torch.device) -> Iterator[nn.Module]:
        """For the block, the module that training steps go through."""
        yield network

    def forwards_to_run(self, source: Any) -> int:
        """How many forwards this rank must run over the evaluation ``source`` (a
        :class:`~experiment.training.data.BatchSource`) at least: 0 here, where ranks need not run
        as many forwards as each other."""
        return 0

    def check_callbacks(self, callbacks: Any) -> None:
        """Refuse, before anything is written, the training callbacks this strategy cannot run
        exactly (a sequence of callbacks); none here."""

    def load_weights(self, network: nn.Module, weights: Any) -> None:
        """Load saved network weights (a full state dict, or the sharded ``model`` node of a
        directory commit, which is read whole here: one process reads a run that FSDP2 trained)
        into ``network`` (the module it wraps when compiled).

        Raises:
            CheckpointError: the weights do not fit the network; nothing is loaded.
        """
        module = plain_module(network)
        if shards.is_sharded_node(weights):
            weights = shards.load_into(weights, module.state_dict(), "network")
        problems = model_mismatches(weights, module)
        if problems:
            raise CheckpointError("The saved weights do not fit the network: " + "; ".join(problems))
        module.load_state_dict(weights)

    def load_optimizer_state(
        self, network: nn.Module, optimizer: torch.optim.Optimizer, state: Any, *, source: str
    ) -> None:
        """Load a saved optimizer state into ``optimizer`` (of ``network``'s parameters): a full
        state dict keyed by index (``optimizer.state_dict()``), or the sharded ``optimizer`` node of
        a directory commit, read whole here (one process reads a run that FSDP2 trained).

        Raises:
            StateMismatchError: the state does not fit the optimizer (``source`` names it in the
                message); nothing is changed.
            CheckpointError: the commit's shards cannot be read.
        """
        if shards.is_sharded_node(state):
            state = indexed(shards.read_whole(state), parameter_names(plain_module(network), optimizer))
        optimizer.load_state_dict(checked_optimizer_state(state, optimizer, source))

    def model_node(self, network: nn.Module) -> Stateful:
        """The ``model`` node: the full state dict of the module (a compiled one's inner module)."""
        return ModuleNode(plain_module(network))

    def optimizer_node(self, optimizer: torch.optim.Optimizer) -> Stateful:
        """The ``optimizer`` node: the optimizer's full state dict."""
        return OptimizerNode(optimizer)


class DataParallel(Strategy):
    """Every rank holds the whole network; gradients are averaged by ``DistributedDataParallel``.

    Args:
        world: the processes of the run.
        wrapper: the ``DistributedDataParallel`` the user built around the network, trained
            through as it is; None: the strategy wraps the network for each training call.
        sums_exactly: the steps reduce the gradients themselves (``elastic="exact"``, see
            :mod:`experiment.training.exact_step`): the network is trained bare, every rank
            starting from rank 0's parameters and buffers.
    """

    name = "ddp"
    warms_up_on_resume = True

    def __init__(self, world: World, wrapper: nn.Module | None = None, *, sums_exactly: bool = False) -> None:
        super().__init__(world)
        self.wrapper = wrapper
        self.sums_exactly = sums_exactly

    @contextlib.contextmanager
    def training(self, network: nn.Module, device: torch.device) -> Iterator[nn.Module]:
        """For the block, ``DistributedDataParallel(network)`` (or the user's wrapper), which starts
        from rank 0's parameters. It is held for the block only: one still alive when the process
        group is destroyed (by the script, or at interpreter exit) made gloo abort the process."""
        if self.sums_exactly:
            self.world.share_module(network)
            yield network
            return
        if self.wrapper is not None:
            yield self.wrapper
            return
        ids = (
            [device.index if device.index is not None else self.world.local_rank]
            if device.type == "cuda"
            else None
        )
        yield nn.parallel.DistributedDataParallel(network, device_ids=ids)


def checked_optimizer_state(state: Any, optimizer: torch.optim.Optimizer, source: str) -> dict[str, Any]:
    """``state`` if it is a full optimizer state dict that fits ``optimizer``.

    Raises:
        StateMismatchError: it is not one, or does not fit (``source`` names it in the message).
    """
    if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
        kind = (
            f"a dict with the keys {sorted(map(str, state))}"
            if isinstance(state, dict)
            else type(state).__name__
        )
        raise StateMismatchError(
            f"{source} holds {kind}; expected an optimizer's state_dict (with 'state' and 'param_groups'), "
            "as OptimizerCheckpoint writes it, or a commit of a run (checkpoints/state-NNNNNN.pt or its "
            "folder state-NNNNNN/)."
        )
    problems = optimizer_mismatches(state, optimizer)
    if problems:
        raise StateMismatchError(f"{source} does not fit the optimizer: " + "; ".join(problems))
    return state


def choose_strategy(
    strategy: Any, world: World, network: nn.Module, *, precision: Any = "32-true", sums_exactly: bool = False
) -> tuple[Strategy, nn.Module]:
    """The strategy named ``strategy`` for ``world``, and the network to train (unwrapped when the
    user gave it inside a ``DistributedDataParallel``, which the strategy then trains through).
    ``sums_exactly``: the steps reduce the gradients themselves (``elastic="exact"``).

    Raises:
        ConfigurationError: an unknown name, "ddp" or "fsdp" outside torchrun, "single" under
            torchrun, "fsdp" with a network in DistributedDataParallel or with "16-mixed", a
            network in DistributedDataParallel with ``sums_exactly``.
    """
    wrapper = network if isinstance(network, nn.parallel.DistributedDataParallel) else None
    bare = network if wrapper is None else wrapper.module
    if strategy not in STRATEGIES:
        raise reject("strategy", strategy, "'auto', 'single', 'ddp' or 'fsdp'")
    if strategy == "fsdp":
        return _fully_sharded(world, network, precision), network
    if strategy == "single" and world.distributed:
        raise ConfigurationError(
            f"strategy='single' under torchrun ({world.size} processes) would train {world.size} "
            "unrelated copies of the network into one directory; expected 'auto' or 'ddp'. Run one "
            "process (python train.py) for a single-process run."
        )
    if strategy == "ddp" and not world.distributed:
        raise ConfigurationError(
            "strategy='ddp' needs several processes; this one runs alone (WORLD_SIZE is unset or 1). "
            "Launch the script with torchrun (torchrun --nproc_per_node=N train.py), or pass "
            "strategy='auto'."
        )
    if wrapper is not None and sums_exactly:
        raise ConfigurationError(
            "elastic='exact': received a network inside DistributedDataParallel, whose gradient "
            "all-reduce would sum in an order that depends on the number of processes; expected the "
            "bare network. Pass the module itself (wrapper.module)."
        )
    if world.distributed:
        return DataParallel(world, wrapper, sums_exactly=sums_exactly), bare
    return Strategy(world), bare


def _fully_sharded(world: World, network: nn.Module, precision: Any) -> Strategy:
    from experiment.training.fsdp import FullySharded, refuse_fsdp_precision  # it imports this module

    if not world.distributed:
        raise ConfigurationError(
            "strategy='fsdp' shards the network over several processes; this one runs alone "
            "(WORLD_SIZE is unset or 1). Launch the script with torchrun --nproc_per_node=N (N >= 2), "
            "or pass strategy='auto' to train the whole network in one process."
        )
    if isinstance(network, nn.parallel.DistributedDataParallel):
        raise ConfigurationError(
            "strategy='fsdp': received a network inside DistributedDataParallel; expected the bare "
            "network (or one already sharded with fully_shard). Pass the module itself."
        )
    refuse_fsdp_precision(precision)
    return FullySharded(world)
