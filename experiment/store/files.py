"""The only code that writes bytes to disk: atomic, durable writes and safe loads.

A write goes to a temporary file in the destination's folder, is flushed and fsynced, replaces the
destination with ``os.replace`` and is made durable by an fsync of the folder. On any failure the
temporary file is removed and the destination keeps its previous content. A staged file
(:func:`stage_tensors`) is written the same way, and its fsyncs and replace are done later, by
:meth:`StagedFile.publish`, so that a writer thread can wait for the disk instead of the caller.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from experiment.errors import RunDirectoryError, StorageError


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


def read_only_mount_message(folder: Path) -> str:
    """Why a run on a read-only file system (results shared read-only) cannot be written, and what
    to do: said the same way by every write that is refused there."""
    return (
        f"The run directory {folder} is on a read-only file system. Training, test() (which appends "
        "to test_log.tsv) and exp clean write there, so nothing was done and nothing changed. Copy the "
        "run somewhere writable (cp -a RUN COPY) and use the copy. What only reads works where it is: "
        "Experiment(...).predict(x, checkpoint=...), evaluate, exp status, ls, logs, plot and diff."
    )


def on_read_only_mount(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only, where even root cannot write."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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
        _raise_storage_error(path, error)
        raise


def _raise_storage_error(path: Path, error: BaseException) -> None:
    """Raise a StorageError for a failed write of ``path`` if ``error`` comes from the OS."""
    cause = os_error_in(error)
    if cause is not None:
        raise StorageError(
            f"Could not write {path}: {cause.strerror or cause}. The previous version of the "
            "file is intact; free some space or fix the permissions and run again."
        ) from error


class StagedFile:
    """A file written in full under a temporary name in its destination's folder, not yet durable.

    :meth:`publish` (from any thread) fsyncs it, makes it replace the destination and fsyncs the
    folder, as :func:`atomic_writer` does at the end of its block; :meth:`discard` removes it. Until
    one of them, the destination keeps its previous content.
    """

    def __init__(self, path: Path, temporary: Path, file: IO[Any]) -> None:
        self.path = path
        self.temporary = temporary
        self._file = file

    def publish(self, *, sync_dir: bool = True) -> None:
        """Make the file replace its destination atomically and durably.

        Raises:
            StorageError: the fsync or the replace failed; the temporary file is removed and the
                destination is intact.
        """
        try:
            with self._file:
                os.fsync(self._file.fileno())
            os.replace(self.temporary, self.path)
            if sync_dir:
                fsync_dir(self.path.parent)
        except BaseException as error:
            self.discard()
            _raise_storage_error(self.path, error)
            raise

    def discard(self) -> None:
        """Remove the temporary file; the destination keeps its previous content."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.temporary.unlink()


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


def os_error_in(error: BaseException) -> OSError | None:
    """``error`` if it is an OSError, else the first OSError in its chain of causes.

    torch's zip writer reports a full disk as ``RuntimeError: ... unexpected pos`` with the
    ``OSError(ENOSPC)`` only in the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and not isinstance(current, StorageError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def save_tensors(path: Path, obj: Any, *, sync_dir: bool = True) -> None:
    """Write plain data and tensors with ``torch.save`` straight into a temporary file, then make it
    replace ``path`` atomically and durably (no serialized copy of the state is held in memory).

    Raises:
        StorageError: the write failed (a full disk included); ``path`` and the folder are as before.
    """
    import torch  # imported here so that reading run directories (exp ls) stays light

    with atomic_writer(path, sync_dir=sync_dir) as file:
        torch.save(obj, file)


def stage_tensors(path: Path, obj: Any) -> StagedFile:
    """Write plain data and tensors with ``torch.save`` straight into a temporary file beside
    ``path``, to be published later (see :class:`StagedFile`): the write happens now, the waits for
    the disk when it is published.

    Raises:
        StorageError: the write failed (a full disk included); nothing is left behind.
    """
    import torch  # imported here so that reading run directories (exp ls) stays light

    path = Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    file = open(temporary, "wb")  # noqa: SIM115 (closed by publish or discard)
    staged = StagedFile(path, temporary, file)
    try:
        torch.save(obj, file)
        file.flush()
    except BaseException as error:
        staged.discard()
        _raise_storage_error(path, error)
        raise
    return staged
