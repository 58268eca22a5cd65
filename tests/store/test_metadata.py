"""experiment.json content: statuses, flattened config, the recorded command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiment.errors import ConfigurationError
from experiment.store.metadata import STATUSES, flat_hparams, new_metadata, plain_config, with_status
from experiment.store.relaunch import current_command, recording_command


@pytest.mark.parametrize("status", STATUSES)
def test_metadata_with_status_records_the_status_and_the_writer(status):
    updated = with_status({"config": {"lr": 0.1}, "status": "running"}, status, "why")

    assert (updated["status"], updated["message"], updated["config"]) == (status, "why", {"lr": 0.1})
    assert updated["pid"] == os.getpid()


def test_metadata_with_status_refuses_an_unknown_status():
    with pytest.raises(
        ConfigurationError,
        match=r"with_status: status received 'done'; expected one of 'running', 'finished'",
    ):
        with_status({"status": "running"}, "done")


def test_metadata_flat_hparams_flattens_nested_config():
    flat = flat_hparams({"lr": 0.1, "model": {"depth": 2, "act": None}, "ok": True})

    assert flat == {"lr": 0.1, "model.depth": 2, "model.act": "None", "ok": True}


def test_metadata_recording_command_is_scoped_to_its_block(tmp_path):
    own = current_command()
    with recording_command({"argv": ["python", "-m", "cli"], "cwd": tmp_path}):
        assert current_command() == {"argv": ["python", "-m", "cli"], "cwd": str(tmp_path)}
    assert current_command() == own


def test_metadata_new_metadata_names_the_run_and_its_directory(tmp_path):
    first = new_metadata({"lr": 0.1}, {"epochs": 3}, directory=tmp_path / "a" / ".." / "run")
    second = new_metadata({"lr": 0.1}, {"epochs": 3})

    assert re.fullmatch(r"[0-9a-f]{32}", first["run_id"]) and first["run_id"] != second["run_id"]
    assert first["directory"] == str((tmp_path / "run").resolve())
    assert "directory" not in second  # RunDirectory.write_metadata records it at creation


def test_metadata_plain_config_converts_numpy_paths_and_tuples():
    config = {
        "lr": np.float32(0.5),
        "steps": np.int64(3),
        "flag": np.bool_(True),
        "scale": np.array([2.5]),
        "data": Path("data/train"),
        "optim": {"betas": (0.9, np.float64(0.99)), "names": ["a", ("b", 1)]},
        "none": None,
    }

    plain = plain_config(config)

    assert plain == {
        "lr": 0.5,
        "steps": 3,
        "flag": True,
        "scale": 2.5,
        "data": "data/train",
        "optim": {"betas": [0.9, 0.99], "names": ["a", ["b", 1]]},
        "none": None,
    }
    assert [type(plain[key]) for key in ("lr", "steps", "flag", "scale")] == [float, int, bool, float]
    assert json.loads(json.dumps(plain)) == plain
    assert config["optim"]["betas"] == (0.9, 0.99)  # a copy: the user's config is untouched
    assert plain_config(None) == {}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            {"optim": {"betas": torch.tensor([0.9, 0.99])}},
            r"config\['optim'\]\['betas'\]: received torch\.Tensor",
        ),
        ({"layers": {1, 2}}, r"config\['layers'\]: received set \(\{1, 2\}\); expected JSON data"),
        ({"sizes": [1, object()]}, r"config\['sizes'\]\[1\]: received object"),
        ({"weights": np.ones(3)}, r"config\['weights'\]: received numpy\.ndarray"),
        ({"by_id": {1: "a"}}, r"config\['by_id'\]: the key 1: received int; expected JSON data"),
        ([("lr", 0.1)], r"config: received list; expected a dict of JSON values, or None"),
    ],
)
def test_metadata_plain_config_refuses_what_json_cannot_hold(config, match):
    with pytest.raises(ConfigurationError, match=match) as raised:
        plain_config(config)
    assert "Convert it before passing config=" in str(raised.value) or "expected a dict" in str(raised.value)


def test_metadata_new_metadata_refuses_a_config_that_is_not_json():
    with pytest.raises(ConfigurationError, match=r"config\['p'\]: received set"):
        new_metadata({"p": {1}}, {})


def test_metadata_a_torchrun_worker_records_the_torchrun_command(tmp_path):
    """The worker's parent is the launcher: its command line (read from /proc) is what reruns every
    rank. A stand-in named torchrun starts the worker, as torchrun's agent does."""
    launcher = tmp_path / "torchrun"
    launcher.write_text(
        "import subprocess, sys\n"
        "code = 'import json; from experiment.store.relaunch import current_command; "
        "print(json.dumps(current_command()))'\n"
        "sys.exit(subprocess.run([sys.executable, '-c', code]).returncode)\n"
    )
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "job-1", "GROUP_WORLD_SIZE": "2"}
    args = [sys.executable, str(launcher), "--nproc_per_node=2", "train.py", "runs/x"]

    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)
    assert recorded["argv"][1:] == [str(launcher), "--nproc_per_node=2", "train.py", "runs/x"]
    assert recorded["nodes"] == 2
    assert recorded["cwd"] == str(tmp_path)
