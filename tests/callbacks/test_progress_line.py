"""The step line's pieces: fitting fields to a width, and the pace of a phase."""

from __future__ import annotations

import pytest

from experiment.callbacks.progress_format import format_age, format_interval, format_rate
from experiment.callbacks.progress_line import BAR_MAX_WIDTH, Field, Pace, fit_line, visible_width

FIELDS = [
    Field("\x1b[36mEpoch: 1/3 Step: 5/10", 0),
    Field(is_bar=True, priority=99),
    Field("ETA: 00:05", 2),
    Field("3.00 steps/s", 3),
    Field("loss: 0.5000", 1),
    Field("acc: 50.0000", 10),
]


def bar(columns: int) -> str:
    return "[" + "=" * (columns - 2) + "]"


def test_progress_line_fit_keeps_everything_with_room_and_caps_the_bar():
    line = fit_line(FIELDS, 200, bar)
    assert line == "\x1b[36mEpoch: 1/3 Step: 5/10 " + bar(BAR_MAX_WIDTH) + (
        " ETA: 00:05 3.00 steps/s loss: 0.5000 acc: 50.0000"
    )


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (82, "Epoch: 1/3 Step: 5/10 [========] ETA: 00:05 3.00 steps/s loss: 0.5000 acc: 50.0000"),
        (81, "Epoch: 1/3 Step: 5/10 ETA: 00:05 3.00 steps/s loss: 0.5000 acc: 50.0000"),
        (70, "Epoch: 1/3 Step: 5/10 ETA: 00:05 3.00 steps/s loss: 0.5000"),
        (47, "Epoch: 1/3 Step: 5/10 ETA: 00:05 loss: 0.5000"),
        (35, "Epoch: 1/3 Step: 5/10 loss: 0.5000"),
        (30, "Epoch: 1/3 Step: 5/10"),
        (16, "Epoch: 1/3 Step:"),
    ],
)
def test_progress_line_fit_drops_the_least_useful_fields_first(width, expected):
    line = fit_line(FIELDS, width, bar)
    assert line.replace("\x1b[36m", "") == expected
    assert visible_width(line) <= width


def test_progress_line_fit_leaves_out_the_bar_without_a_drawer():
    assert "=" not in fit_line(FIELDS, 200)


def test_progress_line_pace_weighs_recent_steps_or_all_equally():
    smoothed, average = Pace(0.3, now=0.0, steps=0), Pace(0.0, now=0.0, steps=0)
    assert smoothed.rate() is None and average.rate() is None
    now = 0.0
    for step in range(1, 16):
        now += 1.0 if step <= 10 else 0.1
        smoothed.update(step, now)
        average.update(step, now)
    assert average.rate() == pytest.approx(15 / 10.5)
    assert smoothed.rate() > 4  # the last 5 steps took 0.1 s each
    assert average.elapsed == pytest.approx(10.5)


def test_progress_line_pace_of_a_resumed_phase_counts_only_its_own_steps():
    pace = Pace(0.0, now=100.0, steps=40)
    pace.update(44, 102.0)
    assert pace.rate() == pytest.approx(2.0)


def test_progress_format_times_rates_and_ages():
    assert [format_interval(s) for s in (3.9, 75, 3600 + 62)] == ["00:03", "01:15", "1:01:02"]
    assert [format_rate(r) for r in (2, 12.34, 1234.5, 0.25)] == [
        "2.00 steps/s",
        "12.3 steps/s",
        "1234 steps/s",
        "4.00 s/step",
    ]
    ages = [format_age(s) for s in (0.2, 42, 200, 3 * 3600, 3 * 86400)]
    assert ages == ["just now", "42 s ago", "3 min ago", "3 h ago", "3 days ago"]
