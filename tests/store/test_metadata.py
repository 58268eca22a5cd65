"""experiment.json content: statuses, flattened config, the recorded command."""

from __future__ import annotations

import os

import pytest

from experiment.errors import ConfigurationError
from experiment.store.metadata import STATUSES, current_command, flat_hparams, recording_command, with_status


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
