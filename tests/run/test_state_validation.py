"""Resuming validates the whole saved state tree before anything is applied.

A run whose objects changed between two processes (another number of loader generators, a
callback whose saved state no longer fits) is refused with one error listing the problem; the
network, the optimizer and the files keep what they had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiment import Callback
from experiment.errors import StateMismatchError
from tests.support.state_checks import snapshot_files
from tests.support.training import make_data, make_experiment, train_run

LOCK_FILES = (".lock", ".lock.holder")


class Remembers(Callback):
    """A stateful callback that refuses saved states with another ``size`` (it can check first)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.seen = 0

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seen": self.seen}

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        if state_dict["size"] != self.size:
            return [f"Remembers: saved for size {state_dict['size']}, given size {self.size}"]
        return []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen = state_dict["seen"]


def _loader(seed: int | None) -> DataLoader:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*make_data()), batch_size=16, shuffle=True, generator=generator)


def test_resume_with_another_number_of_loader_generators_changes_nothing(tmp_path: Path):
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match="interrupted at step 8"):
        exp = make_experiment(run_dir)
        exp.train(_loader(None), make_data(48, seed=2), epochs=3, checkpoint_every=4, callbacks=[_StopAt(8)])
    before = snapshot_files(run_dir, ignore=LOCK_FILES)
    again = make_experiment(run_dir)
    weights = {key: value.clone() for key, value in again.network.state_dict().items()}
    with pytest.raises(
        StateMismatchError, match=r"holds 0 data-loader generator state\(s\) but the loaders given now hold 1"
    ):
        again.train(_loader(5), make_data(48, seed=2), epochs=3, checkpoint_every=4)
    assert snapshot_files(run_dir, ignore=LOCK_FILES) == before
    assert all(torch.equal(value, weights[key]) for key, value in again.network.state_dict().items())
    assert again.loop.global_step == 0


def test_resume_with_a_callback_whose_state_does_not_fit_applies_nothing(tmp_path: Path):
    run_dir = tmp_path / "run"
    train_run(run_dir, epochs=2, callbacks=lambda: [Remembers(size=3)])
    before = snapshot_files(run_dir, ignore=LOCK_FILES)
    again = make_experiment(run_dir)
    weights = {key: value.clone() for key, value in again.network.state_dict().items()}
    changed = Remembers(size=4)
    with pytest.raises(StateMismatchError, match="Remembers: saved for size 3, given size 4") as raised:
        again.train(make_data(), make_data(48, seed=2), epochs=3, callbacks=[changed])
    assert "Nothing was loaded and the directory was not changed" in str(raised.value)
    assert changed.seen == 0 and again.loop.epochs_completed == 0
    assert all(torch.equal(value, weights[key]) for key, value in again.network.state_dict().items())
    assert snapshot_files(run_dir, ignore=LOCK_FILES) == before


def test_resume_callback_state_is_saved_under_its_state_key(tmp_path: Path):
    class Named(Remembers):
        state_key = "my-counter"

    run_dir = tmp_path / "run"
    train_run(run_dir, epochs=2, callbacks=lambda: [Named(size=1), Named(size=1)])
    tree = torch.load(sorted((run_dir / "checkpoints").glob("state-*.pt"))[-1], weights_only=True)
    assert (
        tree["nodes"]["callbacks/my-counter"]
        == tree["nodes"]["callbacks/my-counter#2"]
        == {"size": 1, "seen": 2}
    )


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step:
            raise RuntimeError(f"interrupted at step {self.step}")
