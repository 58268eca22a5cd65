"""The comparisons the scenarios script makes, as functions returning problems (empty: all is well).

Each takes what was gathered from every rank (a list indexed by rank) or the files of a run
directory, and says in words what differs, so that the pytest side can show it as it is.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data.distributed import DistributedSampler

from tests.support.run_comparison import tree_differences
from tests.support.state_checks import newest_state


def without_time(history: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if history is None:
        return None
    return [{key: value for key, value in row.items() if key != "time"} for row in history]


def history_problems(reference: list[Any], resumed: list[Any]) -> list[str]:
    """Every rank returns the same history, and the resumed run the reference's (time aside)."""
    problems = []
    for label, histories in (("uninterrupted", reference), ("resumed", resumed)):
        for rank, history in enumerate(histories):
            if without_time(history) != without_time(histories[0]):
                problems.append(
                    f"{label} run: rank {rank} returned another history than rank 0:\n"
                    f"  rank 0: {without_time(histories[0])}\n  rank {rank}: {without_time(history)}"
                )
    for rank, (expected, actual) in enumerate(zip(reference, resumed)):
        if without_time(expected) != without_time(actual):
            problems.append(
                f"rank {rank}: the resumed run's history differs from the uninterrupted one's:\n"
                f"  uninterrupted: {without_time(expected)}\n  resumed:       {without_time(actual)}"
            )
    return problems


def log_problems(run_dir: Path, history: list[dict[str, Any]] | None) -> list[str]:
    """log.tsv holds, row by row, the values of the history that train returned."""
    if history is None:
        return ["train returned no history"]
    log = pd.read_csv(run_dir / "log.tsv", sep="\t")
    if len(log) != len(history):
        return [f"{run_dir.name}/log.tsv has {len(log)} rows; the history has {len(history)} epochs"]
    problems = []
    for index, (row, logged) in enumerate(zip(history, log.to_dict("records"))):
        for key, value in row.items():
            if key == "time":
                continue
            if key not in logged:
                problems.append(
                    f"{run_dir.name}/log.tsv has no column {key!r} (columns: {list(log.columns)})"
                )
            elif not same_number(value, logged[key]):
                problems.append(
                    f"{run_dir.name}/log.tsv row {index + 1}, {key}: {logged[key]!r} != {value!r}"
                )
    return problems


def same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def state_problems(rank: int, expected: dict[str, Any], actual: dict[str, Any], what: str) -> list[str]:
    """Two in-memory states (network or optimizer) of one rank, bit for bit."""
    return [f"rank {rank}: {what}{difference}" for difference in tree_differences(expected, actual)]


def stream_problems(reference: list[Any], resumed: list[Any]) -> list[str]:
    """Per-rank random draws after training: distinct between ranks, the same after a resume."""
    problems = []
    if len({json.dumps(f) for f in reference}) != len(reference):
        problems.append(f"the ranks drew the same numbers after training (one random stream?): {reference}")
    for rank, (expected, actual) in enumerate(zip(reference, resumed)):
        if expected != actual:
            problems.append(
                f"rank {rank}: draws after the resumed run {actual} != after the uninterrupted run {expected}"
            )
    return problems


def checkpoint_problems(run_dir: Path, world_size: int, model_keys: list[str]) -> list[str]:
    """The newest state file as the spec describes it: every rank's random state and running
    sums under one node, the world size on top, the user's module saved without DDP's prefix."""
    state = newest_state(run_dir)  # torch.load(weights_only=True)
    problems = []
    if state.get("world_size") != world_size:
        problems.append(f"top-level world_size is {state.get('world_size')!r}, expected {world_size}")
    nodes = state.get("nodes", {})
    for name in ("rng", "train_metrics"):
        node = nodes.get(name)
        if not isinstance(node, dict) or set(node) != {"world_size", "ranks"}:
            keys = sorted(node) if isinstance(node, dict) else type(node).__name__
            problems.append(f"nodes[{name!r}] should be {{'world_size', 'ranks'}}; it holds {keys}")
            continue
        if node["world_size"] != world_size or len(node["ranks"]) != world_size:
            problems.append(
                f"nodes[{name!r}]: world_size {node['world_size']!r} with {len(node['ranks'])} ranks, "
                f"expected {world_size}"
            )
    rng = nodes.get("rng", {})
    ranks = rng.get("ranks", []) if isinstance(rng, dict) else []
    if len(ranks) >= 2 and not tree_differences(ranks[0], ranks[1]):
        problems.append("nodes['rng']: rank 0 and rank 1 saved the same random state")
    saved_keys = sorted(nodes.get("model", {}))
    if saved_keys != sorted(model_keys):
        problems.append(f"nodes['model'] keys {saved_keys} != the user's module's {sorted(model_keys)}")
    return problems


def writer_problems(run_dir: Path, pids: list[int], audits: list[list[str]]) -> list[str]:
    """Rank 0 alone writes: experiment.json and the lock holder name its pid, and the other ranks
    opened nothing for writing, renamed, removed or made nothing in the run directories."""
    problems = []
    metadata = json.loads((run_dir / "experiment.json").read_text())
    if metadata.get("pid") != pids[0]:
        problems.append(
            f"experiment.json pid {metadata.get('pid')!r}, expected rank 0's {pids[0]} (pids {pids})"
        )
    holder = run_dir / ".lock.holder"
    if holder.exists() and json.loads(holder.read_text()).get("pid") != pids[0]:
        problems.append(f".lock.holder names {holder.read_text()!r}, expected rank 0's pid {pids[0]}")
    for rank, events in enumerate(audits):
        if rank != 0 and events:
            problems.append(f"rank {rank} wrote in the run directories: {events[:10]}")
    return problems


def sampler_problems(loaded: list[list[list[int]]], samples: int, world_size: int, seed: int) -> list[str]:
    """Each epoch, rank r loaded the indices of DistributedSampler(seed=seed) for that pass, in
    order: the ranks' shares partition the dataset and the order changes from epoch to epoch."""
    problems = []
    epochs = len(loaded[0])
    if any(len(per_rank) != epochs for per_rank in loaded):
        return [f"the ranks saw different numbers of epochs: {[len(per_rank) for per_rank in loaded]}"]
    for epoch in range(epochs):
        shares = [per_rank[epoch] for per_rank in loaded]
        seen = sorted(index for share in shares for index in share)
        if samples % world_size == 0 and seen != list(range(samples)):
            problems.append(
                f"epoch {epoch + 1}: the ranks' shares are not a partition of the {samples} samples"
            )
        for rank, share in enumerate(shares):
            indices: Any = range(samples)  # a sampler needs only the length
            sampler: DistributedSampler[int] = DistributedSampler(
                indices, world_size, rank, shuffle=True, seed=seed
            )
            sampler.set_epoch(epoch)
            if share != list(sampler):
                problems.append(
                    f"epoch {epoch + 1}, rank {rank}: loaded {share}, expected DistributedSampler(seed={seed}) "
                    f"with set_epoch({epoch}): {list(sampler)}"
                )
    if epochs > 1 and loaded[0][0] == loaded[0][1]:
        problems.append("rank 0 loaded the same order in epochs 1 and 2 (set_epoch not called per pass?)")
    return problems


class WriteAudit:
    """Records, through a Python audit hook, every write-open, rename, removal and folder creation
    below ``root`` (files written by torch's C++ code directly are not seen)."""

    EVENTS = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.symlink", "os.link")
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.events: list[str] = []
        sys.addaudithook(self._hook)

    def take(self) -> list[str]:
        events, self.events = self.events, []
        return events

    def _below_root(self, path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            text = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        return text if text.startswith(self.root) else None

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path = self._below_root(args[0])
            if path is not None and isinstance(args[2], int) and args[2] & self.WRITE_FLAGS:
                self.events.append(f"open {path} mode={args[1]!r}")
        elif event in self.EVENTS:
            path = self._below_root(args[0])
            if path is not None:
                self.events.append(f"{event} {path}")


def validation_share(
    network: torch.nn.Module, valid: tuple[torch.Tensor, torch.Tensor], rank: int, world_size: int
) -> tuple[float, int]:
    """This rank's part of the validation loss over its unpadded share (samples rank, rank + world,
    ...), evaluated with the network as training left it: (sum of losses, count)."""
    x, y = valid
    network.eval()
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(
            network(x[rank::world_size]), y[rank::world_size], reduction="sum"
        )
    return float(losses), len(y[rank::world_size])


def saved_weights_problems(run_dir: Path, model_keys: list[str]) -> list[str]:
    """Every checkpoint file (state files' ``nodes/model``, best-epoch weights) holds the user's
    module's keys, none with DDP's ``module.`` prefix."""
    problems = []
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        weights = saved["nodes"]["model"] if path.name.startswith("state-") else saved
        prefixed = [key for key in weights if key.startswith("module.")]
        if prefixed or sorted(weights) != sorted(model_keys):
            problems.append(
                f"{run_dir.name}/checkpoints/{path.name}: weights {sorted(weights)}, expected the user's "
                f"module's {sorted(model_keys)} ({len(prefixed)} with the prefix 'module.')"
            )
    return problems


def to_plain(value: Any) -> Any:
    """Tensors as lists, so that the result file is JSON."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
