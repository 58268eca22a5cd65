"""One training run across the processes that torchrun (or a scheduler) launched.

A :class:`World` is this process's view of the run's processes: its rank among ``size``, and the
few collective operations the library needs. A single process is a world of one, in which every
operation returns its input without communicating, so the loop and the committer call them
unconditionally.

Traffic is split in two, as torch's own checkpointing does: tensors that live on the training
device (metric sums, BatchNorm buffers) go through the default group (NCCL on GPUs, gloo on CPUs);
the library's control messages (the agreement on signals and stops, the gather of per-rank states,
rank 0's verdict on a commit) go through a separate gloo group on the CPU, so they never make a GPU
wait and never interleave with DDP's gradient all-reduce. Control collectives happen only at commit
points, epoch ends and every few seconds of training (:class:`AgreementSchedule`), never per step.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from experiment.errors import ExperimentError
from experiment.training.launch import srun_variables

T = TypeVar("T")

#: What collectives say when another process of the run is gone (gloo's TCP transport, NCCL, the
#: rendezvous store): its connections were reset or closed under this one.
_PEER_GONE = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "connection refused",
    "remote process exited",
    "communicator was aborted",
)


def lost_peer_reason(error: BaseException) -> str | None:
    """One line saying that another process of the run ended, if ``error`` is how a collective
    reported it (killed or crashed: its connections went away); None for any other error."""
    if not isinstance(error, RuntimeError):  # DistBackendError and DistNetworkError included
        return None
    text = str(error)
    marker = next((m for m in _PEER_GONE if m in text.lower()), None)
    if marker is None:
        return None
    return (
        f"another process of the run ended (killed or crashed): a collective failed with "
        f"'{marker}' ({type(error).__name__})"
    )


class World:
    """The processes of one run, seen from one of them.

    Args:
        size: the number of processes (``WORLD_SIZE``).
        rank: this process's rank; rank 0 alone writes files.
        local_rank: its rank on this node (``LOCAL_RANK``), the index of its GPU.
        control: the gloo group of the library's control traffic (None: the default group).
    """

    def __init__(self, size: int = 1, rank: int = 0, local_rank: int = 0, control: Any = None) -> None:
        self.size = size
        self.rank = rank
        self.local_rank = local_rank
        self.control = control

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes files and shows progress."""
        return self.rank == 0

    # ----------------------------------------------------------------------- control messages
    def agree(self, values: list[int]) -> list[int]:
        """The element-wise maximum of ``values`` over every rank (one small gloo all-reduce)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return [int(value) for value in tensor.tolist()]

    def agree_on(self, **values: int) -> dict[str, int]:
        """Each named value's maximum over every rank, in one all-reduce of :meth:`agree`.

        Example:
            >>> SINGLE.agree_on(signal=15, stop=0)
            {'signal': 15, 'stop': 0}
        """
        return dict(zip(values, self.agree(list(values.values()))))

    def barrier(self) -> None:
        """Wait until every rank reaches this point (on the control group)."""
        self.agree([0])

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` in rank order, on rank 0 (None on the others)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(value, gathered, dst=0, group=self.control)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def on_main(self, action: Callable[[], T]) -> T | None:
        """Run ``action`` on rank 0 only; if it raises, raise the same error on every rank.

        Returns:
            The action's result on rank 0, None on the other ranks.
        """
        result: T | None = None
        failure: BaseException | None = None
        if self.is_main:
            try:
                result = action()
            except Exception as error:  # reported to every rank below, then raised here
                failure = error
        # Every rank learns whether rank 0 failed from one small all-reduce; the error itself is
        # broadcast only when there is one (a broadcast of objects costs two collectives and pickling).
        if self.distributed and self.agree_on(failed=int(failure is not None))["failed"]:
            verdict = self.broadcast(None if failure is None else _portable(failure, self.rank))
            if failure is None:
                kind, message = verdict
                raise kind(message)
        if failure is not None:
            raise failure
        return result

    def raise_any(self, failure: BaseException | None) -> None:
        """Raise on every rank if any rank passes an error: a rank that failed raises its own, the
        others the first failed rank's (see :func:`_portable`). One small all-reduce when none
        failed; every rank calls it at the same point."""
        if self.distributed and self.agree_on(failed=int(failure is not None))["failed"]:
            verdicts = self.gather(None if failure is None else _portable(failure, self.rank))
            verdict = self.broadcast(next((v for v in verdicts or [] if v is not None), None))
            if failure is None:
                kind, message = verdict
                raise kind(message)
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------------ device tensors
    def total(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over every rank, as a new tensor (the input is left as it is)."""
        if not self.distributed:
            return tensor
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    def maximum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise maximum of ``tensor`` over every rank, as a new tensor."""
        if not self.distributed:
            return tensor
        result = tensor.clone()
        dist.all_reduce(result, op=dist.ReduceOp.MAX)
        return result

    def share_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (as DistributedDataParallel does when it
        is built), for training that reduces gradients itself."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def share_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart between ranks, each
        updating them on its own batches), so that what is evaluated and saved is one model."""
        if not self.distributed:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _portable(error: BaseException, rank: int) -> tuple[type[BaseException], str]:
    """An error of ``rank`` as (class, message) that another rank can raise: the library's own
    classes as they are, any other as a RuntimeError that names it and the rank."""
    if isinstance(error, ExperimentError):
        return type(error), str(error)
    return RuntimeError, f"rank {rank} failed with {type(error).__name__}: {error}"


SINGLE = World()
#: The world of the current default group, which is held weakly: a group the script destroys must
#: not live on here until the interpreter's teardown (gloo then aborts the process).
_CURRENT: tuple[weakref.ref[Any], World] | None = None


def current_world(device: torch.device | None = None) -> World:
    """The world of this process: a single process unless ``WORLD_SIZE`` > 1 (torchrun and the
    like), in which case the process group is started, unless the user started it.

    A process that ``srun`` started as one of several tasks, without torchrun, gets torchrun's
    variables from SLURM's first (:func:`~experiment.training.launch.srun_variables`; they are set
    in ``os.environ`` for the process group and for the user's code alike).

    The group is gloo on a CPU; with CUDA it is gloo for CPU tensors and NCCL for CUDA tensors. A
    restarted torchrun attempt (``TORCHELASTIC_RESTART_COUNT`` > 0) whose workers share the store
    of torchrun's agent (``TORCHELASTIC_USE_AGENT_STORE``, torch's default) joins through that store
    prefixed with its attempt, since the addresses of the failed attempt are still in it; without it
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) rank 0 hosts a new store at each attempt, as in the first.
    """
    global _CURRENT
    os.environ.update(srun_variables(os.environ))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    if not dist.is_initialized():
        _start_process_group(size)
        atexit.register(_shut_down)
    group = dist.group.WORLD
    if _CURRENT is not None and _CURRENT[0]() is group:
        return _CURRENT[1]
    size, rank = dist.get_world_size(), dist.get_rank()
    if size == 1:
        return SINGLE
    control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    world = World(size, rank, int(os.environ.get("LOCAL_RANK", rank)), control)
    _CURRENT = (weakref.ref(group), world)
    return world


def _start_process_group(size: int) -> None:
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    # Only a store that torchrun's agent hosts outlives an attempt: a store of rank 0's is new.
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, wait_for_workers=False
    )
    prefixed = dist.PrefixStore(f"experiment/attempt_{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=int(os.environ["RANK"]), world_size=size)


def _shut_down() -> None:
    """At exit of a process whose group the library started: destroy the group."""
    gc.collect()
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def training_device(world: World) -> torch.device | None:
    """The device of this rank when the user named none: ``cuda:LOCAL_RANK`` under torchrun on a
    machine with CUDA, else None (the network's own device). Where each process sees fewer GPUs
    than the node's ranks (``srun --gpus-per-task=1``: one each), the index wraps around the GPUs
    it sees."""
    if world.distributed and torch.cuda.is_available():
        index = world.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return None


def sharing_problems(metrics: Iterable[tuple[str, Any]]) -> list[str]:
    """The epoch metrics that cannot be combined across ranks (torchmetrics metrics sync
    themselves in ``compute()``; other objects would log one rank's value)."""
    return [
        name
        for name, metric in metrics
        if not getattr(metric, "syncs_across_processes", False)
        and not (hasattr(metric, "metric_state") and hasattr(metric, "sync"))
    ]
