"""Sharded state as plain data: the DTensor helpers of the directory commit backends.

A sharded node's state dict holds DTensors. The backends ask whether a state holds any
(:func:`holds_shards`), check this rank's shards (:func:`local_view`), gather the best weights whole
(:func:`full_tensors`), and, for asynchronous commits, take the plain local tensors with their
layouts to copy them into reused buffers and wrap them again (:func:`local_layouts`,
:func:`from_layouts`) on a process group and a CPU mesh of their own (:func:`commit_group`,
:func:`commit_mesh`). With
:mod:`~experiment.training.fsdp`, one of the few modules that import ``torch.distributed``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor


def local_view(value: Any) -> Any:
    """``value`` (plain data and tensors) with each DTensor replaced by this rank's shard."""
    if isinstance(value, DTensor):
        return value.to_local()
    if isinstance(value, dict):
        return {key: local_view(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(local_view(item) for item in value)
    return value


def holds_shards(value: Any) -> bool:
    """Whether ``value`` (plain data and tensors) holds a DTensor."""
    if isinstance(value, DTensor):
        return True
    if isinstance(value, dict):
        return any(holds_shards(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_shards(item) for item in value)
    return False


def full_tensors(state: dict[str, Any], *, keep: bool = True) -> dict[str, Any]:
    """The tensors of a sharded state dict gathered whole, on the CPU: a collective, called by
    every rank in the same order (the best weights of a new best epoch). With ``keep`` False (the
    ranks that write nothing) each gathered tensor is dropped at once, and None is returned."""
    gathered: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = (value.full_tensor() if isinstance(value, DTensor) else value).detach()
            value = value.cpu() if keep else None
        if keep:
            gathered[key] = value
    return gathered if keep else {}


def local_layouts(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tensors`` as (this rank's plain tensors, the layout of each DTensor among them), so that
    the plain tensors can be copied into reused buffers and wrapped again (:func:`from_layouts`)."""
    local, layouts = {}, {}
    for key, value in tensors.items():
        if isinstance(value, DTensor):
            local[key] = value.to_local()
            layouts[key] = (value.device_mesh, value.placements, value.shape, value.stride())
        else:
            local[key] = value
    return local, layouts


def from_layouts(local: dict[str, Any], layouts: dict[str, Any], mesh: Any) -> dict[str, Any]:
    """The plain tensors of :func:`local_layouts` (or copies of them) as DTensors again, those of
    a one-dimensional mesh on ``mesh`` (:func:`commit_mesh`), a mesh of the CPU, so that copies in
    host memory stay there: a DTensor made on a CUDA mesh moves its local tensor to the GPU. (The
    DTensors of a network the user sharded on a mesh of more dimensions keep their own.)"""
    wrapped = dict(local)
    for key, (own_mesh, placements, shape, stride) in layouts.items():
        wrapped[key] = DTensor.from_local(
            local[key],
            mesh if own_mesh.ndim == 1 else own_mesh,
            placements,
            run_check=False,
            shape=shape,
            stride=stride,
        )
    return wrapped


def commit_group() -> Any:
    """A new gloo process group for the background writers of asynchronous commits: DCP's
    collectives on the default group while FSDP2 trains on it abort gloo (a collective mismatch).
    A collective: every rank creates it at the same point."""
    return dist.new_group(backend="gloo")


def commit_mesh(group: Any) -> Any:
    """A one-dimensional CPU device mesh over ``group`` (:func:`commit_group`), whose rank order is
    the default group's: the mesh of the DTensors that asynchronous commits write from host copies.
    FSDP2 shards over one mesh dimension, so each copy keeps its placement on this mesh."""
    return DeviceMesh.from_group(group, "cpu")
