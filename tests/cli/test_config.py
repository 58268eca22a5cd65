"""The run's configuration: stored in experiment.json, shown by `exp status`, sent to TensorBoard's HParams."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cli.main import cli
from experiment.store.metadata import flat_hparams
from tests.support.training import train_run

CONFIG = {"lr": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9}, "layers": [16, 3], "amp": False}


def _events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _session_hparams(accumulator):
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    return {
        key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for key, value in data.session_start_info.hparams.items()
    }


def test_config_is_stored_and_shown_by_status(tmp_path):
    train_run(tmp_path / "run", epochs=1, experiment_options={"config": CONFIG})

    result = CliRunner().invoke(cli, ["status", str(tmp_path / "run")])

    assert json.loads((tmp_path / "run" / "experiment.json").read_text())["config"] == CONFIG
    assert "\n  optimizer.momentum  0.9\n" in result.output
    assert "\n  layers              [16, 3]\n" in result.output


def test_config_reaches_tensorboard_as_hparams_beside_the_scalars(tmp_path):
    train_run(tmp_path / "run", epochs=2, experiment_options={"config": CONFIG})

    events = _events(tmp_path / "run")

    assert _session_hparams(events) == {
        "lr": 0.1,
        "optimizer.name": "sgd",
        "optimizer.momentum": 0.9,
        "layers": "[16, 3]",
        "amp": False,
    }
    assert [event.step for event in events.Scalars("val_loss")] == [1, 2]
    assert "hparams/val_loss" not in events.Tags()["scalars"]


def test_config_hparams_survive_a_resume_without_duplicating_scalars(tmp_path):
    train_run(tmp_path / "run", epochs=3, interrupt_at=9, experiment_options={"config": CONFIG})
    train_run(tmp_path / "run", epochs=3, experiment_options={"config": CONFIG})

    events = _events(tmp_path / "run")

    assert _session_hparams(events)["optimizer.name"] == "sgd"
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3]


def test_config_without_values_writes_no_hparams(tmp_path):
    train_run(tmp_path / "run", epochs=1)

    events = _events(tmp_path / "run")

    with pytest.raises(KeyError, match="hparams"):
        events.PluginTagToContent("hparams")
    assert [event.step for event in events.Scalars("loss")] == [1]


def test_recording_flat_hparams_flattens_and_stringifies():
    assert flat_hparams({"a": {"b": {"c": 1}}, "d": None, "e": (1, 2), "f": "x"}) == {
        "a.b.c": 1,
        "d": "None",
        "e": "(1, 2)",
        "f": "x",
    }
