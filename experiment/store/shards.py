"""Sharded state on disk: torch's Distributed Checkpoint (DCP) files of a directory commit, written
and read without ever executing code.

A node of sharded state (a network or optimizer trained with FSDP2) is split in two: its tensors go
to DCP (one shard file per rank and ``.metadata``), everything else stays in the commit's tree file
as a *skeleton*, in which each tensor is a marker ``{"@dcp": key}``. Only tensors are given to DCP:
DCP writes any other value as a pickle and reads it back with ``torch.load(weights_only=False)``,
which would run code from a shard file. Tensors are read with ``weights_only=True``.

DCP's ``.metadata`` is itself a pickle. The commit's tree file (read with ``weights_only=True``)
records its SHA-256 digest; the metadata is unpickled only from bytes that match it
(:func:`verified_metadata`), so a ``.metadata`` planted or changed after the commit is refused,
named, and never read as a pickle.

torch.distributed.checkpoint is imported when shards are written or read, not when this module is
(the read side of the store imports no torch).

Example:
    >>> skeleton, tensors = split(optimizer_state, "optimizer")
    >>> save(tensors, tmp_dir)                           # every rank
    >>> digest = digest(tmp_dir / METADATA)              # rank 0, which commits the folder
    >>> node = {"sharded": {"prefix": "optimizer", "skeleton": skeleton, "metadata_sha256": digest}}
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path
from typing import Any

from experiment.errors import CheckpointError, StateMismatchError, StorageError

#: The name of DCP's metadata file in a commit's directory.
METADATA = ".metadata"
#: The key of a tensor's marker in a skeleton.
MARKER = "@dcp"


def split(state: Any, prefix: str) -> tuple[Any, dict[str, Any]]:
    """``state`` as (skeleton, tensors): each tensor replaced by ``{"@dcp": key}`` in the skeleton
    and found under ``key`` (``prefix/a/b``, the path of its keys) in ``tensors``."""
    tensors: dict[str, Any] = {}

    def walk(value: Any, path: str) -> Any:
        if _is_tensor(value):
            tensors[path] = value
            return {MARKER: path}
        if isinstance(value, dict):
            return {key: walk(item, f"{path}/{key}") for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(item, f"{path}/{index}") for index, item in enumerate(value))
        return value

    return walk(state, prefix), tensors


def fill(skeleton: Any, tensors: dict[str, Any]) -> Any:
    """The state that ``skeleton`` describes, with each marker replaced by its tensor."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {MARKER}:
            return tensors[skeleton[MARKER]]
        return {key: fill(item, tensors) for key, item in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(fill(item, tensors) for item in skeleton)
    return skeleton


def marked_keys(skeleton: Any) -> list[str]:
    """The tensor keys of a skeleton, in order."""
    found: list[str] = []
    if isinstance(skeleton, dict):
        if set(skeleton) == {MARKER}:
            return [skeleton[MARKER]]
        for item in skeleton.values():
            found += marked_keys(item)
    elif isinstance(skeleton, (list, tuple)):
        for item in skeleton:
            found += marked_keys(item)
    return found


def save(tensors: dict[str, Any], directory: Path, *, group: Any = None) -> None:
    """Write ``tensors`` (this rank's shards) into ``directory`` with DCP, every file fsynced; a
    collective of every rank. ``group``: the process group of DCP's collectives (None: the default).
    The digest of ``.metadata`` is taken by the rank that commits the folder (:func:`digest`), and
    only by it: once this returns, that rank may rename the folder while the others go on.

    Raises:
        StorageError: a rank failed to write (every rank raises it).
    """
    import torch.distributed.checkpoint as dcp

    try:
        writer = dcp.FileSystemWriter(directory, sync_files=True)
        dcp.save(tensors, storage_writer=writer, process_group=group)
    except Exception as error:  # DCP reports any rank's failure on every rank
        raise StorageError(
            f"Could not write the sharded checkpoint into {directory}: {error}. Nothing was committed; "
            "the previous checkpoint is intact. If another process of the run ended (killed or "
            "crashed), its own output says why; otherwise free some disk space or check the file system."
        ) from error


def digest(path: Path) -> str:
    """The SHA-256 of a file, in hexadecimal."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified_metadata(directory: Path, expected: str) -> Any:
    """DCP's metadata of ``directory``, unpickled only if its bytes have the digest ``expected``.

    Raises:
        CheckpointError: the file is missing, or differs from the one committed (naming it).
    """
    path = directory / METADATA
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror}): the commit is damaged.") from error
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise CheckpointError(
            f"{path} is not the file that was committed: its SHA-256 is {found}, and the commit's tree "
            f"file recorded {expected}. It was changed or replaced after the commit, and may hold code: "
            "it was not read. Restore it from a backup, or remove this commit's directory."
        )
    return pickle.loads(data)  # noqa: S301 - the bytes are the committed ones (digest checked)


def locate(node: Any, directory: Path) -> Any:
    """A sharded node as a tree file holds it, told the directory of its shards (the read side
    adds it, so that every rank reads its own path to the same commit); other nodes as they are.

    Raises:
        CheckpointError: the commit's ``.metadata`` is not the one committed.
    """
    if not is_sharded_node(node):
        return node
    sharded = dict(node["sharded"])
    verified_metadata(directory, sharded["metadata_sha256"])
    sharded["directory"] = str(directory)
    return {"sharded": sharded}


def is_sharded_node(node: Any) -> bool:
    """Whether ``node`` is a sharded node as a directory commit's tree file holds it."""
    return isinstance(node, dict) and set(node) == {"sharded"}


def problems(saved: Any, live: Any, what: str) -> list[str]:
    """How the saved sharded node ``saved`` does not fit the live state ``live`` (names and global
    shapes of the tensors), as sentences for a StateMismatchError."""
    if not is_sharded_node(saved):
        return [
            f"the checkpoint holds the {what} state as one whole state dict (written by another "
            "strategy), and this run shards it (strategy='fsdp'): train with the strategy that wrote it"
        ]
    sharded = saved["sharded"]
    expected = set(marked_keys(sharded["skeleton"]))
    _, live_tensors = split(live, sharded["prefix"])
    found: list[str] = []
    missing, unexpected = sorted(set(live_tensors) - expected), sorted(expected - set(live_tensors))
    if missing:
        found.append(f"the checkpoint's {what} state lacks {_some(missing)}")
    if unexpected:
        found.append(f"the checkpoint's {what} state holds {_some(unexpected)}, which the {what} has not now")
    metadata = verified_metadata(Path(sharded["directory"]), sharded["metadata_sha256"])
    for key in sorted(expected & set(live_tensors)):
        entry = metadata.state_dict_metadata.get(key)
        shape = tuple(getattr(entry, "size", ()))
        if entry is not None and shape != tuple(live_tensors[key].shape):
            found.append(
                f"{what} {key!r} has shape {tuple(live_tensors[key].shape)} now, {shape} in the checkpoint"
            )
    return found


def load_into(saved: Any, live: Any, what: str) -> Any:
    """The saved sharded node read into the tensors of ``live`` (this rank's shards, in place): a
    collective of every rank, or, in a process without a process group, a plain read (DCP
    reshards: full tensors of a plain module are read whole from every rank's shards). Returns the
    state to give to ``set_*_state_dict`` (or ``load_state_dict``).

    Raises:
        StateMismatchError: ``saved`` is not a sharded node, or names tensors ``live`` lacks.
        CheckpointError: its ``.metadata`` is not the one committed.
    """
    found = problems(saved, live, what)
    if found:
        raise StateMismatchError(f"The checkpoint does not fit the {what}: " + "; ".join(found))
    sharded = saved["sharded"]
    directory = Path(sharded["directory"])
    _, live_tensors = split(live, sharded["prefix"])
    target = {key: live_tensors[key] for key in marked_keys(sharded["skeleton"])}
    import torch.distributed as dist

    _read(
        target,
        directory,
        sharded["metadata_sha256"],
        alone=not (dist.is_available() and dist.is_initialized()),
    )
    return fill(sharded["skeleton"], target)


def read_whole(node: Any) -> Any:
    """A sharded node (as :func:`locate` gives it) read whole by this process alone, without any
    collective: each tensor at its global shape and dtype, assembled from every rank's shards. The
    state that one process of an unsharded network would hold (``exp export``, one process reading
    a run that FSDP2 trained).

    Raises:
        CheckpointError: its ``.metadata`` is not the one committed, or lacks a tensor of the node.
    """
    import torch

    sharded = node["sharded"]
    directory = Path(sharded["directory"])
    metadata = verified_metadata(directory, sharded["metadata_sha256"])
    target = {}
    for key in marked_keys(sharded["skeleton"]):
        entry = metadata.state_dict_metadata.get(key)
        if entry is None or not hasattr(entry, "properties"):
            raise CheckpointError(
                f"{directory / METADATA} describes no tensor {key!r}, which the commit's tree file "
                "names: the commit is damaged. Use another commit (checkpoint='best', or an older one)."
            )
        target[key] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
    _read(target, directory, sharded["metadata_sha256"], alone=True)
    return fill(sharded["skeleton"], target)


def _read(target: dict[str, Any], directory: Path, expected: str, *, alone: bool) -> None:
    """Read the tensors of ``target`` (in place) from the shards of ``directory``: with DCP's
    collectives, or (``alone``) by this process alone, every file read here."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # one process reading shards is what is meant: DCP warns of it
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(target, storage_reader=_verified_reader(directory, expected), no_dist=alone)


def _verified_reader(directory: Path, expected: str) -> Any:
    """A DCP reader of ``directory`` whose metadata is unpickled only from verified bytes."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class VerifiedReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = verified_metadata(directory, expected)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return VerifiedReader(directory)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _some(keys: list[str], shown: int = 5) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(repr(key) for key in keys[:shown]) + more
