"""read_log_tail and lines_backwards: the last and best rows of a log.tsv, read from its end."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiment.errors import RunDirectoryError
from experiment.inspection.log_tail import lines_backwards, read_log_tail
from experiment.store import tsv


def _write_log(path: Path, values: list[float]) -> None:
    path.write_text(tsv.render([{"epoch": i + 1, "val_loss": v} for i, v in enumerate(values)]))


def test_log_tail_reads_lines_backwards_across_blocks(tmp_path):
    path = tmp_path / "log.tsv"
    lines = ["header"] + [f"row {i} " + "x" * (i % 7) for i in range(50)]
    path.write_text("\n".join(lines) + "\n")

    assert list(lines_backwards(path, block_size=5)) == lines[::-1]
    path.write_text("\n".join(lines))  # no final newline
    assert list(lines_backwards(path, block_size=16)) == lines[::-1]


def test_log_tail_stops_at_the_known_best_epoch(tmp_path):
    path = tmp_path / "log.tsv"
    _write_log(path, [float(i) for i in range(100)])

    tail = read_log_tail(path, monitor="val_loss", mode="min", best_epoch=97)

    assert tail.last_row == {"epoch": "100", "val_loss": "99.0"}
    assert tail.best_row == {"epoch": "97", "val_loss": "96.0"}
    assert tail.rows_read == 4


def test_log_tail_computes_the_best_like_training_does(tmp_path):
    path = tmp_path / "log.tsv"
    _write_log(path, [0.5, 0.2, float("nan"), 0.2, 0.3])
    with open(path, "a") as file:
        file.write("6\t0.")  # a torn last line, as a crash may leave

    tail = read_log_tail(path, monitor="val_loss", mode="min")

    assert tail.best_row == {"epoch": "2", "val_loss": "0.2"}  # the first of equal values
    assert tail.last_row == {"epoch": "5", "val_loss": "0.3"}
    assert read_log_tail(path, monitor="val_loss", mode="max").best_row["epoch"] == "1"


def test_log_tail_of_a_missing_log_is_empty(tmp_path):
    tail = read_log_tail(tmp_path / "log.tsv", monitor="val_loss", mode="min")

    assert (tail.header, tail.last_row, tail.best_row, tail.rows_read) == (None, None, None, 0)


def test_log_tail_of_a_header_only_log_has_no_rows(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("epoch\tval_loss\n")

    tail = read_log_tail(path, monitor="val_loss", mode="min")

    assert (tail.header, tail.last_row, tail.best_row, tail.rows_read) == (
        ["epoch", "val_loss"],
        None,
        None,
        0,
    )


def test_log_tail_skips_rows_with_a_wrong_number_of_fields(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("epoch\tval_loss\n1\t0.5\n2\t0.4\textra\n3\t0.45\n")

    tail = read_log_tail(path, monitor="val_loss", mode="min")

    assert tail.last_row == {"epoch": "3", "val_loss": "0.45"}
    assert tail.best_row == {"epoch": "3", "val_loss": "0.45"}
    assert tail.rows_read == 2


def test_log_tail_without_monitor_finds_the_last_row_only(tmp_path):
    path = tmp_path / "log.tsv"
    _write_log(path, [0.3, 0.1, 0.2])

    tail = read_log_tail(path)

    assert tail.last_row == {"epoch": "3", "val_loss": "0.2"}
    assert tail.best_row is None
    assert tail.rows_read == 3


def test_log_tail_of_undecodable_bytes_says_the_log_is_damaged(tmp_path):
    path = tmp_path / "log.tsv"
    _write_log(path, [0.5, 0.2, 0.3])
    path.write_bytes(path.read_bytes().replace(b"0.2", b"0.\xff"))

    with pytest.raises(RunDirectoryError, match=r"log\.tsv is damaged: it holds bytes that are not UTF-8"):
        read_log_tail(path, monitor="val_loss", mode="min")


def test_log_tail_skips_a_torn_last_line_cut_inside_a_character(tmp_path):
    path = tmp_path / "log.tsv"
    _write_log(path, [0.5, 0.2])
    with open(path, "ab") as file:
        file.write("3\t\u00e9".encode()[:-1])  # the first byte of a two-byte character

    assert read_log_tail(path, monitor="val_loss", mode="min").last_row == {"epoch": "2", "val_loss": "0.2"}
