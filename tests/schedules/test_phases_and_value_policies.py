"""Parameter spaces, phases, the SGDR and one-cycle schedules, and their plots."""

from __future__ import annotations

import itertools
import math
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from experiment.errors import ConfigurationError, MissingExtraError
from experiment.schedules.phases import Phase, cosinespace, linspace, one_cycle_phases, sgdr_phases


def test_linspace_values_go_from_start_to_end():
    assert list(linspace(0, 1, 3)) == [0.0, 0.5, 1.0]
    assert list(linspace(1, 0, 5)) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_linspace_ends_are_exact():
    space = linspace(0.1, 0.3, 7)
    assert space[0] == 0.1 and space[-1] == 0.3


def test_cosinespace_values_follow_half_a_cosine():
    assert list(cosinespace(0, 1, 3)) == [0.0, 0.5, 1.0]
    values = list(cosinespace(1.0, 0.2, 9))
    expected = [0.2 + 0.8 * (1 + math.cos(math.pi * i / 8)) / 2 for i in range(9)]
    assert values == pytest.approx(expected, abs=1e-15)
    assert values[0] == 1.0 and values[-1] == 0.2
    assert all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("make", [linspace, cosinespace])
def test_space_with_one_step_yields_start(make):
    assert list(make(0.3, 0.9, 1)) == [0.3]
    assert len(make(0.3, 0.9, 1)) == 1


@pytest.mark.parametrize("make", [linspace, cosinespace])
def test_space_is_lazy_and_reiterable(make):
    space = make(2.0, -1.0, 6)
    first, second = list(space), list(space)
    assert first == second and len(space) == 6
    assert [space.value_at(i) for i in reversed(range(6))] == first[::-1]
    assert space[-1] == first[-1] and space[-6] == first[0]


@pytest.mark.parametrize("make", [linspace, cosinespace])
def test_space_index_out_of_range_raises(make):
    space = make(0, 1, 4)
    with pytest.raises(IndexError, match="out of range: it has 4"):
        space[4]
    with pytest.raises(IndexError, match="out of range"):
        space.value_at(-1)
    with pytest.raises(TypeError, match="must be integers"):
        space[1.5]


@pytest.mark.parametrize("steps", [0, -2, 2.5, True, "3", None])
def test_space_invalid_steps_raise(steps):
    with pytest.raises(ConfigurationError, match=r"steps received .*expected an integer >= 1"):
        linspace(0, 1, steps)
    with pytest.raises(ConfigurationError, match=r"cosinespace: steps received"):
        cosinespace(0, 1, steps)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "a", None])
def test_space_invalid_ends_raise(bad):
    with pytest.raises(ConfigurationError, match="expected a finite number"):
        linspace(bad, 1, 3)
    with pytest.raises(ConfigurationError, match="end received"):
        cosinespace(0, bad, 3)


def test_space_equality_and_repr():
    assert linspace(0, 1, 3) == linspace(0.0, 1.0, 3)
    assert linspace(0, 1, 3) != cosinespace(0, 1, 3)
    assert repr(cosinespace(1, 0, 4)) == "cosinespace(1.0, 0.0, 4)"


def test_phase_iterates_one_dict_per_step():
    phase = Phase(lr=linspace(0, 1, 3), momentum=[0.9, 0.85, 0.8])
    assert list(phase) == [
        {"lr": 0.0, "momentum": 0.9},
        {"lr": 0.5, "momentum": 0.85},
        {"lr": 1.0, "momentum": 0.8},
    ]
    assert list(phase) == list(phase)
    assert len(phase) == 3 and phase.params == ("lr", "momentum")
    assert phase[-1] == phase.value_at(2)


def test_phase_with_one_parameter_sets_only_it():
    assert list(Phase(momentum=cosinespace(0.9, 0.9, 2))) == [{"momentum": 0.9}, {"momentum": 0.9}]


def test_phase_without_parameter_raises():
    with pytest.raises(ConfigurationError, match="received no parameter"):
        Phase()


def test_phase_lengths_must_agree():
    with pytest.raises(ConfigurationError, match=r"different lengths \{'lr': 3, 'momentum': 4\}"):
        Phase(lr=linspace(0, 1, 3), momentum=linspace(0.9, 0.8, 4))


@pytest.mark.parametrize("bad", [0.1, "abc", [], [0.1, "x"]])
def test_phase_rejects_what_is_not_a_space(bad):
    with pytest.raises(ConfigurationError, match="Phase: lr received"):
        Phase(lr=bad)


def test_phase_step_out_of_range_raises():
    with pytest.raises(IndexError, match="Phase step 3 is out of range"):
        Phase(lr=linspace(0, 1, 3)).value_at(3)


def test_sgdr_phases_lengths_grow_by_cycle_mult():
    phases = sgdr_phases(base_cycle_length=4, cycles=3, lr=(0.5, 0.05), cycle_mult=3)
    assert [len(p) for p in phases] == [4, 12, 36]
    assert sum(len(p) for p in phases) == sum(4 * 3**i for i in range(3))
    for phase in phases:
        values = [step["lr"] for step in phase]
        assert values[0] == 0.5 and values[-1] == 0.05
        assert values == list(cosinespace(0.5, 0.05, len(phase)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_cycle_length": 0, "cycles": 2}, "base_cycle_length received 0"),
        ({"base_cycle_length": 3, "cycles": 1.5}, "cycles received 1.5"),
        ({"base_cycle_length": 3, "cycles": 2, "lr": 0.1}, r"lr received 0.1; expected a pair"),
        ({"base_cycle_length": 3, "cycles": 2, "cycle_mult": 0}, "cycle_mult received 0"),
    ],
)
def test_sgdr_phases_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        sgdr_phases(**kwargs)


def test_one_cycle_phases_shape():
    phases = one_cycle_phases(
        100, lr=(0.1, 1.0), momentum=(0.95, 0.85), finetune_lr=0.01, finetune_fraction=0.1
    )
    assert [len(p) for p in phases] == [45, 45, 10]
    steps = [step for phase in phases for step in phase]
    lrs = [s["lr"] for s in steps]
    momenta = [s["momentum"] for s in steps]
    assert lrs[0] == 0.1 and max(lrs) == lrs[44] == 1.0 and lrs[89] == 0.1 and lrs[-1] == 0.01
    assert momenta[0] == 0.95 and min(momenta) == momenta[44] == 0.85 and momenta[-1] == 0.95
    assert all(a <= b for a, b in itertools.pairwise(lrs[:45]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[45:]))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.29, 0.5, 0.99])
def test_one_cycle_phases_lengths_add_up(fraction):
    for steps in range(1, 60):
        phases = one_cycle_phases(steps, finetune_fraction=fraction)
        assert sum(len(p) for p in phases) == steps
        assert all(len(p) > 0 for p in phases)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps received 0"),
        (
            {"steps": 10, "finetune_fraction": 1.0},
            r"finetune_fraction received 1.0; expected a number in \[0, 1\)",
        ),
        ({"steps": 10, "finetune_fraction": -0.1}, "finetune_fraction received -0.1"),
        ({"steps": 10, "lr": (0.1,)}, "lr received"),
        ({"steps": 10, "momentum": "high"}, "momentum received 'high'"),
        ({"steps": 10, "finetune_lr": None}, "finetune_lr received None"),
    ],
)
def test_one_cycle_phases_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        one_cycle_phases(**kwargs)


def _assert_png_holds_a_picture(path, width, height):
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    pixels = image.reshape(-1, image.shape[-1])
    assert len(np.unique(pixels, axis=0)) > 10, "the image is (nearly) uniform"
    # Some pixels are dark (the curve, ticks, labels) and most are the light background.
    brightness = pixels[:, :3].mean(axis=1)
    assert (brightness < 0.5).mean() > 0.001 and (brightness > 0.9).mean() > 0.5


def test_phase_plot_saves_a_picture(tmp_path):
    phase = Phase(lr=cosinespace(1, 0, 50), momentum=linspace(0.8, 0.9, 50))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    try:
        returned = phase.plot("momentum", ax=ax)
        assert returned is ax
        assert list(ax.lines[0].get_ydata()) == list(linspace(0.8, 0.9, 50))
        assert ax.get_ylabel() == "momentum"
        fig.savefig(tmp_path / "phase.png")
    finally:
        plt.close(fig)
    _assert_png_holds_a_picture(tmp_path / "phase.png", 200, 150)


def test_phase_plot_without_axes_makes_a_figure(tmp_path):
    ax = Phase(lr=linspace(0, 1, 10)).plot()
    try:
        assert list(ax.lines[0].get_ydata()) == list(linspace(0, 1, 10))
        ax.figure.set_size_inches(3, 2)
        ax.figure.savefig(tmp_path / "lr.png", dpi=40)
    finally:
        plt.close(ax.figure)
    _assert_png_holds_a_picture(tmp_path / "lr.png", 120, 80)


def test_phase_plot_of_unknown_parameter_raises():
    with pytest.raises(ConfigurationError, match=r"param received 'momentum'; this phase sets \['lr'\]"):
        Phase(lr=linspace(0, 1, 3)).plot("momentum")


def test_phase_plot_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingExtraError, match=r'pip install "experiment\[plot\]"') as raised:
        Phase(lr=linspace(0, 1, 3)).plot()
    assert isinstance(raised.value, ImportError)
