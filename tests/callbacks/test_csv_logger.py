"""CSVLogger and AtomicCSVLogger: fake logs on a bare loop, then real runs interrupted and resumed."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from experiment.callbacks.csv_logger import AtomicCSVLogger, CSVLogger
from experiment.errors import ConfigurationError
from experiment.training.loop import TrainingLoop
from experiment.training.metric_resolution import resolve_batch_metrics, resolve_epoch_metrics
from tests.support.training import train_run

COLUMNS = ["epoch", "time", "lr", "loss", "acc", "f1", "val_loss", "val_acc", "val_f1"]


def _loop() -> TrainingLoop:
    network = nn.Linear(2, 3)
    return TrainingLoop(
        network,
        torch.optim.SGD(network.parameters(), lr=0.5),
        nn.functional.cross_entropy,
        batch_metrics=resolve_batch_metrics(["accuracy"]),
        epoch_metrics=resolve_epoch_metrics(["f1"]),
        device=torch.device("cpu"),
    )


def _logger(cls=CSVLogger, path: Path | None = None, loop: TrainingLoop | None = None, **kwargs):
    logger = cls(path, **kwargs)
    logger.set_trainer(loop or _loop())
    return logger


def _epoch_logs(epoch: int, validation: bool = True) -> dict:
    logs = {"epoch": epoch, "time": 0.5, "lr": 0.5, "loss": 1.0 / epoch, "acc": 50.0, "f1": 0.25}
    if validation:
        logs.update(val_loss=0.9 / epoch, val_acc=40.0, val_f1=0.2)
    return logs


def _batch(logger: CSVLogger, batch: int) -> None:
    logger.on_train_batch_end(
        batch, {"batch": batch, "size": 16, "time": 0.01, "loss": 0.1 * batch, "acc": 10.0}
    )


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    logger = _logger(path=tmp_path / "log.csv")
    logger.on_train_begin({})
    logger.on_epoch_end(1, _epoch_logs(1))
    logger.on_epoch_end(2, {**_epoch_logs(2, validation=False), "extra": 3})
    logger.on_train_end({})
    frame = pd.read_csv(tmp_path / "log.csv")
    assert list(frame.columns) == COLUMNS
    assert frame["loss"].tolist() == [1.0, 0.5] and frame["val_loss"].isna().tolist() == [False, True]


def test_csv_logger_writes_floats_at_full_precision(tmp_path):
    logger = _logger(path=tmp_path / "log.csv")
    logger.on_train_begin({})
    logger.on_epoch_end(1, {**_epoch_logs(1), "loss": 1 / 3})
    assert pd.read_csv(tmp_path / "log.csv")["loss"][0] == 1 / 3


def test_csv_logger_batch_granularity_adds_batch_rows_before_the_epoch_row(tmp_path):
    logger = _logger(path=tmp_path / "log.csv", batch_granularity=True, separator="\t")
    logger.trainer.epochs_completed = 2
    logger.on_train_begin({})
    for batch in (1, 2):
        _batch(logger, batch)
    logger.on_epoch_end(3, _epoch_logs(3))
    frame = pd.read_csv(tmp_path / "log.csv", sep="\t")
    assert list(frame.columns) == ["epoch", "batch", "size", *COLUMNS[1:]]
    assert frame["epoch"].tolist() == [3, 3, 3] and frame["batch"].fillna(0).tolist() == [1, 2, 0]
    assert frame["lr"].tolist() == [0.5] * 3 and frame["f1"].isna().tolist() == [True, True, False]
    assert logger.needs_batch_values and not CSVLogger(tmp_path / "x.csv").needs_batch_values


def test_csv_logger_quotes_values_holding_the_separator(tmp_path):
    logger = _logger(path=tmp_path / "log.csv", separator=";")
    logger.on_train_begin({})
    logger.on_epoch_end(1, {**_epoch_logs(1), "lr": "a;b"})
    with open(tmp_path / "log.csv", newline="") as file:
        rows = list(csv.reader(file, delimiter=";"))
    assert rows[1][2] == "a;b"


def test_csv_logger_without_append_starts_the_file_again(tmp_path):
    (tmp_path / "log.csv").write_text("old content\n")
    logger = _logger(path=tmp_path / "log.csv")
    logger.on_train_begin({})
    assert (tmp_path / "log.csv").read_text() == ",".join(COLUMNS) + "\n"


def test_csv_logger_append_keeps_the_file_and_adds_no_header(tmp_path):
    first = _logger(path=tmp_path / "log.csv")
    first.on_train_begin({})
    first.on_epoch_end(1, _epoch_logs(1))
    second = _logger(path=tmp_path / "log.csv", append=True)
    second.on_train_begin({})
    second.on_epoch_end(1, _epoch_logs(1))
    assert pd.read_csv(tmp_path / "log.csv")["epoch"].tolist() == [1, 1]


def test_csv_logger_appends_rows_in_place_without_rewriting_the_file(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path)
    logger.on_train_begin({})
    inode = path.stat().st_ino
    for epoch in range(1, 4):
        logger.on_epoch_end(epoch, _epoch_logs(epoch))
        assert path.stat().st_ino == inode and logger.size == path.stat().st_size


def test_csv_logger_buffers_batch_rows_and_before_commit_makes_them_durable(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path, batch_granularity=True)
    logger.flush_interval = None
    logger.on_train_begin({})
    header_size = path.stat().st_size
    _batch(logger, 1)
    assert path.stat().st_size == header_size  # not written at the training step
    logger.before_commit()  # the committer calls it just before taking the state
    state = logger.state_dict()
    assert state["size"] == path.stat().st_size > header_size and state["rows"] == 1


def test_csv_logger_batch_rows_are_written_after_flush_interval(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path, batch_granularity=True)
    logger.flush_interval = 0.0
    logger.on_train_begin({})
    _batch(logger, 1)
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.parametrize("cls", [CSVLogger, AtomicCSVLogger])
def test_csv_logger_resume_cuts_rows_written_after_the_checkpoint(tmp_path, cls):
    path = tmp_path / "log.csv"
    logger = _logger(cls, path=path, batch_granularity=True)
    logger.on_train_begin({})
    _batch(logger, 1)
    logger.on_epoch_end(1, _epoch_logs(1))
    state = logger.state_dict()
    committed = path.read_bytes()
    _batch(logger, 1)
    logger.on_epoch_end(2, _epoch_logs(2))  # written, then the process dies before the next commit
    assert len(path.read_bytes()) > len(committed)
    resumed = _logger(cls, path=path, batch_granularity=True)
    resumed.load_state_dict(state)
    resumed.on_train_begin({})
    assert path.read_bytes() == committed and resumed.rows == 2


def test_csv_logger_resume_with_the_file_gone_warns_and_starts_it_again(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path)
    logger.on_train_begin({})
    logger.on_epoch_end(1, _epoch_logs(1))
    state = logger.state_dict()
    path.unlink()
    resumed = _logger(path=path)
    resumed.load_state_dict(state)
    with pytest.warns(UserWarning, match="log.csv is missing"):
        resumed.on_train_begin({})
    assert path.read_text() == ",".join(COLUMNS) + "\n"


def test_csv_logger_resume_with_a_shorter_file_warns_and_continues_it(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path)
    logger.on_train_begin({})
    logger.on_epoch_end(1, _epoch_logs(1))
    state = logger.state_dict()
    path.write_text(",".join(COLUMNS) + "\n")
    resumed = _logger(path=path)
    resumed.load_state_dict(state)
    with pytest.warns(UserWarning, match=r"fewer than the \d+ of the checkpoint"):
        resumed.on_train_begin({})
    resumed.on_epoch_end(2, _epoch_logs(2))
    assert pd.read_csv(path)["epoch"].tolist() == [2]


def test_atomic_csv_logger_replaces_the_file_through_the_temporary_filename(tmp_path, monkeypatch):
    import experiment.callbacks.csv_logger as module

    used = []
    real = module.atomic_writer

    def spy(path, **kwargs):
        used.append(kwargs["temporary_path"])
        return real(path, **kwargs)

    monkeypatch.setattr(module, "atomic_writer", spy)
    path, temporary = tmp_path / "log.csv", tmp_path / "log.csv.tmp"
    logger = _logger(AtomicCSVLogger, path=path, batch_granularity=True, temporary_filename=temporary)
    logger.on_train_begin({})
    inode = path.stat().st_ino
    for batch in (1, 2):
        _batch(logger, batch)
    assert len(path.read_text().splitlines()) == 1  # batch rows wait for the epoch end
    logger.on_epoch_end(1, _epoch_logs(1))
    assert len(path.read_text().splitlines()) == 4 and path.stat().st_ino != inode
    assert used == [temporary, temporary] and not temporary.exists()


def test_atomic_csv_logger_writes_what_csv_logger_writes(tmp_path):
    for cls in (CSVLogger, AtomicCSVLogger):
        logger = _logger(cls, path=tmp_path / f"{cls.__name__}.csv", batch_granularity=True)
        logger.on_train_begin({})
        _batch(logger, 1)
        logger.on_epoch_end(1, _epoch_logs(1))
        logger.on_train_end({})
    assert (tmp_path / "CSVLogger.csv").read_bytes() == (tmp_path / "AtomicCSVLogger.csv").read_bytes()


@pytest.mark.parametrize("separator", ["", ";;", "\n", '"', 3])
def test_csv_logger_rejects_invalid_separators(tmp_path, separator):
    with pytest.raises(ConfigurationError, match="separator: received"):
        CSVLogger(tmp_path / "log.csv", separator=separator)


def test_csv_logger_without_trainer_says_how_to_use_it(tmp_path):
    with pytest.raises(ConfigurationError, match=r"CSVLogger received no trainer"):
        CSVLogger(tmp_path / "log.csv").on_train_begin({})


# ------------------------------------------------------------------------ through real training
def _rows_without_time(path: Path, separator: str) -> list[list[str]]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file, delimiter=separator))
    time_column = rows[0].index("time")
    return [row[:time_column] + row[time_column + 1 :] for row in rows]


@pytest.mark.parametrize("cls", [CSVLogger, AtomicCSVLogger])
def test_csv_logger_resumed_run_writes_the_same_rows_once(run_dirs, cls):
    straight, resumed = run_dirs

    def factory(directory: Path):
        def build():
            logger = cls(directory / "log.csv", batch_granularity=True, separator="\t")
            logger.flush_interval = 0.0  # write every batch row at once, so a crash leaves some behind
            return [logger]

        return build

    train_run(straight, epochs=3, callbacks=factory(straight))
    # a crash in epoch 2 three batches after its last checkpoint (the end of epoch 1) ...
    train_run(resumed, epochs=3, callbacks=factory(resumed), interrupt_at=9)
    assert len((resumed / "log.csv").read_text().splitlines()) == 1 + 7 + 3
    # ... then one in epoch 3 a batch after a step checkpoint (step 15)
    train_run(resumed, epochs=3, callbacks=factory(resumed), interrupt_at=16, checkpoint_every=5)
    assert len((resumed / "log.csv").read_text().splitlines()) == 1 + 14 + 4
    train_run(resumed, epochs=3, callbacks=factory(resumed), checkpoint_every=5)
    expected = _rows_without_time(straight / "log.csv", "\t")
    assert len(expected) == 1 + 3 * (6 + 1)
    assert _rows_without_time(resumed / "log.csv", "\t") == expected


def test_csv_logger_state_dict_writes_nothing_and_keeps_buffered_rows(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path, batch_granularity=True)
    logger.flush_interval = None
    logger.on_train_begin({})
    committed = path.read_bytes()
    _batch(logger, 1)
    state = logger.state_dict()
    assert path.read_bytes() == committed and state["size"] == len(committed)
    assert state["pending"].count("\n") == 1 and state["rows"] == 1
    assert logger.state_dict() == state  # taking it again changes nothing


def test_csv_logger_rows_buffered_at_a_commit_are_written_by_the_resumed_run(tmp_path):
    path = tmp_path / "log.csv"
    logger = _logger(path=path, batch_granularity=True)
    logger.flush_interval = None
    logger.on_train_begin({})
    _batch(logger, 1)
    state = logger.state_dict()  # taken without before_commit: the row is in the state
    resumed = _logger(path=path, batch_granularity=True)
    resumed.load_state_dict(state)
    resumed.on_train_begin({})
    _batch(resumed, 2)
    resumed.on_epoch_end(1, _epoch_logs(1))
    rows = list(csv.reader(path.read_text().splitlines()))
    assert [row[1] for row in rows[1:]] == ["1", "2", ""]


def test_csv_logger_state_problems_reports_missing_keys(tmp_path):
    (problem,) = CSVLogger(tmp_path / "log.csv").state_problems({"columns": None})
    assert "CSVLogger: the saved state lacks ['size', 'rows']" in problem
