"""Tab-separated logs: appends that readers see whole, damaged bytes, repairs from the history."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from experiment.errors import RunDirectoryError
from experiment.store import tsv


def _test_log(path: Path) -> Path:
    tsv.append_row(path, {"time": "t1", "checkpoint": "best", "epoch": 3, "test_loss": 0.5})
    tsv.append_row(path, {"time": "t2", "checkpoint": "last", "epoch": 4, "test_loss": 0.25})
    return path


@pytest.mark.parametrize(
    "torn",
    [
        "t3\tbest\t5",  # a full disk cut the append short: no newline
        "t3\tbest\n",  # a complete line with too few fields
        "t3\tbest\t5\t0.1\textra\n",  # too many fields
    ],
)
def test_tsv_append_row_drops_a_torn_last_line_first(tmp_path, torn):
    path = _test_log(tmp_path / "test_log.tsv")
    with open(path, "a", encoding="utf-8") as file:
        file.write(torn)

    tsv.append_row(path, {"time": "t4", "checkpoint": "best", "epoch": 5, "test_loss": 0.125})

    frame = pd.read_csv(path, sep="\t")
    assert frame["time"].tolist() == ["t1", "t2", "t4"]
    assert frame["test_loss"].tolist() == [0.5, 0.25, 0.125]


def test_tsv_append_row_after_a_torn_header_starts_afresh(tmp_path):
    path = tmp_path / "test_log.tsv"
    path.write_text("time\tcheck")

    tsv.append_row(path, {"time": "t1", "epoch": 1})

    assert path.read_text() == "time\tepoch\nt1\t1\n"


def test_tsv_append_row_keeps_a_sound_file_as_it_is(tmp_path):
    path = _test_log(tmp_path / "test_log.tsv")
    before = path.read_text()

    tsv.append_row(path, {"time": "t3", "checkpoint": "best", "epoch": 5, "test_loss": 1.0})

    assert path.read_text() == before + "t3\tbest\t5\t1.0\n"


def test_tsv_append_row_refuses_a_symlinked_log(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("time\tepoch\n")
    path = tmp_path / "run" / "test_log.tsv"
    path.parent.mkdir()
    path.symlink_to(outside)

    with pytest.raises(RunDirectoryError, match=r"test_log\.tsv is a symbolic link"):
        tsv.append_row(path, {"time": "t1", "epoch": 1})
    assert outside.read_text() == "time\tepoch\n"


def _damaged(path: Path, *, in_header: bool = False) -> Path:
    text = tsv.render([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]).encode()
    if in_header:
        path.write_bytes(b"ep\xffoch" + text[5:])
    else:
        path.write_bytes(text.replace(b"0.25", b"0.\xff\xfe5"))
    return path


@pytest.mark.parametrize("in_header", [False, True])
def test_tsv_reading_undecodable_bytes_says_the_file_is_damaged(tmp_path, in_header):
    path = _damaged(tmp_path / "log.tsv", in_header=in_header)

    with pytest.raises(RunDirectoryError, match=r"log\.tsv is damaged: it holds bytes that are not UTF-8"):
        tsv.read_rows(path)


def test_tsv_repair_rewrites_undecodable_bytes_from_the_history(tmp_path):
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    for in_header in (False, True):
        path = _damaged(tmp_path / "log.tsv", in_header=in_header)

        assert tsv.repair(path, history)
        assert path.read_text(encoding="utf-8") == tsv.render(history)


def test_tsv_repair_of_a_symlinked_log_refuses_to_follow_it(tmp_path):
    outside = tmp_path / "outside.tsv"
    outside.write_text("keep me\n")
    path = tmp_path / "log.tsv"
    path.symlink_to(outside)

    with pytest.raises(RunDirectoryError, match=r"log\.tsv is a symbolic link"):
        tsv.repair(path, [{"epoch": 1, "loss": math.pi}])
    assert outside.read_text() == "keep me\n"
