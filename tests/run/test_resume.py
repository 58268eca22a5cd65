"""Resume equivalence: interrupted (once or many times) and resumed equals uninterrupted, bit for bit.

The training set has 96 samples in batches of 16: six steps per epoch, so step 6 is the last batch of
epoch 1 and step 7 the first of epoch 2. ``InterruptAt(k)`` raises once step k is done, before any
checkpoint of that step is committed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from experiment import Callback, Experiment
from tests.support.state_checks import assert_same_run, snapshot_files
from tests.support.training import (
    Interrupt,
    InterruptAt,
    assert_same_training_state,
    make_data,
    make_experiment,
    train_run,
)


def resume_until_done(run_dir: Path, interrupts: list[int], **options: Any) -> Experiment:
    """Interrupt at each step of ``interrupts`` in turn (each time a fresh process), then finish."""
    for step in interrupts:
        train_run(run_dir, interrupt_at=step, **options)
    return train_run(run_dir, **options)


@pytest.mark.parametrize(
    ("checkpoint_every", "interrupts"),
    [
        (None, [3]),  # nothing committed yet: the resume starts afresh, with the same seed
        (None, [9]),  # mid-epoch 2: back to the end of epoch 1
        (None, [6, 12, 18]),  # each epoch's last batch, before its epoch commit
        (2, [5]),
        (2, [5, 11, 17]),
        (4, [7, 8, 23]),  # again right after a resume, and in the very last epoch
        (3, [6, 13]),  # a step checkpoint in the middle of an epoch, lost at its last batch
        (6, [7]),  # a step checkpoint on the last batch of an epoch, then its epoch commit
    ],
)
def test_resume_interrupted_at_steps_matches_uninterrupted(run_dirs, checkpoint_every, interrupts):
    straight, resumed = run_dirs
    expected = train_run(straight, checkpoint_every=checkpoint_every)
    actual = resume_until_done(resumed, interrupts, checkpoint_every=checkpoint_every)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


def test_resume_interrupted_at_every_step_matches_uninterrupted(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=3, checkpoint_every=1)
    actual = resume_until_done(resumed, list(range(1, 18)), epochs=3, checkpoint_every=1)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


class RaiseInEpochBegin(Callback):
    """Raises Interrupt when ``epoch`` begins, just after the previous epoch was committed."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number == self.epoch:
            raise Interrupt(f"on_epoch_begin of epoch {epoch_number}")


class RaiseInValidation(Callback):
    """Raises Interrupt in the middle of the validation of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_valid_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.epochs_completed + 1 == self.epoch and batch_number == 2:
            raise Interrupt(f"validation of epoch {self.epoch}")


@pytest.mark.parametrize("checkpoint_every", [None, 6])
def test_resume_interrupted_at_epoch_boundaries_matches_uninterrupted(run_dirs, checkpoint_every):
    """Right after an epoch commit, and during validation (after the epoch's last step commit)."""
    straight, resumed = run_dirs
    expected = train_run(straight, checkpoint_every=checkpoint_every)
    for interrupting in (lambda: [RaiseInEpochBegin(2)], lambda: [RaiseInValidation(3)]):
        train_run(resumed, checkpoint_every=checkpoint_every, callbacks=interrupting)
    actual = train_run(resumed, checkpoint_every=checkpoint_every)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


SCHEDULERS = {
    "step_lr": lambda opt: [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)],
    "plateau": lambda opt: [
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.2)
    ],
}


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize(("checkpoint_every", "interrupts"), [(None, [9, 20]), (2, [5, 13, 14])])
def test_resume_with_lr_scheduler_keeps_lr_column(run_dirs, scheduler, checkpoint_every, interrupts):
    straight, resumed = run_dirs
    options = {"schedulers": SCHEDULERS[scheduler], "checkpoint_every": checkpoint_every, "epochs": 5}
    expected = train_run(straight, **options)
    assert expected.logs["lr"].nunique() > 1, "the schedule must change the lr for the test to mean anything"
    actual = resume_until_done(resumed, interrupts, **options)
    assert list(actual.logs["lr"]) == list(expected.logs["lr"])
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


# ------------------------------------------------------------------------------ kinds of data
class AugmentedDataset(Dataset):
    """Adds noise drawn from NumPy's and Python's global generators in ``__getitem__``."""

    def __init__(self) -> None:
        self.x, self.y = make_data()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.from_numpy(np.random.normal(0.0, 0.1, size=self.x.shape[1]).astype(np.float32))
        scale = 1.0 + 0.05 * random.random()
        return self.x[index] * scale + noise, self.y[index]


DATA: dict[str, Callable[[], Any]] = {
    "dataset": lambda: TensorDataset(*make_data()),
    "numpy_tuple": lambda: tuple(part.numpy() for part in make_data()),
    "loader": lambda: DataLoader(TensorDataset(*make_data()), batch_size=16, shuffle=True),
    "loader_with_generator": lambda: DataLoader(
        TensorDataset(*make_data()), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(7)
    ),
    "augmenting_dataset": lambda: DataLoader(AugmentedDataset(), batch_size=16, shuffle=True, num_workers=0),
}


def train_on(
    run_dir: Path,
    data: Callable[[], Any],
    *,
    interrupt_at: int | None = None,
    epochs: int = 3,
    **options: Any,
) -> Experiment:
    """Like conftest.train_run, with the training data built by ``data``."""
    exp = make_experiment(run_dir)
    extra = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    with contextlib.suppress(Interrupt):
        exp.train(data(), make_data(48, seed=2), epochs=epochs, batch_size=16, callbacks=extra, **options)
    return exp


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("checkpoint_every", [None, 4])
def test_resume_with_data_kind_matches_uninterrupted(run_dirs, kind, checkpoint_every):
    straight, resumed = run_dirs
    expected = train_on(straight, DATA[kind], checkpoint_every=checkpoint_every)
    for step in (5, 10, 15):
        train_on(resumed, DATA[kind], interrupt_at=step, checkpoint_every=checkpoint_every)
    actual = train_on(resumed, DATA[kind], checkpoint_every=checkpoint_every)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


def test_resume_with_augmentation_differs_from_another_seed(tmp_path):
    """Guards the test above: the augmentation noise does reach the weights."""
    first = train_on(tmp_path / "a", DATA["augmenting_dataset"])
    second = train_on(tmp_path / "b", DATA["augmenting_dataset"], seed=43)
    assert not torch.equal(first.network[0].weight, second.network[0].weight)


@pytest.mark.parametrize(
    ("kind", "steps_per_epoch", "checkpoint_every"),
    [
        ("loader", 4, 3),  # shorter than a pass: each epoch starts a new pass
        ("loader", 10, 3),  # runs over into a second pass, whose order the dropout draws before it shape
        ("loader", 13, 3),  # and into a third
        ("dataset", 10, 3),  # the order drawn from the run's own generator
        ("dataset", 12, 6),  # step checkpoints exactly at pass ends
        ("loader_with_generator", 12, 6),  # whose sampler draws from the loader's generator at a pass end
        ("loader_with_generator", 10, 3),
    ],
)
def test_resume_with_steps_per_epoch_matches_uninterrupted(run_dirs, kind, steps_per_epoch, checkpoint_every):
    straight, resumed = run_dirs
    options = {"steps_per_epoch": steps_per_epoch, "checkpoint_every": checkpoint_every}
    expected = train_on(straight, DATA[kind], **options)
    total = 3 * steps_per_epoch
    for step in (2, steps_per_epoch + 9, 2 * steps_per_epoch + 1, total - 1):
        train_on(resumed, DATA[kind], interrupt_at=step, **options)
    actual = train_on(resumed, DATA[kind], **options)
    assert actual.loop.global_step == total
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_resume_with_loader_workers_matches_uninterrupted(run_dirs):
    """A DataLoader with worker processes asks its sampler for a pass twice: the skip must hold."""
    straight, resumed = run_dirs

    def data() -> DataLoader:
        return DataLoader(TensorDataset(*make_data()), batch_size=16, shuffle=True, num_workers=2)

    expected = train_on(straight, data, checkpoint_every=2, steps_per_epoch=8)
    for step in (3, 9):
        train_on(resumed, data, interrupt_at=step, checkpoint_every=2, steps_per_epoch=8)
    actual = train_on(resumed, data, checkpoint_every=2, steps_per_epoch=8)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


class DrawAtEpochBegin(Callback):
    """Draws from torch's and NumPy's generators when an epoch begins (a callback with randomness)."""

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        torch.rand(3)
        np.random.rand(2)


def test_resume_with_random_draws_at_epoch_begin_matches_uninterrupted(run_dirs):
    """The data order is redrawn from the state the pass drew it from, after on_epoch_begin ran."""
    straight, resumed = run_dirs
    expected = train_run(straight, checkpoint_every=2, callbacks=lambda: [DrawAtEpochBegin()])
    actual = resume_until_done(resumed, [5, 9], checkpoint_every=2, callbacks=lambda: [DrawAtEpochBegin()])
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


# ------------------------------------------------------------------------ finished runs, more epochs
class HookCounter(Callback):
    needs_batch_values = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.calls.append("on_train_begin")

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.calls.append("on_train_batch_end")


def test_resume_finished_run_returns_history_at_once(tmp_path):
    first = train_run(tmp_path, epochs=3)
    files = snapshot_files(tmp_path, ignore=("experiment.json", ".lock", ".lock.holder"))
    counter = HookCounter()
    again = make_experiment(tmp_path)
    x, y = make_data()
    history = again.train((x, y), make_data(48, seed=2), epochs=3, callbacks=[counter])
    assert counter.calls == []
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history == first.loop.history
    assert snapshot_files(tmp_path, ignore=("experiment.json", ".lock", ".lock.holder")) == files
    assert_same_training_state(first, again)


def test_resume_with_more_epochs_continues(run_dirs):
    straight, resumed = run_dirs
    schedulers = SCHEDULERS["step_lr"]
    expected = train_run(straight, epochs=5, schedulers=schedulers, checkpoint_every=4)
    train_run(resumed, epochs=2, schedulers=schedulers, checkpoint_every=4)
    train_run(resumed, epochs=4, schedulers=schedulers, checkpoint_every=4, interrupt_at=21)
    actual = train_run(resumed, epochs=5, schedulers=schedulers, checkpoint_every=4)
    assert list(actual.logs["epoch"]) == [1, 2, 3, 4, 5]
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)
