"""The LR-scheduler callbacks: when they step, what they save, and an exact resume for each."""

from __future__ import annotations

import io
import itertools
from types import SimpleNamespace

import pytest
import torch
from torch.optim import lr_scheduler as torch_schedulers

from experiment.callbacks import lr_schedulers as wrappers
from experiment.errors import ConfigurationError, ExperimentError, MonitorError, StateMismatchError
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.training import assert_same_training_state, train_run

EPOCHS, STEPS = 3, 6  # conftest's training data: 96 samples in batches of 16

#: id -> (callback factory, torch factory on an optimizer, steps per batch?)
CASES = {
    "LambdaLR": (
        lambda: wrappers.LambdaLR(lambda epoch: 0.5**epoch),
        lambda opt: torch_schedulers.LambdaLR(opt, lambda epoch: 0.5**epoch),
        False,
    ),
    "MultiplicativeLR": (
        lambda: wrappers.MultiplicativeLR(lr_lambda=lambda epoch: 0.7),
        lambda opt: torch_schedulers.MultiplicativeLR(opt, lambda epoch: 0.7),
        False,
    ),
    "StepLR": (
        lambda: wrappers.StepLR(step_size=2, gamma=0.5),
        lambda opt: torch_schedulers.StepLR(opt, 2, 0.5),
        False,
    ),
    "MultiStepLR": (
        lambda: wrappers.MultiStepLR(milestones=[1, 2], gamma=0.3),
        lambda opt: torch_schedulers.MultiStepLR(opt, [1, 2], 0.3),
        False,
    ),
    "ExponentialLR": (
        lambda: wrappers.ExponentialLR(0.8),
        lambda opt: torch_schedulers.ExponentialLR(opt, 0.8),
        False,
    ),
    "CosineAnnealingLR": (
        lambda: wrappers.CosineAnnealingLR(T_max=3, eta_min=0.01),
        lambda opt: torch_schedulers.CosineAnnealingLR(opt, 3, 0.01),
        False,
    ),
    "ReduceLROnPlateau": (
        # An improvement of 10 is impossible: every epoch is a bad one, and the lr halves.
        lambda: wrappers.ReduceLROnPlateau(patience=0, factor=0.5, threshold=10, threshold_mode="abs"),
        lambda opt: torch_schedulers.ReduceLROnPlateau(
            opt, patience=0, factor=0.5, threshold=10, threshold_mode="abs"
        ),
        False,
    ),
    "CyclicLR": (
        lambda: wrappers.CyclicLR(base_lr=0.01, max_lr=0.2, step_size_up=4),
        lambda opt: torch_schedulers.CyclicLR(opt, 0.01, 0.2, step_size_up=4),
        True,
    ),
    "OneCycleLR": (
        lambda: wrappers.OneCycleLR(max_lr=0.3),
        lambda opt: torch_schedulers.OneCycleLR(opt, 0.3, epochs=EPOCHS, steps_per_epoch=STEPS),
        True,
    ),
    "CosineAnnealingWarmRestarts": (
        lambda: wrappers.CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=0.001),
        lambda opt: torch_schedulers.CosineAnnealingWarmRestarts(opt, 1, 2, 0.001),
        True,
    ),
}
NAMES = list(CASES)


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


def _attached(callback, optimizer):
    trainer = SimpleNamespace(optimizer=optimizer, epochs_completed=0, steps_in_epoch=0)
    callback.set_params({"epochs": EPOCHS, "steps_per_epoch": STEPS})
    callback.set_trainer(trainer)
    callback.on_train_begin({})
    return trainer


def _train_fake(callback, optimizer, trainer, epochs, losses=None):
    """Call the hooks as the loop does (optimizer steps included); return the lr after each step."""
    lrs = []
    for _ in range(epochs):
        for batch in range(1, STEPS + 1):
            optimizer.step()
            trainer.steps_in_epoch = batch
            callback.on_train_batch_end(batch, {"batch": batch, "size": 16})
            lrs.append(optimizer.param_groups[0]["lr"])
        callback.on_epoch_end(trainer.epochs_completed + 1, {"loss": 1.0, "val_loss": 1.0})
        trainer.epochs_completed += 1
        trainer.steps_in_epoch = 0
    return lrs


def _reference_epoch_end_lrs(make_torch, per_batch):
    """The lr at each epoch end (what log.tsv shows), stepping a torch scheduler by hand."""
    optimizer = _optimizer()
    scheduler = make_torch(optimizer)
    lrs = []
    for epoch in range(EPOCHS):
        for batch in range(1, STEPS + 1):
            optimizer.step()
            if isinstance(scheduler, torch_schedulers.CosineAnnealingWarmRestarts):
                scheduler.step(epoch + batch / STEPS)
            elif per_batch:
                scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        if isinstance(scheduler, torch_schedulers.ReduceLROnPlateau):
            scheduler.step(1.0)
        elif not per_batch:
            scheduler.step()
    return lrs


def _assert_plain(value, where="state"):
    if isinstance(value, torch.Tensor) or value is None or type(value) in (int, float, str, bool):
        return
    assert type(value) in (dict, list, tuple), f"{where} is a {type(value).__name__}"
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        _assert_plain(item, f"{where}[{key!r}]")


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_resume_matches_uninterrupted(run_dirs, name):
    make_callback = CASES[name][0]
    straight, resumed = run_dirs
    options = {
        "epochs": EPOCHS,
        "callbacks": lambda: [make_callback()],
        "experiment_options": {"tensorboard": False},
    }
    expected = train_run(straight, **options)
    for step in (5, 11):  # resumed from step 4 (in epoch 1), then from step 10 (in epoch 2)
        train_run(resumed, interrupt_at=step, checkpoint_every=2, **options)
    actual = train_run(resumed, checkpoint_every=2, **options)
    assert_same_training_state(expected, actual)
    assert len(set(actual.logs["lr"])) > 1, "the schedule did not change the learning rate"
    assert _saved_callbacks(resumed) == _saved_callbacks(straight)


def _saved_callbacks(directory):
    tree, _ = load_newest_state(RunDirectory(directory))
    return {name: state for name, state in tree["nodes"].items() if name.startswith("callbacks/")}


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_logged_lr_matches_torch_scheduler(tmp_path, name):
    make_callback, make_torch, per_batch = CASES[name]
    exp = train_run(
        tmp_path,
        epochs=EPOCHS,
        callbacks=lambda: [make_callback()],
        experiment_options={"tensorboard": False},
    )
    expected = _reference_epoch_end_lrs(make_torch, per_batch)
    assert list(exp.logs["lr"]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_steps_per_batch_or_per_epoch(name):
    make_callback, make_torch, per_batch = CASES[name]
    optimizer = _optimizer()
    callback = make_callback()
    lrs = _train_fake(callback, optimizer, _attached(callback, optimizer), EPOCHS)
    epochs = [lrs[start : start + STEPS] for start in range(0, len(lrs), STEPS)]
    if per_batch:
        assert all(a != b for a, b in itertools.pairwise(lrs)), (
            "a per-batch scheduler must move at every step"
        )
    else:
        assert all(len(set(epoch)) == 1 for epoch in epochs), "an epoch scheduler moved within an epoch"
        assert len({epoch[0] for epoch in epochs}) > 1, "the schedule never moved"


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_state_is_plain_data(name):
    optimizer = _optimizer()
    callback = CASES[name][0]()
    _train_fake(callback, optimizer, _attached(callback, optimizer), 1)
    state = callback.state_dict()
    _assert_plain(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state


@pytest.mark.parametrize("name", ["LambdaLR", "MultiplicativeLR"])
def test_lr_scheduler_lambda_functions_are_not_saved(name):
    optimizer = _optimizer()
    callback = CASES[name][0]()
    _attached(callback, optimizer)
    assert callback.state_dict()["lr_lambdas"] == [None]


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_loaded_state_applies_when_training_begins(name):
    make_callback = CASES[name][0]
    optimizer = _optimizer()
    callback = make_callback()
    trainer = _attached(callback, optimizer)
    _train_fake(callback, optimizer, trainer, 1)
    for batch in range(1, 4):  # stop in the middle of the second epoch
        optimizer.step()
        trainer.steps_in_epoch = batch
        callback.on_train_batch_end(batch, {})
    saved_state, saved_optimizer = callback.state_dict(), optimizer.state_dict()

    restored_optimizer = _optimizer()
    restored_optimizer.load_state_dict(saved_optimizer)
    restored = make_callback()
    restored.load_state_dict(saved_state)
    assert restored.state_dict() == saved_state
    restored_trainer = _attached(restored, restored_optimizer)
    restored_trainer.epochs_completed, restored_trainer.steps_in_epoch = 1, 3
    assert restored_optimizer.state_dict()["param_groups"] == saved_optimizer["param_groups"]
    for batch in range(4, STEPS + 1):
        for opt, cb, tr in ((optimizer, callback, trainer), (restored_optimizer, restored, restored_trainer)):
            opt.step()
            tr.steps_in_epoch = batch
            cb.on_train_batch_end(batch, {})
        assert restored_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for cb in (callback, restored):
        cb.on_epoch_end(2, {"val_loss": 1.0})
    assert restored_optimizer.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert restored.state_dict() == callback.state_dict()


def test_lr_scheduler_reduce_on_plateau_watches_monitor():
    optimizer = _optimizer()
    callback = wrappers.ReduceLROnPlateau(monitor="val_acc", mode="max", patience=0, factor=0.5)
    _attached(callback, optimizer)
    for epoch, accuracy in enumerate([0.5, 0.6, 0.6, 0.7], start=1):
        callback.on_epoch_end(epoch, {"loss": 0.1, "val_acc": accuracy})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_lr_scheduler_reduce_on_plateau_missing_monitor_lists_keys():
    optimizer = _optimizer()
    callback = wrappers.ReduceLROnPlateau(monitor="val_acc")
    _attached(callback, optimizer)
    with pytest.raises(
        MonitorError, match=r"received 'val_acc', which is not among the logged keys \['loss', 'lr'\]"
    ):
        callback.on_epoch_end(1, {"epoch": 1, "loss": 0.3, "lr": 0.1})


def test_lr_scheduler_given_an_optimizer_raises():
    with pytest.raises(ConfigurationError, match="StepLR: received an optimizer"):
        wrappers.StepLR(_optimizer(), step_size=2)
    with pytest.raises(ConfigurationError, match="received an optimizer"):
        wrappers.ExponentialLR(optimizer=_optimizer(), gamma=0.5)


def test_lr_scheduler_wrong_arguments_raise_at_construction():
    with pytest.raises(
        ConfigurationError,
        match=r"StepLR: the arguments \(\), \{'step_sizes': 2\} do not fit torch's StepLR: .*Expected StepLR\(step_size: 'int', gamma",
    ):
        wrappers.StepLR(step_sizes=2)
    with pytest.raises(ConfigurationError, match=r"OneCycleLR: .*max_lr"):
        wrappers.OneCycleLR()


def test_lr_scheduler_stepped_before_training_begins_raises():
    with pytest.raises(ExperimentError, match="stepped before on_train_begin"):
        wrappers.StepLR(step_size=1).on_epoch_end(1, {})


def test_lr_scheduler_one_cycle_takes_total_steps_from_training():
    optimizer = _optimizer()
    callback = wrappers.OneCycleLR(max_lr=0.3)
    _attached(callback, optimizer)
    assert callback.scheduler.total_steps == EPOCHS * STEPS
    explicit = wrappers.OneCycleLR(0.3, 7)
    _attached(explicit, _optimizer())
    assert explicit.scheduler.total_steps == 7


def test_lr_scheduler_one_cycle_without_known_length_raises():
    callback = wrappers.OneCycleLR(max_lr=0.3)
    callback.set_params({"epochs": 2, "steps_per_epoch": None})
    callback.set_trainer(SimpleNamespace(optimizer=_optimizer()))
    with pytest.raises(ConfigurationError, match="needs the number of training steps per epoch"):
        callback.on_train_begin({})


def test_lr_scheduler_without_trainer_raises():
    with pytest.raises(ExperimentError, match=r"StepLR has no trainer: pass it to Experiment.train"):
        wrappers.StepLR(step_size=1).on_train_begin({})


@pytest.mark.parametrize("state", [{"step": 3}, [1, 2]])
def test_lr_scheduler_state_problems_reports_a_state_of_something_else(state):
    callback = wrappers.StepLR(step_size=1)
    (problem,) = callback.state_problems(state)
    assert problem.startswith("StepLR: the saved state")
    with pytest.raises(StateMismatchError, match="StepLR: the saved state"):
        callback.load_state_dict(state)


def test_lr_scheduler_state_problems_accepts_an_empty_or_a_torch_state():
    callback = wrappers.StepLR(step_size=1)
    assert callback.state_problems({}) == []
    optimizer = _optimizer()
    _attached(callback, optimizer)
    assert wrappers.StepLR(step_size=1).state_problems(callback.state_dict()) == []


def test_lr_scheduler_reduce_on_plateau_saves_its_monitor():
    callback = wrappers.ReduceLROnPlateau(monitor="val_acc", mode="max")
    _attached(callback, _optimizer())
    state = callback.state_dict()
    assert state["monitor"] == "val_acc" and state["mode"] == "max"
    restored = wrappers.ReduceLROnPlateau(monitor="val_acc", mode="max")
    restored.load_state_dict(state)
    assert restored.state_dict() == state


def test_lr_scheduler_reduce_on_plateau_resumed_with_another_monitor_warns_and_forgets_the_best():
    optimizer = _optimizer()
    callback = wrappers.ReduceLROnPlateau(monitor="val_loss", patience=5)
    _attached(callback, optimizer)
    callback.on_epoch_end(1, {"val_loss": 0.25})
    state = callback.state_dict()
    restored = wrappers.ReduceLROnPlateau(monitor="val_acc", mode="max", patience=5)
    with pytest.warns(
        UserWarning, match=r"ReduceLROnPlateau: .*watched 'val_loss' \(min\).*'val_acc' \(max\)"
    ):
        restored.load_state_dict(state)
    _attached(restored, _optimizer())
    assert restored.scheduler.mode == "max" and restored.scheduler.best == -float("inf")
    assert restored.scheduler.last_epoch == 1
