"""train(lr_schedulers=...) in Lightning's form: a scheduler stepped after every optimizer step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiment.errors import ConfigurationError
from tests.support.state_checks import assert_same_run
from tests.support.training import assert_same_training_state, make_data, make_experiment, train_run

EPOCHS, STEPS_PER_EPOCH = 3, 6  # train_run: 96 samples in batches of 16


def one_cycle_every_step(optimizer: torch.optim.Optimizer) -> list[dict]:
    total = EPOCHS * STEPS_PER_EPOCH
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=total)
    return [{"scheduler": scheduler, "interval": "step"}]


def test_step_interval_scheduler_steps_after_every_optimizer_step(tmp_path: Path) -> None:
    exp = train_run(tmp_path, epochs=EPOCHS, schedulers=one_cycle_every_step)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    expected = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=0.5, total_steps=EPOCHS * STEPS_PER_EPOCH
    )
    lrs_at_epoch_ends = []
    for step in range(1, EPOCHS * STEPS_PER_EPOCH + 1):
        reference.step()
        if step < EPOCHS * STEPS_PER_EPOCH:  # OneCycleLR refuses a step past its total
            expected.step()
        if step % STEPS_PER_EPOCH == 0:
            lrs_at_epoch_ends.append(reference.param_groups[0]["lr"])
    assert list(exp.logs["lr"])[:-1] == pytest.approx(lrs_at_epoch_ends[:-1])


def test_step_interval_scheduler_resumes_mid_epoch_exactly(run_dirs) -> None:
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=EPOCHS, schedulers=one_cycle_every_step, checkpoint_every=2)
    train_run(resumed, epochs=EPOCHS, schedulers=one_cycle_every_step, checkpoint_every=2, interrupt_at=9)
    actual = train_run(resumed, epochs=EPOCHS, schedulers=one_cycle_every_step, checkpoint_every=2)
    assert_same_training_state(expected, actual)
    assert_same_run(straight, resumed)


@pytest.mark.parametrize("name", ["OneCycleLR", "CyclicLR"])
def test_per_step_scheduler_given_alone_warns(tmp_path: Path, name: str) -> None:
    def bare(optimizer: torch.optim.Optimizer) -> list:
        if name == "OneCycleLR":
            return [torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=100)]
        return [torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1)]

    with pytest.warns(
        UserWarning, match=rf"lr_schedulers\[0\]: a {name} is stepped once per epoch.*'interval': 'step'"
    ):
        train_run(tmp_path, epochs=1, schedulers=bare)


def test_epoch_interval_keeps_a_per_step_class_per_epoch_without_warning(tmp_path: Path) -> None:
    def per_epoch(optimizer: torch.optim.Optimizer) -> list:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=10)
        return [{"scheduler": scheduler, "interval": "epoch"}]

    exp = train_run(tmp_path, epochs=2, schedulers=per_epoch)
    assert len(exp.logs) == 2


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            lambda opt: {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "batch"},
            r"lr_schedulers\[0\]\['interval'\]: received 'batch'; expected 'epoch' or 'step'",
        ),
        (
            lambda opt: {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "frequency": 2},
            r"lr_schedulers\[0\]: received a dict with keys \['frequency', 'scheduler'\]",
        ),
        (
            lambda opt: {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "interval": "step"},
            r"ReduceLROnPlateau cannot step per optimizer step",
        ),
        (lambda opt: {"interval": "step"}, r"received a dict with keys \['interval'\]"),
    ],
)
def test_bad_interval_forms_refused_before_writing(tmp_path: Path, item, message: str) -> None:  # noqa: ANN001
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(ConfigurationError, match=message):
        exp.train(make_data(), epochs=1, lr_schedulers=[item(exp.optimizer)], progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
