"""LRSchedulerCallback.load_state and Experiment.load_optimizer_state: the files of the checkpoint
savers loaded back, through the safe loader."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from experiment import (
    Experiment,
    LRSchedulerCheckpoint,
    OptimizerCheckpoint,
    ReduceLROnPlateau,
    StateMismatchError,
    StepLR,
    UnsafeCheckpointError,
)
from tests.support.sharded_runs import shard_commits
from tests.support.training import make_data, make_experiment


class RunsCommand:
    """Unpickling this object would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Path]:
    """The scheduler and optimizer files of a 2-epoch run (StepLR halving the lr each epoch)."""
    scheduler_path, optimizer_path = tmp_path / "scheduler.pt", tmp_path / "optimizer.pt"
    exp = make_experiment(tmp_path / "first")
    callbacks = [
        LRSchedulerCheckpoint(StepLR(step_size=1, gamma=0.5), str(scheduler_path)),
        OptimizerCheckpoint(str(optimizer_path)),
    ]
    exp.train(make_data(), epochs=2, callbacks=callbacks, progress=False)
    return scheduler_path, optimizer_path


def test_load_state_continues_the_schedule_of_the_saved_scheduler(tmp_path: Path, saved):
    scheduler_path, optimizer_path = saved
    scheduler = StepLR(step_size=1, gamma=0.5)
    scheduler.load_state(scheduler_path)
    assert scheduler.state_dict()["last_epoch"] == 2
    exp = make_experiment(tmp_path / "second")
    exp.load_optimizer_state(optimizer_path)
    exp.train(make_data(), epochs=2, callbacks=[scheduler], progress=False)
    assert exp.logs["lr"].tolist() == pytest.approx([0.025, 0.0125])


def test_load_optimizer_state_restores_the_saved_state(tmp_path: Path, saved):
    _, optimizer_path = saved
    exp = make_experiment(tmp_path / "second")
    exp.load_optimizer_state(str(optimizer_path))
    expected = torch.load(optimizer_path, weights_only=True)
    state = exp.optimizer.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    for index, values in expected["state"].items():
        assert torch.equal(state["state"][index]["momentum_buffer"], values["momentum_buffer"])


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_loading_helpers_refuse_files_that_would_run_code(tmp_path: Path, writer: str):
    marker, path = tmp_path / "marker", tmp_path / "planted.pt"
    payload = {"last_epoch": 1, "state": RunsCommand(f"touch {marker}")}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    scheduler = StepLR(step_size=1)
    exp = make_experiment(tmp_path / "run")
    before = exp.optimizer.state_dict()
    with pytest.raises(
        UnsafeCheckpointError, match=r"would call (posix|os)\.system. Nothing from it was executed"
    ):
        scheduler.load_state(path)
    with pytest.raises(UnsafeCheckpointError, match=r"would call (posix|os)\.system"):
        exp.load_optimizer_state(path)
    assert not marker.exists()
    assert scheduler.state_dict() == {}
    assert exp.optimizer.state_dict() == before


def test_load_state_refuses_what_is_not_a_scheduler_state(tmp_path: Path, saved):
    _, optimizer_path = saved
    with pytest.raises(StateMismatchError, match=r"optimizer\.pt: StepLR: .*no 'last_epoch'"):
        StepLR(step_size=1).load_state(optimizer_path)


def test_load_state_of_reduce_lr_on_plateau_keeps_its_monitor(tmp_path: Path):
    path = tmp_path / "plateau.pt"
    exp = make_experiment(tmp_path / "run")
    saver = LRSchedulerCheckpoint(ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5), str(path))
    exp.train(make_data(), epochs=2, callbacks=[saver], progress=False)
    plateau = ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5)
    plateau.load_state(path)
    assert plateau.state_dict() == saver.lr_scheduler.state_dict()


def test_load_optimizer_state_refuses_states_that_do_not_fit(tmp_path: Path, saved):
    scheduler_path, optimizer_path = saved
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(StateMismatchError, match=r"scheduler\.pt holds a dict with the keys .*'last_epoch'"):
        exp.load_optimizer_state(scheduler_path)
    other = nn.Linear(6, 3)
    small = Experiment(tmp_path / "small", other, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(
        StateMismatchError, match=r"does not fit the optimizer: .*holds 2 parameter\(s\) now but 4"
    ):
        small.load_optimizer_state(optimizer_path)


def test_load_optimizer_state_reads_the_optimizer_of_a_commit_of_a_run(tmp_path: Path):
    trained = make_experiment(tmp_path / "first")
    trained.train(make_data(), epochs=2, progress=False)
    commit = sorted((tmp_path / "first" / "checkpoints").glob("state-*.pt"))[-1]
    exp = make_experiment(tmp_path / "second")
    exp.load_optimizer_state(commit)
    expected, state = trained.optimizer.state_dict(), exp.optimizer.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    assert state["state"].keys() == expected["state"].keys()
    for index, values in expected["state"].items():
        assert torch.equal(state["state"][index]["momentum_buffer"], values["momentum_buffer"])


def test_load_optimizer_state_reads_a_folder_of_shards_whole_in_one_process(tmp_path: Path):
    """A commit written as FSDP2 writes one (tests/support/sharded_runs.py); the 2-rank case is in
    tests/distributed/test_fsdp.py."""
    trained = make_experiment(tmp_path / "first")
    trained.train(make_data(), epochs=2, progress=False)
    folder = shard_commits(tmp_path / "first", names=[n for n, _ in trained.network.named_parameters()])[0]
    exp = make_experiment(tmp_path / "second")
    exp.load_optimizer_state(folder)
    expected, state = trained.optimizer.state_dict(), exp.optimizer.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    for index, values in expected["state"].items():
        assert torch.equal(state["state"][index]["momentum_buffer"], values["momentum_buffer"])
    other = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))  # other parameter names
    small = Experiment(tmp_path / "small", other, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    before = small.optimizer.state_dict()
    with pytest.raises(
        StateMismatchError, match=r"names the parameters \['3\.bias', '3\.weight'\], which the"
    ):
        small.load_optimizer_state(folder)
    assert small.optimizer.state_dict() == before
