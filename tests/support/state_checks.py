"""Comparisons of what two run directories hold, shared by the resume, storage and signal tests.

A run that was interrupted and resumed must end with the same committed state as one that was not:
the same network, optimizer, schedulers, callbacks, best-epoch tracker, loop position, history and
random state. Only wall-clock times and the count of commits may differ: the paths of
:data:`VOLATILE_PATHS`, skipped by place in the tree, not by name (a metric called "time" that a
model logs elsewhere is still compared).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

#: Paths in a state file whose values legitimately differ between an interrupted and an
#: uninterrupted run: segments joined by "/", "*" matches one segment (or part of one), "**" any
#: number of segments. Format 2 files hold ``nodes/<name>``; format 1 files held ``loop``,
#: ``callbacks``, ... at the top.
VOLATILE_PATHS = (
    "serial",  # the count of commits
    "run_id",  # each run directory has its own identity
    "nodes/progress/epoch_time",  # seconds spent in the epoch so far
    "nodes/progress/history/*/time",  # each epoch's duration
    "nodes/callbacks/**/*CSVLogger*/size",  # bytes of a CSV file whose time column varies in length
    "nodes/callbacks/**/*MLFlowLogger*/pending/*/3",  # the wall-clock stamp of unsent records
    "loop/epoch_time",
    "loop/history/*/time",
    "callbacks/**/*CSVLogger*/size",
    "callbacks/**/*MLFlowLogger*/pending/*/3",
)

_PATTERNS = tuple(tuple(pattern.split("/")) for pattern in VOLATILE_PATHS)


def is_volatile(path: Sequence[str]) -> bool:
    """Whether the value at ``path`` (the keys and indices from the root, as text) is volatile."""
    return any(_matches(tuple(path), pattern) for pattern in _PATTERNS)


def child_path(path: tuple[str, ...], key: Any) -> tuple[str, ...]:
    """The path of ``key`` below ``path``; a node name such as "callbacks/<state_key>" gives two segments."""
    return (*path, *str(key).split("/"))


def _matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_matches(path[start:], pattern[1:]) for start in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _matches(path[1:], pattern[1:])


def state_files(run_dir: Path) -> list[Path]:
    """The full-state checkpoints of ``run_dir``, oldest first."""
    return sorted((run_dir / "checkpoints").glob("state-*.pt"))


def newest_state(run_dir: Path) -> dict[str, Any]:
    """The newest state checkpoint, loaded the way a user would (weights_only)."""
    paths = state_files(run_dir)
    assert paths, f"{run_dir} holds no state checkpoint"
    return torch.load(paths[-1], map_location="cpu", weights_only=True)


def assert_same_tree(a: Any, b: Any, where: str = "state", path: tuple[str, ...] = ()) -> None:
    """Recursively equal; tensors bit for bit (dtype included); :data:`VOLATILE_PATHS` skipped.

    ``path`` is where ``a`` and ``b`` sit in a state file (empty for a whole file).
    """
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: dict vs {type(b).__name__}"
        keys_a = {key for key in a if not is_volatile(child_path(path, key))}
        keys_b = {key for key in b if not is_volatile(child_path(path, key))}
        assert keys_a == keys_b, f"{where}: keys {sorted(map(str, keys_a ^ keys_b))} differ"
        for key in keys_a:
            assert_same_tree(a[key], b[key], f"{where}[{key!r}]", child_path(path, key))
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for index, (item_a, item_b) in enumerate(zip(a, b, strict=True)):
            if not is_volatile(child_path(path, index)):
                assert_same_tree(item_a, item_b, f"{where}[{index}]", child_path(path, index))
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{where}: {a!r} != {b!r}"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def read_log(run_dir: Path, name: str = "log.tsv") -> pd.DataFrame:
    return pd.read_csv(run_dir / name, sep="\t")


def assert_same_log(dir_a: Path, dir_b: Path) -> None:
    """log.tsv equal in every column but time (same columns, same order, same values)."""
    log_a, log_b = read_log(dir_a), read_log(dir_b)
    assert list(log_a.columns) == list(log_b.columns)
    log_a, log_b = log_a.drop(columns="time"), log_b.drop(columns="time")
    assert log_a.equals(log_b), f"\n{log_a}\n!=\n{log_b}"


def assert_same_best(dir_a: Path, dir_b: Path) -> None:
    """The same best-weights files, holding the same tensors."""
    best_a = sorted(p.name for p in (dir_a / "checkpoints").glob("best-*.pt"))
    best_b = sorted(p.name for p in (dir_b / "checkpoints").glob("best-*.pt"))
    assert best_a == best_b
    for name in best_a:
        assert_same_tree(
            torch.load(dir_a / "checkpoints" / name, weights_only=True),
            torch.load(dir_b / "checkpoints" / name, weights_only=True),
            name,
            (name,),  # weights, not a state file: no path of VOLATILE_PATHS applies
        )


def assert_same_run(dir_a: Path, dir_b: Path) -> None:
    """Same final committed state (random state included), same log, same best weights."""
    assert_same_tree(newest_state(dir_a), newest_state(dir_b))
    assert_same_log(dir_a, dir_b)
    assert_same_best(dir_a, dir_b)


def snapshot_files(run_dir: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time (ns) of every file below ``run_dir`` but those named in ``ignore``."""
    return {
        str(path.relative_to(run_dir)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name not in ignore
    }
