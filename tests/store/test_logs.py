"""load_logs: log.tsv as a DataFrame, and a clear error for a damaged one."""

from __future__ import annotations

import pytest

from experiment.errors import RunDirectoryError
from experiment.store import tsv
from experiment.store.logs import load_logs


def test_logs_load_reads_every_row(tmp_path):
    (tmp_path / "log.tsv").write_text(tsv.render([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]))

    assert load_logs(tmp_path)["loss"].tolist() == [0.5, 0.25]


def test_logs_load_of_undecodable_bytes_says_the_log_is_damaged(tmp_path):
    (tmp_path / "log.tsv").write_bytes(b"epoch\tloss\n1\t0.5\n2\t0.\xff5\n")

    with pytest.raises(RunDirectoryError, match=r"log\.tsv is damaged: it holds bytes that are not UTF-8"):
        load_logs(tmp_path)
