"""Random-state capture and restore, seeding, and the generators of data loaders.

A random-state snapshot is plain data and tensors (so ``torch.load(weights_only=True)`` reads it):
Python's ``random``, NumPy's global generator, torch's CPU generator, each CUDA device's generator,
and every ``torch.Generator`` held by the given data loaders or their samplers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from experiment.errors import StateMismatchError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def find_generators(loaders: Iterable[Any]) -> list[torch.Generator]:
    """Return the distinct ``torch.Generator`` objects held by loaders and their samplers."""
    found: list[torch.Generator] = []
    for loader in loaders:
        holders = [loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
        inner = getattr(holders[2], "sampler", None)
        holders.append(inner)
        holders.append(getattr(inner, "sampler", None))
        for holder in holders:
            generator = getattr(holder, "generator", None)
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


def find_epoch_samplers(loaders: Iterable[Any]) -> list[Any]:
    """The samplers of ``loaders`` whose order is set per pass with ``set_epoch`` (a
    DistributedSampler keeps no generator: its order is a function of its seed and that epoch),
    and their batch samplers that say so (``ordered_by_pass``: an elastic run's)."""
    found: list[Any] = []
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        batch_sampler = getattr(batch_sampler, "inner", batch_sampler)  # a SkippingSampler's
        own = batch_sampler if getattr(batch_sampler, "ordered_by_pass", False) else None
        holders = (getattr(loader, "sampler", None), own, getattr(batch_sampler, "sampler", None))
        for holder in holders:
            if callable(getattr(holder, "set_epoch", None)) and all(holder is not s for s in found):
                found.append(holder)
    return found


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Snapshot every random generator the training can draw from."""
    return {
        "python": _python_entry(random.getstate()),
        "numpy": _numpy_entry(np.random.get_state(legacy=True)),  # type: ignore[arg-type]
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [generator.get_state() for generator in generators],
    }


def _python_entry(state: Any) -> list[Any]:
    """Python's ``random`` state as plain data and a tensor (a checkpoint holds no tuples of ints)."""
    version, mt_state, gauss = state
    return [version, torch.tensor(mt_state, dtype=torch.int64), gauss]


def _numpy_entry(state: Any) -> list[Any]:
    """NumPy's legacy random state (kind, keys, position, gauss flag, gauss) with its keys as a tensor."""
    kind, keys, position, has_gauss, gauss = state
    return [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss]


def restore_rng(snapshot: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Put every generator back in the state captured by :func:`capture_rng`."""
    version, mt_state, gauss = snapshot["python"]
    random.setstate((version, tuple(mt_state.tolist()), gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = snapshot["numpy"]
    keys = np_keys.numpy().astype(np.uint32)
    np.random.set_state((np_kind, keys, np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(snapshot["torch"])
    if snapshot["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(snapshot["cuda"])
    elif "cuda_seed" in snapshot and torch.cuda.is_available():  # a derived snapshot
        torch.cuda.manual_seed_all(snapshot["cuda_seed"])
    generators = list(generators)
    saved = snapshot["generators"]
    if len(saved) != len(generators):
        raise StateMismatchError(
            f"The random state holds {len(saved)} data-loader generator state(s) but {len(generators)} "
            "generator(s) were given."
        )
    for generator, state in zip(generators, saved):
        generator.set_state(state)


def derived_rng(seed: int, generators: int = 0) -> dict[str, Any]:
    """A snapshot in :func:`capture_rng`'s form of every generator seeded from ``seed``, with
    ``generators`` data-loader generators, made without touching the process's own generators.

    Example:
        >>> restore_rng(derived_rng(7))  # as if Python, NumPy and torch had been seeded from 7
    """
    return {
        "python": _python_entry(random.Random(seed).getstate()),
        "numpy": _numpy_entry(np.random.RandomState(seed % 2**32).get_state(legacy=True)),  # type: ignore[arg-type]
        "torch": torch.Generator().manual_seed(seed).get_state(),
        "cuda": [],
        "cuda_seed": seed,
        "generators": [
            torch.Generator().manual_seed((seed + 1 + index) % 2**63).get_state()
            for index in range(generators)
        ],
    }


class RandomState:
    """The ``rng`` node of a run's state tree: the random state to put back when training resumes.

    A commit saves the random state of its moment (``step``) and the one captured when the loader's
    current pass began (``pass``, with ``pass_step``, the steps of the epoch done by then), from
    which a mid-epoch resume redraws the pass's data order before it restores ``step``. Samplers
    ordered by ``set_epoch`` (DistributedSampler) get the index of each pass (``pass_index``,
    counted over the whole run), and the current one again when a pass is redrawn.

    Args:
        generators: the ``torch.Generator`` objects of the data loaders (:func:`find_generators`),
            saved and restored with the rest.
        samplers: the samplers to give each pass's index (:func:`find_epoch_samplers`).

    Example:
        >>> rng = RandomState(find_generators([loader]), find_epoch_samplers([loader]))
        >>> rng.pass_started(0)
    """

    def __init__(self, generators: Iterable[torch.Generator] = (), samplers: Iterable[Any] = ()) -> None:
        self.generators = list(generators)
        self.samplers = list(samplers)
        self.reset()

    def reset(self) -> None:
        """Forget the snapshots of an earlier run (a fresh start)."""
        self.pass_snapshot: dict[str, Any] | None = None
        self.pass_step = 0
        self.pass_index = -1
        #: The saved ``step`` snapshot, put back by :meth:`restore_step` once training resumes.
        self.pending_step: dict[str, Any] | None = None
        self._pinned: dict[str, Any] | None = None

    def pass_started(self, steps_done: int) -> None:
        """The loader starts a pass now, ``steps_done`` steps into the epoch."""
        self.pass_snapshot, self.pass_step = capture_rng(self.generators), steps_done
        self.pass_index += 1
        for sampler in self.samplers:
            sampler.set_epoch(self.pass_index)

    def epoch_finished(self) -> None:
        self.pass_snapshot, self.pass_step = None, 0

    def pin(self) -> None:
        """Make commits save the random state of now until :meth:`unpin` (an interrupt during
        validation commits the state of the end of training)."""
        self._pinned = capture_rng(self.generators)

    def unpin(self) -> None:
        self._pinned = None

    def restore_pass(self) -> None:
        """Put back the random state of the start of the interrupted pass."""
        if self.pass_snapshot is not None:
            restore_rng(self.pass_snapshot, self.generators)
        for sampler in self.samplers:
            sampler.set_epoch(self.pass_index)

    def restore_step(self) -> None:
        """Put back the random state of the committed moment, once (no-op on a fresh run)."""
        if self.pending_step is not None:
            restore_rng(self.pending_step, self.generators)
            self.pending_step = None

    # ---------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        step = self._pinned if self._pinned is not None else capture_rng(self.generators)
        return {
            "step": step,
            "pass": self.pass_snapshot,
            "pass_step": self.pass_step,
            "pass_index": self.pass_index,
        }

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        saved = len(state_dict["step"]["generators"])
        if saved == len(self.generators):
            return []
        return [
            f"the checkpoint holds {saved} data-loader generator state(s) but the loaders given now "
            f"hold {len(self.generators)}; pass loaders built the same way as in the interrupted run "
            "(same generator= arguments)"
        ]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending_step = state_dict["step"]
        self.pass_snapshot = state_dict["pass"]
        self.pass_step = int(state_dict["pass_step"])
        self.pass_index = int(state_dict.get("pass_index", -1))  # absent from older checkpoints
        self._pinned = None
