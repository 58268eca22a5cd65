"""The core promise in one test: interrupted and resumed equals uninterrupted."""

from __future__ import annotations

from tests.support.training import assert_same_training_state, train_run


def test_experiment_resume_mid_epoch_matches_uninterrupted(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=3)
    for step in (5, 11):
        train_run(resumed, epochs=3, interrupt_at=step, checkpoint_every=2)
    actual = train_run(resumed, epochs=3, checkpoint_every=2)
    assert_same_training_state(expected, actual)
