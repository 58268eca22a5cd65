"""Every way a killed and resumed run differs from its uninterrupted reference.

Every state checkpoint (weights, optimizer, schedulers, callbacks, loop position, random state) and
the best weights bit for bit, save the wall-clock times of
:data:`tests.support.state_checks.VOLATILE_PATHS`; log.tsv in every column but ``time``; each
TensorBoard scalar exactly once per epoch with the same value; the status "finished".
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from tests.support.state_checks import child_path, is_volatile


def run_differences(expected_dir: Path, actual_dir: Path, epochs: int) -> list[str]:
    """Every way ``actual_dir`` differs from ``expected_dir`` (empty when they are identical)."""
    problems = _compare_checkpoints(expected_dir / "checkpoints", actual_dir / "checkpoints")
    problems += _compare_log(expected_dir / "log.tsv", actual_dir / "log.tsv")
    problems += _compare_tensorboard(expected_dir / "tensorboard", actual_dir / "tensorboard", epochs)
    status = _status(actual_dir)
    if status != "finished":
        problems.append(f"experiment.json status is {status!r}, expected 'finished'")
    return problems


def _status(run_dir: Path) -> str | None:
    return json.loads((run_dir / "experiment.json").read_text()).get("status")


def _compare_checkpoints(expected_dir: Path, actual_dir: Path) -> list[str]:
    def names(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    if names(expected_dir) != names(actual_dir):
        return [f"checkpoint files differ: {names(expected_dir)} != {names(actual_dir)}"]
    problems: list[str] = []
    for name in names(expected_dir):
        expected, actual = _unit(expected_dir / name), _unit(actual_dir / name)
        problems += [f"{name}: {p}" for p in tree_differences(expected, actual)]
    return problems


def _unit(path: Path) -> Any:
    """A checkpoint file as loaded; a directory commit (FSDP2) as its tree file, without the digest
    of DCP's ``.metadata`` (which holds a save id), and its shards read whole."""
    if not path.is_dir():
        return torch.load(path, map_location="cpu", weights_only=True)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    tree = torch.load(path / "tree.pt", map_location="cpu", weights_only=True)
    for node in tree["nodes"].values():
        if isinstance(node, dict) and set(node) == {"sharded"}:
            node["sharded"].pop("metadata_sha256")
    with tempfile.TemporaryDirectory() as scratch:
        consolidated = Path(scratch) / "consolidated.pt"
        dcp_to_torch_save(path, consolidated)  # the test's own files: their metadata is trusted
        tree["shards"] = torch.load(consolidated, map_location="cpu", weights_only=True)
    return tree


def tree_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths ("/nodes/model/0.weight") where two trees of plain data and tensors differ.

    The wall-clock times and commit counts of :data:`~tests.support.state_checks.VOLATILE_PATHS`
    are ignored.
    """
    if path and is_volatile(child_path((), path.lstrip("/"))):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{path or '/'}: keys {sorted(map(str, expected))} != {sorted(map(str, actual))}"]
        return [d for key in expected for d in tree_differences(expected[key], actual[key], f"{path}/{key}")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(expected, actual, strict=True))
            for d in tree_differences(a, b, f"{path}/{i}")
        ]
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        same = (
            expected.dtype == actual.dtype
            and expected.shape == actual.shape
            and torch.equal(expected, actual)
        )
        return [] if same else [f"{path}: tensors differ"]
    if (
        isinstance(expected, float)
        and isinstance(actual, float)
        and math.isnan(expected)
        and math.isnan(actual)
    ):
        return []
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: {expected!r} != {actual!r}"]
    return []


def _log_without_time(path: Path) -> list[list[str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    column = rows[0].index("time")
    return [row[:column] + row[column + 1 :] for row in rows]


def _compare_log(expected: Path, actual: Path) -> list[str]:
    expected_rows, actual_rows = _log_without_time(expected), _log_without_time(actual)
    if expected_rows == actual_rows:
        return []
    return [f"log.tsv differs (time column aside):\n{expected_rows}\n!=\n{actual_rows}"]


def read_scalars(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) events as TensorBoard shows them (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(tensorboard_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _compare_tensorboard(expected_dir: Path, actual_dir: Path, epochs: int) -> list[str]:
    expected, actual = read_scalars(expected_dir), read_scalars(actual_dir)
    if sorted(expected) != sorted(actual):
        return [f"TensorBoard tags differ: {sorted(expected)} != {sorted(actual)}"]
    problems = []
    for tag, events in actual.items():
        steps = [step for step, _ in events]
        if steps != list(range(1, epochs + 1)):
            problems.append(f"TensorBoard {tag!r}: steps {steps}, expected each of 1..{epochs} once")
        elif tag != "time" and events != expected[tag]:
            problems.append(f"TensorBoard {tag!r}: values {events} != {expected[tag]}")
    return problems
