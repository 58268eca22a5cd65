"""Mixed precision (bf16, fp16 with a GradScaler) and gradient accumulation: counted, committed and
resumed exactly, on CPU."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment import Callback, Experiment
from experiment.errors import ConfigurationError, StateMismatchError
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.state_checks import assert_same_run
from tests.support.training import Interrupt, assert_same_training_state, make_network, train_run


class StopAtBatch(Callback):
    """Raises Interrupt after the ``batch``-th training batch of the run (mid-group included)."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch, self.seen = batch, 0

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.seen += 1
        if self.seen == self.batch:
            raise Interrupt(f"stopped after batch {self.batch}")


def _train(directory: Path, *, stop_at: int | None = None, **options: Any) -> Experiment:
    experiment_options = {
        key: options.pop(key) for key in ("precision", "accumulate_grad_batches") if key in options
    }
    callbacks = (lambda: [StopAtBatch(stop_at)]) if stop_at is not None else (lambda: [])
    return train_run(
        directory,
        epochs=3,
        experiment_options=experiment_options,
        callbacks=callbacks,
        progress=False,
        **options,
    )


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_resumes_bit_identical(run_dirs, precision):
    straight, resumed = run_dirs
    expected = _train(straight, precision=precision, checkpoint_every=2)
    for stop in (3, 8, 13):
        _train(resumed, precision=precision, checkpoint_every=2, stop_at=stop)
    actual = _train(resumed, precision=precision, checkpoint_every=2)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


def test_fp16_commits_the_grad_scaler_state(tmp_path: Path):
    _train(tmp_path, precision="16-mixed")
    tree, _ = load_newest_state(RunDirectory(tmp_path))
    assert tree["classes"]["scaler"] == "GradScaler"
    assert set(tree["nodes"]["scaler"]) >= {"scale", "growth_factor", "_growth_tracker"}


def test_mixed_precision_changes_the_numbers_and_32_is_an_alias(tmp_path: Path):
    full = _train(tmp_path / "full", precision="32")
    bf16 = _train(tmp_path / "bf16", precision="bf16-mixed")
    assert not torch.equal(full.network.state_dict()["0.weight"], bf16.network.state_dict()["0.weight"])
    default = _train(tmp_path / "default")
    assert_same_training_state(full, default)


def test_accumulation_counts_optimizer_steps_and_batches_apart(tmp_path: Path):
    steps: list[tuple[int, int, bool]] = []

    class Record(Callback):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            trainer = self.trainer
            steps.append((trainer.steps_in_epoch, trainer.global_step, trainer.optimizer_stepped))

    train_run(
        tmp_path, epochs=2, experiment_options={"accumulate_grad_batches": 4}, callbacks=lambda: [Record()]
    )
    # 6 batches per epoch: groups of 4 and 2, so 2 optimizer steps per epoch
    assert steps[:6] == [
        (1, 0, False),
        (2, 0, False),
        (3, 0, False),
        (4, 1, True),
        (5, 1, False),
        (6, 2, True),
    ]
    assert steps[-1] == (6, 4, True)


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_accumulation_resumes_bit_identical_after_stops_inside_groups(run_dirs, precision):
    straight, resumed = run_dirs
    options = {"precision": precision, "accumulate_grad_batches": 4, "checkpoint_every": 1}
    expected = _train(straight, **options)
    for stop in (3, 6, 7, 11):  # inside a group, at a partial group's end, at a group's start
        _train(resumed, stop_at=stop, **options)
    actual = _train(resumed, **options)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


def test_accumulation_commits_only_at_group_ends(tmp_path: Path):
    positions = {}
    for stop in (3, 5, 7):
        _train(tmp_path / str(stop), accumulate_grad_batches=4, checkpoint_every=1, stop_at=stop)
        found = load_newest_state(RunDirectory(tmp_path / str(stop)))
        progress = found[0]["nodes"]["progress"] if found else None
        positions[stop] = (
            None
            if progress is None
            else (progress["epochs_completed"], progress["steps_in_epoch"], progress["global_step"])
        )
    # batches 1-3: no group has ended; batch 5: the group of batches 1-4; batch 7: epoch 1's end
    assert positions == {3: None, 5: (0, 4, 1), 7: (1, 0, 2)}


def test_a_signal_inside_a_group_commits_at_its_end(tmp_path: Path):
    class Raise(Callback):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            if batch_number == 2:
                signal.raise_signal(signal.SIGTERM)

    with pytest.raises(SystemExit):
        train_run(
            tmp_path, epochs=2, experiment_options={"accumulate_grad_batches": 4}, callbacks=lambda: [Raise()]
        )
    progress = load_newest_state(RunDirectory(tmp_path))[0]["nodes"]["progress"]
    assert (progress["steps_in_epoch"], progress["global_step"]) == (4, 1)


def test_fp16_on_backward_end_sees_unscaled_gradients(tmp_path: Path):
    norms: dict[str, float] = {}

    class Norm(Callback):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def on_backward_end(self, batch_number: int) -> None:
            if self.trainer.global_step == 0:
                grads = [p.grad.norm() for p in self.trainer.network.parameters()]
                norms[self.name] = float(torch.stack(grads).norm())

    train_run(tmp_path / "a", epochs=1, callbacks=lambda: [Norm("32")])
    train_run(
        tmp_path / "b", epochs=1, experiment_options={"precision": "16-mixed"}, callbacks=lambda: [Norm("16")]
    )
    assert norms["16"] == pytest.approx(norms["32"], rel=0.05)  # not 65536 times larger


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"precision": "fp16"}, r"precision: received 'fp16'; expected one of '32-true'"),
        ({"accumulate_grad_batches": 0}, r"accumulate_grad_batches: received 0; expected a positive integer"),
    ],
)
def test_invalid_precision_or_accumulation_is_refused_before_anything_is_written(tmp_path, options, expected):
    network = make_network()
    with pytest.raises(ConfigurationError, match=expected):
        Experiment(tmp_path / "run", network, optimizer="sgd", loss_function="cross_entropy", **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        ({"precision": "bf16-mixed"}, {"precision": "32-true"}, "precision"),
        ({"accumulate_grad_batches": 2}, {"accumulate_grad_batches": 3}, "accumulate_grad_batches"),
    ],
)
def test_resuming_with_another_precision_or_accumulation_is_refused(tmp_path, first, second, field):
    _train(tmp_path, stop_at=4, checkpoint_every=1, **first)
    with pytest.raises(StateMismatchError, match=f"{field} was .* when the run was created"):
        _train(tmp_path, checkpoint_every=1, **second)


def test_a_custom_training_step_with_accumulation_is_refused(tmp_path: Path):
    exp = Experiment(
        tmp_path, make_network(), optimizer="sgd", loss_function="cross_entropy", accumulate_grad_batches=2
    )
    with pytest.raises(
        ConfigurationError, match="a custom step does its own forward, backward and optimizer step"
    ):
        exp.loop.use_train_step(lambda x, y: (x, y))
