"""The OS-level lock that keeps a second process out of a run directory.

The lock is a ``flock`` on a file, held through ``filelock``: the kernel drops it when the holding
process dies, even by ``kill -9``, so no stale lock survives. Who holds it (pid, host, since when) is
written to a separate file, because a process failing to take the lock must not truncate it.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import filelock

from experiment.errors import DirectoryLockedError, RunDirectoryError, StorageError
from experiment.store.files import atomic_write_text, refuse_symlink


class DirectoryLock:
    """An exclusive, re-entrant lock on a run directory.

    Args:
        lock_path: the file that is locked.
        holder_path: where the holder's pid and host are written.
        timeout: seconds to wait for another process before giving up.
    """

    def __init__(self, lock_path: Path, holder_path: Path, *, timeout: float = 0.5) -> None:
        self.lock_path = lock_path
        self.holder_path = holder_path
        self.timeout = timeout
        self._lock = filelock.UnixFileLock(str(lock_path), timeout=timeout, thread_local=False)

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or fail within ``timeout`` seconds naming the holder.

        Raises:
            DirectoryLockedError: another live process holds the lock.
            RunDirectoryError: the lock or holder file is a symbolic link, or the run directory is
                read-only.
        """
        refuse_symlink(self.lock_path)
        refuse_symlink(self.holder_path)
        already_held = self._lock.is_locked
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise DirectoryLockedError(
                f"{self.lock_path.parent} is in use by another process ({describe_holder(self.holder_path)}). "
                "Wait for it to finish or stop it; the lock is released as soon as it exits."
            ) from None
        except PermissionError as error:
            raise self._read_only(error) from error
        if already_held:
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            atomic_write_text(self.holder_path, json.dumps(holder))
        except StorageError as error:
            self._lock.release()
            raise self._read_only(error) from error

    def _read_only(self, error: OSError) -> RunDirectoryError:
        return RunDirectoryError(
            f"Cannot lock {self.lock_path.parent}: it is read-only ({error.strerror or error}). The run "
            "directory must be writable to train, test or clean it; fix its permissions (chmod u+w) or "
            "copy it somewhere writable."
        )

    def release(self) -> None:
        self._lock.release()


def read_holder(holder_path: Path) -> dict[str, Any] | None:
    """The pid and host last written by a lock holder, or None (also for anything but a plain file)."""
    try:
        if not stat.S_ISREG(os.lstat(holder_path).st_mode):  # a FIFO would block the reader
            return None
        holder = json.loads(holder_path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder_path: Path) -> str:
    holder = read_holder(holder_path)
    if holder is None:
        return "holder unknown"
    return f"pid {holder.get('pid')} on host {holder.get('host')}"


def is_locked(lock_path: Path) -> bool:
    """Whether a live process holds the lock (tries to take it without waiting; never through a link)."""
    if lock_path.is_symlink() or not lock_path.is_file():
        return False
    probe = filelock.UnixFileLock(str(lock_path), timeout=0, thread_local=False)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False
