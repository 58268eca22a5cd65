"""Commits: when a run commits its state, how the bytes reach the disk, and how a run resumes.

- :mod:`~experiment.run.commits.policy`: when (the commit points the loop signals: step
  checkpoints every ``checkpoint_every`` optimizer steps, signals, epoch ends) and what a commit
  holds (:mod:`~experiment.run.commits.commit`).
- :mod:`~experiment.run.commits.backend`: the protocol of how a commit reaches the disk, durably,
  and how superseded checkpoints leave it; one module per backend:
  :mod:`~experiment.run.commits.file_backend` (one file, serialized in the training thread and
  made durable by a background thread),
  :mod:`~experiment.run.commits.background_backend` (one file, written by a background thread),
  :mod:`~experiment.run.commits.directory_backend` (a folder of shards, for ``strategy="fsdp"``)
  and :mod:`~experiment.run.commits.async_directory_backend` (the same, written by a background
  thread on every rank);
  the file backends write a new best epoch's weights from their background thread, and on resume
  if a kill came first (:mod:`~experiment.run.commits.best_weights`); all of them keep and prune
  checkpoints by one rule (:mod:`~experiment.run.commits.retention`).
- :mod:`~experiment.run.commits.restorer`: choosing, checking and loading the checkpoint to resume.
- :mod:`~experiment.run.commits.committer`: the three built together for one run.

The policy and the restorer know the backend protocol only (an import-linter contract holds it):
a new backend is a new module, chosen by :func:`commit_backend`.
"""

from __future__ import annotations

from experiment.run.commits.backend import BackendFactory
from experiment.run.commits.background_backend import BackgroundFileBackend
from experiment.run.commits.committer import Committer
from experiment.run.commits.file_backend import FileBackend

__all__ = ["BackendFactory", "Committer", "commit_backend", "one_file_backend"]


def one_file_backend(asynchronous: bool) -> BackendFactory:
    """The backend of one file per commit, written by a background thread if ``asynchronous``."""
    return BackgroundFileBackend if asynchronous else FileBackend


def commit_backend(*, sharded: bool, asynchronous: bool) -> BackendFactory:
    """The backend of a run: a folder of shards per commit when the strategy shards the state
    (FSDP2), else one file; written by background threads if ``asynchronous``."""
    if not sharded:
        return one_file_backend(asynchronous)
    # Imported here: these import torch.distributed (a run of one process never needs them).
    if asynchronous:
        from experiment.run.commits.async_directory_backend import AsyncDirectoryBackend

        return AsyncDirectoryBackend
    from experiment.run.commits.directory_backend import DirectoryBackend

    return DirectoryBackend
