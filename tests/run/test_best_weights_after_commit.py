"""Synchronous commits write a new best epoch's weights after its state, from the writer thread.

Training goes on while the best weights are written; the next commit, the end of ``train()`` and
everything after it (``test(checkpoint="best")``) find them durable. A failed write (a real full
disk) comes back as StorageError with the last commit loadable, and resuming writes the missing
file from the committed state, ending as an uninterrupted run. A kill between the state and the
best weights is tested with a real process in tests/run/test_kill_best_weights.py.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import experiment.run.commits.best_weights as best_weights_module
from experiment import Callback, Experiment, StorageError
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.run.test_full_disk import small_disk  # noqa: F401 (a fixture)
from tests.support.state_checks import assert_same_run
from tests.support.training import make_data, train_run

#: How long a held best-weights write waits for the test to release it before it fails the test
#: (a guard against a hang, never reached when the test goes as planned).
HOLD_LIMIT_S = 120.0


class HeldBestWrite:
    """Holds the synchronous backend's write of ``best-epochNNNN.pt`` of ``epoch`` in the writer
    thread until :meth:`release` (other writes go through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
        self.name = f"best-epoch{epoch:04d}.pt"
        self.held = threading.Event()
        self.released = threading.Event()
        real_save = best_weights_module.save_tensors

        def held_save(path: Path, obj: Any, **options: Any) -> None:
            if path.name == self.name:
                self.held.set()
                if not self.released.wait(HOLD_LIMIT_S):
                    raise AssertionError(f"the write of {self.name} was never released")
            real_save(path, obj, **options)

        monkeypatch.setattr(best_weights_module, "save_tensors", held_save)

    def release(self) -> None:
        self.released.set()


class AtEpochBegin(Callback):
    """Calls ``action(names)`` at the beginning of epoch ``epoch``, ``names()`` listing the
    checkpoints folder when called."""

    def __init__(self, run_dir: Path, epoch: int, action: Any) -> None:
        super().__init__()
        self.run_dir, self.epoch, self.action = run_dir, epoch, action

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number == self.epoch:
            self.action(lambda: sorted(path.name for path in (self.run_dir / "checkpoints").iterdir()))


class WeightsAtEpochEnd(Callback):
    """Keeps a copy of the network's weights at the end of every epoch (just before its commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        state = self.trainer.network.state_dict()
        self.weights[epoch_number] = {key: value.detach().clone() for key, value in state.items()}


def test_best_weights_are_written_after_the_state_while_the_next_epoch_trains(tmp_path, monkeypatch):
    held = HeldBestWrite(monkeypatch, epoch=1)
    seen: list[list[str]] = []

    def look_then_release(names: Any) -> None:
        try:
            assert held.held.wait(HOLD_LIMIT_S)  # the writer thread comes to epoch 1's best weights
            seen.append(names())
        finally:
            held.release()

    train_run(
        tmp_path, epochs=2, progress=False, callbacks=lambda: [AtEpochBegin(tmp_path, 2, look_then_release)]
    )

    # Epoch 2 began while epoch 1's best weights were still to be written, its state committed...
    assert seen == [["state-000001.pt"]]
    # ...and the commit of epoch 2 waited for them (they stay as the fallback state's best).
    assert (tmp_path / "checkpoints" / "best-epoch0001.pt").is_file()


@pytest.mark.parametrize("copy_limit", [best_weights_module.COPY_LIMIT_BYTES, 0], ids=["copied", "read-back"])
def test_best_weights_are_durable_and_equal_their_epoch_weights_when_train_returns(
    tmp_path, monkeypatch, copy_limit
):
    # A network over the limit has its best weights read back from the committed state file.
    monkeypatch.setattr(best_weights_module, "COPY_LIMIT_BYTES", copy_limit)
    weights = WeightsAtEpochEnd()
    exp = train_run(tmp_path, epochs=4, progress=False, callbacks=lambda: [weights])

    tree, _ = load_newest_state(RunDirectory(tmp_path))
    best_epoch = tree["nodes"]["best"]["epoch"]
    bests = sorted((tmp_path / "checkpoints").glob("best-epoch*.pt"))
    assert best_epoch is not None and tmp_path / "checkpoints" / f"best-epoch{best_epoch:04d}.pt" in bests
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    for path in bests:
        saved = torch.load(path, weights_only=True)
        expected = weights.weights[int(path.stem.removeprefix("best-epoch"))]
        assert saved.keys() == expected.keys()
        assert all(torch.equal(saved[key], expected[key]) for key in expected), path.name
    # Right after train(), the best weights are there to test and predict with.
    x, y = make_data(48, seed=2)
    assert exp.test((x, y), checkpoint="best", progress=False)["test_loss"] >= 0
    exp.predict(x, checkpoint="best")
    assert all(
        torch.equal(value, weights.weights[best_epoch][key])
        for key, value in exp.network.state_dict().items()
    )


@pytest.mark.parametrize(("copy_limit", "copied"), [(1 << 20, True), (100, False)], ids=["small", "big"])
def test_best_weights_of_a_small_network_are_copied_and_of_a_big_one_read_back(
    tmp_path, monkeypatch, copy_limit, copied
):
    monkeypatch.setattr(best_weights_module, "COPY_LIMIT_BYTES", copy_limit)  # the network: 652 bytes
    takes: list[int] = []
    real_take = best_weights_module.Snapshot.take

    def counted_take(self: Any, tree: Any) -> Any:
        takes.append(1)
        return real_take(self, tree)

    monkeypatch.setattr(best_weights_module.Snapshot, "take", counted_take)
    train_run(tmp_path, epochs=2, progress=False)

    assert bool(takes) == copied
    best_epoch = load_newest_state(RunDirectory(tmp_path))[0]["nodes"]["best"]["epoch"]
    assert (tmp_path / "checkpoints" / f"best-epoch{best_epoch:04d}.pt").is_file()


def test_train_waits_for_the_best_weights_of_its_last_epoch(tmp_path, monkeypatch):
    held = HeldBestWrite(monkeypatch, epoch=1)
    waited: list[bool] = []

    class ReleaseAtTrainEnd(Callback):
        def on_train_end(self, logs: dict[str, Any]) -> None:
            waited.append(not (tmp_path / "checkpoints" / "best-epoch0001.pt").exists())
            held.release()

    train_run(tmp_path, epochs=1, progress=False, callbacks=lambda: [ReleaseAtTrainEnd()])

    assert waited == [True]  # the write was still held when training ended...
    assert (tmp_path / "checkpoints" / "best-epoch0001.pt").is_file()  # ...and train() waited for it
    assert json.loads((tmp_path / "experiment.json").read_text())["status"] == "finished"


# ------------------------------------------------------------------------------ a real full disk
#: Bytes left free on the disk while the best weights are written: room for experiment.json (about
#: 2 kB), not for the best weights of :func:`wide_run`'s network (about 12 kB).
LEFT_FREE = 8192


def wide_run(directory: Path, *, callbacks: Any = (), epochs: int = 3) -> Experiment:
    """A network whose best weights take a few pages of the small disk, trained afresh or resumed."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 384), nn.ReLU(), nn.Dropout(0.2), nn.Linear(384, 3))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    exp = Experiment(
        directory, network, optimizer=optimizer, loss_function="cross_entropy", tensorboard=False
    )
    x, y = make_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    exp.train(loader, make_data(48, seed=2), epochs=epochs, callbacks=list(callbacks), progress=False)
    return exp


def fill(disk: Path, filler: Path) -> None:
    stats = os.statvfs(disk)
    with open(filler, "wb") as file:
        file.write(bytes(stats.f_bavail * stats.f_frsize - LEFT_FREE))


def test_full_disk_during_best_weights_write_fails_cleanly_and_resumes_exactly(
    tmp_path,
    small_disk,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    disk = small_disk
    straight, run_dir, filler = tmp_path / "straight", disk / "run", disk / "filler"
    wide_run(straight)
    held = HeldBestWrite(monkeypatch, epoch=1)

    def fill_then_release(names: Any) -> None:
        try:
            fill(disk, filler)
        finally:
            held.release()

    with pytest.raises(StorageError, match=r"Could not write .*best-epoch0001\.pt: No space left on device"):
        wide_run(run_dir, callbacks=[AtEpochBegin(run_dir, 2, fill_then_release)])

    metadata = json.loads((run_dir / "experiment.json").read_text())
    assert metadata["status"] == "failed" and "StorageError" in metadata["message"]
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["state-000001.pt"]
    tree, checkpoint = load_newest_state(RunDirectory(run_dir))
    assert checkpoint.name == "state-000001.pt" and tree["nodes"]["best"]["epoch"] == 1

    filler.unlink()  # space is back: resuming writes epoch 1's best weights from its state
    found: list[bool] = []

    class BestAtTrainBegin(Callback):
        def on_train_begin(self, logs: dict[str, Any]) -> None:
            best = torch.load(run_dir / "checkpoints" / "best-epoch0001.pt", weights_only=True)
            model = tree["nodes"]["model"]
            found.append(best.keys() == model.keys() and all(torch.equal(best[k], model[k]) for k in model))

    wide_run(run_dir, callbacks=[BestAtTrainBegin()])
    assert found == [True]  # before training went on
    assert json.loads((run_dir / "experiment.json").read_text())["status"] == "finished"
    assert not list(run_dir.rglob("*.tmp"))
    assert_same_run(straight, run_dir)
