"""train() on a run that is over says so in one line, and never lowers the recorded target."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from experiment import ProgressionCallback
from tests.support.training import make_data, make_experiment, train_run


def _settings(run_dir: Path) -> dict:
    return json.loads((run_dir / "experiment.json").read_text())


def test_fewer_epochs_than_done_warns_and_changes_nothing(tmp_path: Path) -> None:
    train_run(tmp_path, epochs=3)
    before = _settings(tmp_path)
    exp = make_experiment(tmp_path)
    with pytest.warns(
        UserWarning, match=r"has 3 epoch\(s\) \(target 3\); epochs=2 is the run's total.*epochs=5"
    ):
        history = exp.train(make_data(), make_data(48, seed=2), epochs=2, progress=False)
    assert len(history) == 3
    after = _settings(tmp_path)
    assert after["settings"]["epochs"] == 3  # once rewritten to 2: `exp ls` showed 3/2
    assert after["status"] == before["status"] == "finished"
    assert after["updated"] == before["updated"]


def test_lower_target_than_recorded_keeps_the_recorded_one(tmp_path: Path) -> None:
    train_run(tmp_path, epochs=4, interrupt_at=13)  # 6 steps per epoch: interrupted in epoch 3
    assert _settings(tmp_path)["status"] == "failed"  # an exception, as a crash would record it
    exp = make_experiment(tmp_path)
    with pytest.warns(
        UserWarning, match=r"has 2 epoch\(s\) \(target 4\); epochs=1.*Pass epochs=4 to train on"
    ):
        exp.train(make_data(), make_data(48, seed=2), epochs=1, progress=False)
    assert _settings(tmp_path)["settings"]["epochs"] == 4


def test_finished_run_says_nothing_to_train_in_one_line(tmp_path: Path) -> None:
    train_run(tmp_path, epochs=2)
    out = io.StringIO()
    exp = make_experiment(tmp_path)
    exp.train(make_data(), make_data(48, seed=2), epochs=2, callbacks=[ProgressionCallback(stream=out)])
    assert (
        out.getvalue()
        == f"{tmp_path} has its 2 epoch(s); nothing to train (pass a larger epochs= to train further).\n"
    )
    assert _settings(tmp_path)["settings"]["epochs"] == 2


def test_fewer_epochs_warning_points_at_the_train_call(tmp_path: Path) -> None:
    train_run(tmp_path, epochs=2)
    exp = make_experiment(tmp_path)
    with pytest.warns(UserWarning, match="not a number to add") as caught:
        exp.train(make_data(), make_data(48, seed=2), epochs=1, progress=False)
    assert [Path(warning.filename) for warning in caught] == [Path(__file__)]
