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
import pickletools
import re
import secrets
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from experiment.errors import CheckpointError, RunDirectoryError, StorageError, UnsafeCheckpointError


def refuse_symlink(path: Path) -> Path:
    """``path`` unless it is a symbolic link, which a run never writes or removes through.

    A run writes only its own files: a link would let a write (an append follows it; a replace
    swaps the link for a file) or a cleanup reach a file outside the run directory.

    Raises:
        RunDirectoryError: ``path`` is a symbolic link.
    """
    if os.path.islink(path):
        raise RunDirectoryError(
            f"{path} is a symbolic link (to {os.readlink(path)}); expected a plain file or folder of "
            "the run directory. A run never writes or removes through a link: replace the link with "
            "a copy of what it points to, or remove it."
        )
    return path


def fsync_dir(dir_path: Path) -> None:
    """Make the entries of ``dir_path`` (creations, renames, removals) durable."""
    fd = os.open(dir_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: str = "wb", temporary_path: Path | None = None, sync_dir: bool = True
) -> Iterator[IO[Any]]:
    """Open a file whose content replaces ``path`` only if the block completes.

    Args:
        path: the destination.
        mode: ``"wb"`` or ``"w"`` (any write mode of ``open``).
        temporary_path: where to write before the replace; by default a fresh name in the
            destination's folder (it must be on the same file system).
        sync_dir: fsync the folder after the replace. Only a caller that writes another file of
            the same folder with ``sync_dir=True`` right after may skip it: that fsync covers both.

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
        if sync_dir:
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


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_writer`)."""
    with atomic_writer(path, sync_dir=sync_dir) as file:
        file.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Append ``text`` to ``path`` in O(1), fsynced unless ``durable`` is False (for files that are
    rebuilt from a checkpoint after a crash, such as log.tsv)."""
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    except OSError as error:
        raise StorageError(
            f"Could not append to {path}: {error.strerror or error}. Free some space or fix the "
            "permissions and run again."
        ) from error


def save_tensors(path: Path, obj: Any, *, sync_dir: bool = True) -> None:
    """Serialize plain data and tensors with ``torch.save`` and write them atomically."""
    import torch  # imported here so that reading run directories (exp ls) stays light

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue(), sync_dir=sync_dir)


def load_tensors(path: Path) -> Any:
    """Load a file written by :func:`save_tensors` without ever executing code from it.

    Raises:
        UnsafeCheckpointError: the file holds a pickle that refers to arbitrary callables.
        CheckpointError: the file is missing, truncated, damaged or not a torch file.
    """
    import torch

    try:
        _verify_checksums(path)
        with warnings.catch_warnings():
            # A foreign pickle protocol is refused below anyway; torch's warning adds nothing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        imported = match.group(1) if match else _foreign_import(path)
        if imported:
            raise UnsafeCheckpointError(
                f"Refused to load {path}: it holds a pickle that would call {imported}. "
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
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: {_first_line(str(error))}") from error


#: The modules a pickle of plain data and tensors written by torch.save refers to.
_TENSOR_MODULES = ("torch", "collections")


def _foreign_import(path: Path) -> str | None:
    """The first callable outside torch that the pickle in ``path`` would import (read, not run).

    torch's safe loader stops at the first instruction it does not know (a newer pickle protocol's
    framing, say) before it sees what the pickle imports; this reads the instructions themselves.
    """
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                file = stack.enter_context(archive.open(member))
            else:
                file = stack.enter_context(open(path, "rb"))
            strings: list[str] = []
            for opcode, arg, _ in pickletools.genops(file):
                if opcode.name in ("GLOBAL", "INST"):
                    imported = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    imported = f"{strings[-2]}.{strings[-1]}"
                else:
                    if isinstance(arg, str):
                        strings.append(arg)
                    continue
                if imported.split(".")[0] not in _TENSOR_MODULES:
                    return imported
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile):
        return None  # damaged before any foreign import: reported as corrupt
    return None


def _verify_checksums(path: Path) -> None:
    """Check the CRC-32 of every record of a torch zip file: torch.load would read damaged bytes."""
    if not zipfile.is_zipfile(path):
        return  # not a zip file (missing, truncated, legacy format): torch.load reports it
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise CheckpointError(
            f"{path} is corrupt: the checksum of its record {damaged!r} does not match its bytes "
            "(a damaged disk or an interrupted copy)."
        )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
