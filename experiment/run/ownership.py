"""Which process owns a run directory: the only one, or rank 0 of a distributed run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from experiment.store.directory import RunDirectory
from experiment.training.distributed import World


@contextlib.contextmanager
def owned(
    directory: RunDirectory, world: World, *, prepare: bool = False, then: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold ``directory``'s lock for the block: rank 0 takes it (after creating the directory when
    ``prepare``, and runs ``then`` once it holds it); every rank raises rank 0's error if it could not.

    Raises:
        DirectoryLockedError: another process holds the directory.
    """
    with contextlib.ExitStack() as stack:

        def take() -> None:
            if prepare:
                directory.prepare()
            stack.enter_context(directory.lock())
            if then is not None:
                then()

        world.on_main(take)
        yield


def callbacks_of_rank(callbacks: Sequence[Any], world: World) -> list[Any]:
    """The callbacks this process runs: all on rank 0; on the other ranks, those that do more than
    write files or show progress (``main_process_only`` False)."""
    return [cb for cb in callbacks if world.is_main or not getattr(cb, "main_process_only", False)]
