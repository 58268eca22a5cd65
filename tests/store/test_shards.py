"""Directory commits on the read side: the units listed, and DCP's metadata read only once verified.

The shards here are written by one process (DCP without a process group, which warns that it
assumes a single process); tests/distributed/test_fsdp.py writes them with 2 ranks.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from experiment.errors import CheckpointError, StateMismatchError
from experiment.store import shards
from experiment.store.checkpoint_unit import TREE_FILE, Checkpoint
from experiment.store.checkpoints import load_checkpoint, load_newest_state
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors
from experiment.store.migration import TREE_FORMAT

SINGLE_PROCESS = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class Payload:
    """A pickle that creates the folder ``marker`` when it is unpickled: what a planted ``.metadata`` may hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def write_commit(directory: RunDirectory, serial: int, weight: float) -> Path:
    """A directory commit as the directory backend leaves it: shards, .metadata and tree.pt."""
    folder = directory.state_dir_path(serial)
    folder.mkdir(parents=True)
    state = {"weight": torch.full((2, 3), weight), "bias": torch.zeros(3)}
    skeleton, tensors = shards.split(state, "model")
    shards.save(tensors, folder)
    digest = shards.digest(folder / shards.METADATA)
    tree = {
        "format": TREE_FORMAT,
        "serial": serial,
        "reason": "epoch",
        "run_id": None,
        "world_size": 1,
        "classes": {"model": "Linear"},
        "nodes": {"model": {"sharded": {"prefix": "model", "skeleton": skeleton, "metadata_sha256": digest}}},
    }
    save_tensors(folder / TREE_FILE, tree)
    return folder


def test_shards_split_and_fill_give_back_the_state_with_tensors_keyed_by_path():
    state = {
        "state": {"0.weight": {"step": torch.tensor(3.0), "buf": None}},
        "param_groups": [{"lr": 0.1, "params": ["0.weight"]}],
    }
    skeleton, tensors = shards.split(state, "optimizer")
    assert list(tensors) == ["optimizer/state/0.weight/step"]
    assert skeleton["state"]["0.weight"] == {"step": {"@dcp": "optimizer/state/0.weight/step"}, "buf": None}
    assert shards.marked_keys(skeleton) == ["optimizer/state/0.weight/step"]
    assert shards.fill(skeleton, tensors) == state


@SINGLE_PROCESS
def test_shards_directory_commit_is_listed_with_files_newest_first(tmp_path: Path):
    directory = RunDirectory(tmp_path / "run")
    directory.checkpoints_dir.mkdir(parents=True)
    save_tensors(directory.state_path(1), {"x": 1})
    write_commit(directory, 2, 1.0)
    directory.temporary_state_dir(3).mkdir()  # a commit cut short: not a unit
    units = directory.checkpoints()
    assert [(unit.serial, unit.name, unit.sharded) for unit in units] == [
        (2, "state-000002", True),
        (1, "state-000001.pt", False),
    ]
    assert units[0].tree_path == directory.state_dir_path(2) / "tree.pt"
    files = list(directory.state_dir_path(2).iterdir())
    assert units[0].size() == sum(os.lstat(f).st_size for f in files) > 0
    assert directory.temporary_directories() == [directory.temporary_state_dir(3)]
    units[0].remove()
    assert not directory.state_dir_path(2).exists()
    assert [unit.name for unit in directory.checkpoints()] == ["state-000001.pt"]


@SINGLE_PROCESS
def test_shards_reader_tells_each_sharded_node_where_its_verified_shards_are(tmp_path: Path):
    directory = RunDirectory(tmp_path / "run")
    folder = write_commit(directory, 1, 2.0)
    tree = load_checkpoint(Checkpoint(1, folder))
    sharded = tree["nodes"]["model"]["sharded"]
    assert sharded["directory"] == str(folder)
    assert sharded["metadata_sha256"] == hashlib.sha256((folder / ".metadata").read_bytes()).hexdigest()
    live = {"weight": torch.zeros(2, 3), "bias": torch.ones(3)}
    loaded = shards.load_into(tree["nodes"]["model"], live, "network")
    assert torch.equal(loaded["weight"], torch.full((2, 3), 2.0)) and torch.equal(
        loaded["bias"], torch.zeros(3)
    )


@SINGLE_PROCESS
def test_shards_problems_name_missing_and_misshaped_tensors_and_a_whole_state(tmp_path: Path):
    directory = RunDirectory(tmp_path / "run")
    node = load_checkpoint(Checkpoint(1, write_commit(directory, 1, 2.0)))["nodes"]["model"]
    live = {"weight": torch.zeros(4, 3), "extra": torch.zeros(1)}
    problems = shards.problems(node, live, "network")
    assert problems == [
        "the checkpoint's network state lacks 'model/extra'",
        "the checkpoint's network state holds 'model/bias', which the network has not now",
        "network 'model/weight' has shape (4, 3) now, (2, 3) in the checkpoint",
    ]
    with pytest.raises(StateMismatchError, match="lacks 'model/extra'"):
        shards.load_into(node, live, "network")
    whole = shards.problems({"weight": torch.zeros(2, 3)}, live, "network")
    assert whole and "one whole state dict (written by another strategy)" in whole[0]


@SINGLE_PROCESS
def test_shards_planted_metadata_is_refused_by_name_and_never_unpickled(tmp_path: Path):
    directory = RunDirectory(tmp_path / "run")
    folder = write_commit(directory, 1, 1.0)
    marker = tmp_path / "executed"
    planted = pickle.dumps(Payload(marker))
    pickle.loads(planted)  # the payload is live: unpickling it creates the file
    assert marker.exists()
    marker.rmdir()
    (folder / ".metadata").write_bytes(planted)
    with pytest.raises(CheckpointError, match=rf"{folder / '.metadata'} is not the file that was committed"):
        load_newest_state(directory)
    assert not marker.exists()


@SINGLE_PROCESS
def test_shards_planted_metadata_falls_back_to_the_previous_sound_commit(tmp_path: Path):
    directory = RunDirectory(tmp_path / "run")
    write_commit(directory, 1, 1.0)
    newest = write_commit(directory, 2, 2.0)
    marker = tmp_path / "executed"
    (newest / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.warns(
        UserWarning, match=r"Skipped unreadable checkpoint\(s\).*state-000002/.metadata is not the file"
    ):
        found = load_newest_state(directory)
    assert found is not None and found[1].name == "state-000001"
    assert not marker.exists()
    sharded = found[0]["nodes"]["model"]
    loaded = shards.load_into(sharded, {"weight": torch.zeros(2, 3), "bias": torch.ones(3)}, "network")
    assert torch.equal(loaded["weight"], torch.ones(2, 3))
