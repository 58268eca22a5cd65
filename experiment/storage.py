"""The only code that writes bytes to disk: atomic, durable writes and safe loads.

A write goes to a temporary file in the destination's folder, is flushed and fsynced, replaces the
destination with ``os.replace`` and is made durable by an fsync of the folder. On any failure the
temporary file is removed and the destination keeps its previous content.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from experiment.errors import CheckpointError, StorageError, UnsafeCheckpointError


def fsync_dir(dir_path: Path) -> None:
    """Make the entries of ``dir_path`` (creations, renames, removals) durable."""
    fd = os.open(dir_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: str = "wb", temporary_path: Path | None = None
) -> Iterator[IO[Any]]:
    """Open a file whose content replaces ``path`` only if the block completes.

    Args:
        path: the destination.
        mode: ``"wb"`` or ``"w"`` (any write mode of ``open``).
        temporary_path: where to write before the replace; by default a fresh name in the
            destination's folder (it must be on the same file system).

    Raises:
        StorageError: when the write, the fsync or the replace fails; the destination is intact.
    """
    path = Path(path)
    if temporary_path is None:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    else:
        tmp_path = Path(temporary_path)
    try:
        with open(tmp_path, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(error, OSError):
            raise StorageError(
                f"Could not write {path}: {error.strerror or error}. The previous version of the "
                "file is intact; free some space or fix the permissions and run again."
            ) from error
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_writer(path) as file:
        file.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and fsync it (an O(1) durable append)."""
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise StorageError(
            f"Could not append to {path}: {error.strerror or error}. Free some space or fix the "
            "permissions and run again."
        ) from error


def save_tensors(path: Path, obj: Any) -> None:
    """Serialize plain data and tensors with ``torch.save`` and write them atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensors(path: Path) -> Any:
    """Load a file written by :func:`save_tensors` without ever executing code from it.

    Raises:
        UnsafeCheckpointError: the file holds a pickle that refers to arbitrary callables.
        CheckpointError: the file is missing, truncated or not a torch file.
    """
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol is refused below anyway; torch's warning adds nothing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if match:
            raise UnsafeCheckpointError(
                f"Refused to load {path}: it holds a pickle that would call {match.group(1)}. "
                "Nothing from it was executed. Only files of plain data and tensors (torch.save of "
                "state dicts, as this library writes them) are loaded; do not use files of unknown "
                "origin, and if you wrote this one yourself, save plain state dicts instead of objects."
            ) from error
        raise CheckpointError(
            f"{path} is corrupt: it holds pickle instructions that a safe load does not accept "
            "(damaged, or not written by torch.save)."
        ) from error
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} does not exist.") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt: {_first_line(str(error))}"
        ) from error


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
