"""OptimizerPolicy: its hooks with a fake trainer, its state, its plot, and an exact resume."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from experiment.callbacks.optimizer_policy import OptimizerPolicy
from experiment.errors import ConfigurationError, ExperimentError, MissingExtraError
from experiment.schedules.phases import Phase, cosinespace, linspace, one_cycle_phases
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.training import assert_same_training_state, train_run


def _attached(policy, optimizer):
    policy.set_params({"epochs": 1, "steps_per_epoch": 10})
    policy.set_trainer(SimpleNamespace(optimizer=optimizer))
    policy.on_train_begin({})
    return policy


def _run_steps(policy, optimizer, steps, read):
    seen = []
    for batch in range(1, steps + 1):
        policy.on_train_batch_begin(batch, {})
        seen.append(read(optimizer.param_groups[0]))
        policy.on_train_batch_end(batch, {})
    return seen


def _parameters():
    return [torch.nn.Parameter(torch.zeros(3))]


PHASES = [Phase(lr=linspace(0.1, 0.3, 3), momentum=linspace(0.9, 0.7, 3)), Phase(lr=cosinespace(0.3, 0.0, 2))]
EXPECTED_LR = [0.1, 0.2, 0.3, 0.3, 0.0]


def test_optimizer_policy_sets_lr_and_momentum_of_sgd():
    optimizer = torch.optim.SGD(_parameters(), lr=1.0, momentum=0.5)
    policy = _attached(OptimizerPolicy(PHASES), optimizer)
    seen = _run_steps(policy, optimizer, 5, lambda g: (g["lr"], g["momentum"]))
    assert [lr for lr, _ in seen] == pytest.approx(EXPECTED_LR, abs=1e-15)
    # The second phase sets no momentum: the last value set stays.
    assert [m for _, m in seen] == pytest.approx([0.9, 0.8, 0.7, 0.7, 0.7])


def test_optimizer_policy_sets_betas0_of_adam():
    optimizer = torch.optim.Adam(_parameters(), lr=1.0, betas=(0.5, 0.777))
    policy = _attached(OptimizerPolicy(PHASES), optimizer)
    seen = _run_steps(policy, optimizer, 3, lambda g: g["betas"])
    assert seen == [(0.9, 0.777), pytest.approx((0.8, 0.777)), (0.7, 0.777)]
    assert isinstance(optimizer.param_groups[0]["betas"], tuple)


def test_optimizer_policy_sets_every_parameter_group():
    optimizer = torch.optim.SGD(
        [{"params": _parameters()}, {"params": _parameters(), "lr": 5.0}], lr=1.0, momentum=0.1
    )
    policy = _attached(OptimizerPolicy(PHASES), optimizer)
    policy.on_train_batch_begin(1, {})
    assert [(g["lr"], g["momentum"]) for g in optimizer.param_groups] == [(0.1, 0.9), (0.1, 0.9)]


def test_optimizer_policy_momentum_on_optimizer_without_it_raises():
    optimizer = torch.optim.Adagrad(_parameters(), lr=1.0)
    with pytest.raises(
        ConfigurationError, match=r"parameter group 0 of Adagrad has neither 'momentum' nor 'betas'"
    ):
        _attached(OptimizerPolicy(PHASES), optimizer)


def test_optimizer_policy_lr_only_works_without_momentum():
    optimizer = torch.optim.Adagrad(_parameters(), lr=1.0)
    policy = _attached(OptimizerPolicy([Phase(lr=linspace(0.4, 0.2, 3))]), optimizer)
    assert _run_steps(policy, optimizer, 3, lambda g: g["lr"]) == pytest.approx([0.4, 0.3, 0.2])


def test_optimizer_policy_keeps_last_value_after_the_last_phase():
    optimizer = torch.optim.SGD(_parameters(), lr=1.0, momentum=0.5)
    policy = _attached(OptimizerPolicy(PHASES), optimizer)
    assert _run_steps(policy, optimizer, 8, lambda g: g["lr"])[4:] == [0.0, 0.0, 0.0, 0.0]
    assert policy.value_at(1000) == policy.value_at(4) == {"lr": 0.0}


def test_optimizer_policy_initial_step_starts_later():
    optimizer = torch.optim.SGD(_parameters(), lr=1.0, momentum=0.5)
    policy = _attached(OptimizerPolicy(PHASES, initial_step=2), optimizer)
    assert _run_steps(policy, optimizer, 3, lambda g: g["lr"]) == pytest.approx(EXPECTED_LR[2:])


def test_optimizer_policy_value_at_is_a_pure_function_of_the_step():
    policy = OptimizerPolicy(PHASES)
    forward = [policy.value_at(step) for step in range(5)]
    backward = [policy.value_at(step) for step in reversed(range(5))][::-1]
    assert forward == backward and policy.total_steps == 5
    assert forward[3] == PHASES[1][0]


def test_optimizer_policy_state_round_trip():
    optimizer = torch.optim.SGD(_parameters(), lr=1.0, momentum=0.5)
    policy = _attached(OptimizerPolicy(PHASES), optimizer)
    _run_steps(policy, optimizer, 3, lambda g: g["lr"])
    assert policy.state_dict() == {"step": 3}
    other = OptimizerPolicy(PHASES, initial_step=1)
    other.load_state_dict(policy.state_dict())
    other = _attached(other, optimizer)
    assert _run_steps(other, optimizer, 2, lambda g: g["lr"]) == pytest.approx(EXPECTED_LR[3:])


def test_optimizer_policy_invalid_saved_step_raises():
    with pytest.raises(ConfigurationError, match=r"the saved step received -1; expected an integer >= 0"):
        OptimizerPolicy(PHASES).load_state_dict({"step": -1})


@pytest.mark.parametrize("phases", [[], [0.1], [linspace(0, 1, 3)]])
def test_optimizer_policy_needs_phases(phases):
    with pytest.raises(ConfigurationError, match="expected a non-empty list of Phase"):
        OptimizerPolicy(phases)


@pytest.mark.parametrize("step", [-1, 1.5, "3"])
def test_optimizer_policy_invalid_initial_step_raises(step):
    with pytest.raises(ConfigurationError, match="initial_step received"):
        OptimizerPolicy(PHASES, initial_step=step)


def test_optimizer_policy_plot_saves_a_picture(tmp_path):
    policy = OptimizerPolicy(one_cycle_phases(steps=200))
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 2.5), dpi=40)
    try:
        assert policy.plot(ax=left) is left
        assert policy.plot("momentum", ax=right) is right
        assert list(left.lines[0].get_ydata()) == [s["lr"] for p in policy.phases for s in p]
        fig.savefig(tmp_path / "policy.png")
    finally:
        plt.close(fig)
    image = matplotlib.image.imread(tmp_path / "policy.png")
    assert image.shape[:2] == (100, 240)
    pixels = image.reshape(-1, image.shape[-1])
    assert len(np.unique(pixels, axis=0)) > 10
    assert (pixels[:, :3].mean(axis=1) < 0.5).mean() > 0.001


def test_optimizer_policy_plot_leaves_phases_without_the_parameter_blank():
    policy = OptimizerPolicy(PHASES)
    ax = policy.plot("momentum")
    try:
        values = ax.lines[0].get_ydata()
        assert list(values[:3]) == pytest.approx([0.9, 0.8, 0.7]) and np.isnan(values[3:]).all()
    finally:
        plt.close(ax.figure)
    with pytest.raises(ConfigurationError, match="param received 'beta'; no phase of this policy sets it"):
        policy.plot("beta")


def test_optimizer_policy_plot_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingExtraError, match=r'pip install "experiment\[plot\]"'):
        OptimizerPolicy(PHASES).plot()


def _policy():
    # 3 epochs of 6 steps; the schedule ends at step 15, so the last steps keep its last values.
    return [OptimizerPolicy(one_cycle_phases(15, lr=(0.05, 0.5), momentum=(0.95, 0.8)))]


EPOCHS_STEPS = 18


def test_optimizer_policy_resume_matches_uninterrupted(run_dirs):
    straight, resumed = run_dirs
    options = {"epochs": 3, "callbacks": _policy, "experiment_options": {"tensorboard": False}}
    expected = train_run(straight, **options)
    for step in (5, 11):
        train_run(resumed, interrupt_at=step, checkpoint_every=2, **options)
    actual = train_run(resumed, checkpoint_every=2, **options)
    assert_same_training_state(expected, actual)
    trees = [load_newest_state(RunDirectory(d))[0] for d in (straight, resumed)]
    saved = [  # callback states by class name
        {
            name.rpartition(".")[2]: state
            for name, state in tree["nodes"].items()
            if name.startswith("callbacks/")
        }
        for tree in trees
    ]
    assert saved[0] == saved[1] == {"OptimizerPolicy": {"step": EPOCHS_STEPS}}
    # The logged lr is the one set for each epoch's last step.
    policy = _policy()[0]
    assert list(actual.logs["lr"]) == pytest.approx(
        [policy.value_at(s)["lr"] for s in (5, 11, 17)], rel=1e-12
    )
    assert actual.optimizer.param_groups[0]["momentum"] == policy.value_at(17)["momentum"]


def test_optimizer_policy_without_trainer_raises():
    with pytest.raises(ExperimentError, match=r"OptimizerPolicy has no trainer"):
        OptimizerPolicy(PHASES).on_train_batch_begin(1, {})


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"step": -1}, "the saved step received -1"),
        ({}, r"lacks \['step'\]"),
        ({"step": "3"}, "received '3'"),
    ],
)
def test_optimizer_policy_state_problems_reports_an_unfit_state_without_loading_it(state, match):
    policy = OptimizerPolicy(PHASES, initial_step=2)
    (problem,) = policy.state_problems(state)
    assert re.search(match, problem)
    assert policy.current_step == 2


def test_optimizer_policy_state_problems_accepts_a_saved_state():
    assert OptimizerPolicy(PHASES).state_problems({"step": 5}) == []
