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


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Snapshot every random generator the training can draw from."""
    version, mt_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": [version, torch.tensor(mt_state, dtype=torch.int64), gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [generator.get_state() for generator in generators],
    }


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
    generators = list(generators)
    saved = snapshot["generators"]
    if len(saved) != len(generators):
        raise ValueError(
            f"The checkpoint holds {len(saved)} data-loader generator state(s) but the loaders "
            f"given now hold {len(generators)}. Pass loaders built the same way as in the "
            "interrupted run (same generator= arguments)."
        )
    for generator, state in zip(generators, saved):
        generator.set_state(state)
