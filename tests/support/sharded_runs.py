"""A run directory whose commits are folders of shards, made in one process from a trained run.

FSDP2 runs need torchrun (tests/distributed/test_fsdp.py launches one); read-side tests use this
instead: each commit file of a run trained in one process is rewritten as the directory commit
backend leaves one (DCP files of the model and optimizer nodes, written by one process without a
process group, ``.metadata`` and ``tree.pt`` recording its digest), so that the weights it holds are
known: those of the run trained.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from experiment.store import shards
from experiment.store.checkpoint_unit import TREE_FILE
from experiment.store.directory import RunDirectory
from experiment.store.files import save_tensors

SHARDED_NODES = ("model", "optimizer")


def shard_commits(run_dir: Path, *, names: list[str]) -> list[Path]:
    """Rewrite every commit file of ``run_dir`` as a folder of shards; return the folders. The
    optimizer's state is keyed by parameter name there, as FSDP2 saves it: ``names`` are those of
    its parameters in order (the network's ``named_parameters()`` for an optimizer of them all)."""
    directory = RunDirectory(run_dir)
    folders = []
    for checkpoint in directory.checkpoints():
        tree = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
        folder = directory.state_dir_path(checkpoint.serial)
        folder.mkdir()
        tensors = {}
        optimizer = tree["nodes"]["optimizer"]
        tree["nodes"]["optimizer"] = {
            "state": {names[index]: value for index, value in optimizer["state"].items()},
            "param_groups": [
                {**group, "params": [names[index] for index in group["params"]]}
                for group in optimizer["param_groups"]
            ],
        }
        for name in SHARDED_NODES:
            skeleton, found = shards.split(tree["nodes"][name], name)
            tensors.update(found)
            tree["nodes"][name] = {"sharded": {"prefix": name, "skeleton": skeleton}}
        with warnings.catch_warnings():  # one process writing shards is what is meant
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            shards.save(tensors, folder)
        digest = shards.digest(folder / shards.METADATA)
        for name in SHARDED_NODES:
            tree["nodes"][name]["sharded"]["metadata_sha256"] = digest
        save_tensors(folder / TREE_FILE, tree)
        checkpoint.path.unlink()
        folders.append(folder)
    return folders
