"""The OS-level lock that keeps a second process out of a run directory.

The lock is a ``flock`` on a file, held through ``filelock``: the kernel drops it when the holding
process dies, even by ``kill -9``, so no stale lock survives. Who holds it (pid, host, since when) is
written to a separate file, because a process failing to take the lock must not truncate it.

A process that only reads a run it cannot write (a run on a read-only mount, shared as results, or
another user's run) takes a shared ``flock`` through a read-only descriptor instead: the kernel's
lock is on the file, whichever mount reaches it, so a writer still keeps such readers out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from experiment.errors import DirectoryLockedError, RunDirectoryError, StorageError
from experiment.store.files import atomic_write_text, os_error_in, read_only_mount_message, refuse_symlink

#: What opening a file to write reports where this process may not write: a read-only mount, or
#: permissions (another user's run).
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
#: Seconds between two tries of a shared lock while a writer holds the exclusive one.
_POLL_INTERVAL = 0.05


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
            raise self._in_use() from None
        except OSError as error:
            if error.errno not in _READ_ONLY_ERRNOS:
                raise
            raise self._read_only(error) from error
        if already_held:
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            atomic_write_text(self.holder_path, json.dumps(holder))
        except StorageError as error:
            self._lock.release()
            raise self._read_only(os_error_in(error) or error) from error

    def _read_only(self, error: OSError) -> RunDirectoryError:
        folder = self.lock_path.parent
        if error.errno == errno.EROFS:
            return RunDirectoryError(read_only_mount_message(folder))
        return RunDirectoryError(
            f"Cannot lock {folder}: it is read-only ({error.strerror or error}). The run "
            "directory must be writable to train, test or clean it; fix its permissions (chmod u+w) or "
            "copy it somewhere writable."
        )

    def release(self) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock while the block reads the run's files (saved weights, to predict with).

        Where this process may write the directory, that is the exclusive lock of :meth:`acquire`.
        Where it may not (a read-only mount, another user's run), it is a shared ``flock`` taken
        through a read-only descriptor of the lock file, and nothing is written: a writer holds the
        exclusive lock of the same file, whichever mount it writes through, so it still keeps this
        reader out. Without a lock file, no process has ever written the run under its lock.

        Raises:
            DirectoryLockedError: another live process holds the lock.
            RunDirectoryError: the lock or holder file is a symbolic link.
        """
        if self._writable():
            with self:
                yield
            return
        refuse_symlink(self.lock_path)
        fd = _open_to_read(self.lock_path)  # None: no lock file, or unreadable; nothing to share
        try:
            if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
                self._share(fd)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the shared lock

    def _writable(self) -> bool:
        """Whether this process may create or open the lock file and replace the holder file."""
        folder = self.lock_path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return False
        return not self.lock_path.exists() or os.access(self.lock_path, os.W_OK)

    def _share(self, fd: int) -> None:
        """A shared flock on ``fd``, waiting up to ``timeout`` seconds for a writer to leave."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise self._in_use() from None
                time.sleep(_POLL_INTERVAL)

    def _in_use(self) -> DirectoryLockedError:
        return DirectoryLockedError(
            f"{self.lock_path.parent} is in use by another process ({describe_holder(self.holder_path)}). "
            "Wait for it to finish or stop it; the lock is released as soon as it exits."
        )


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
    """Whether a live process holds the lock: tries a shared lock without waiting, through a
    read-only descriptor (so that a run on a read-only mount is probed too; never through a link)."""
    if lock_path.is_symlink() or not lock_path.is_file():
        return False
    fd = _open_to_read(lock_path)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def _open_to_read(lock_path: Path) -> int | None:
    """A read-only descriptor of the lock file, enough for flock (None: none, or unreadable). Never
    through a link, and never blocking on a FIFO put in its place."""
    try:
        return os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
