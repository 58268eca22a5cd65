"""MLFlowLogger against a real local MLflow store (SQLite: MLflow 3 refuses its file store)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from experiment import Callback, ConfigurationError
from experiment.callbacks.mlflow_logger import MLFlowLogger
from experiment.errors import MissingExtraError
from tests.support.training import CrashAtEpochEnd, Interrupt, make_data, train_run

mlflow_tracking = pytest.importorskip("mlflow.tracking")

CONFIG = {"lr": 0.1, "model": {"hidden": 16, "dropout": 0.2}}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); tests use own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(tracking_uri):
    return mlflow_tracking.MlflowClient(tracking_uri=tracking_uri)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def run_ids(client, experiment_name: str) -> list[str]:
    experiment = client.get_experiment_by_name(experiment_name)
    return [run.info.run_id for run in client.search_runs([experiment.experiment_id])]


def make_loggers(tracking_uri: str, name: str, made: list[MLFlowLogger], **options: Any):
    """A callbacks factory: a fresh logger per attempt, its config logged before train (as a script would)."""

    def factory() -> list[Any]:
        logger = MLFlowLogger(experiment_name=name, tracking_uri=tracking_uri, **options)
        logger.log_config_params(CONFIG)
        made.append(logger)
        return [logger]

    return factory


def test_mlflow_logger_logs_params_epoch_metrics_and_test_metrics(tmp_path, tracking_uri, client):
    made: list[MLFlowLogger] = []
    exp = train_run(tmp_path / "run", epochs=3, callbacks=make_loggers(tracking_uri, "plain", made))
    logger = made[0]
    run = client.get_run(logger.run_id)
    assert run.data.params == {"lr": "0.1", "model.hidden": "16", "model.dropout": "0.2"}
    assert run.info.status == "FINISHED"
    logs = exp.logs
    for key in ("loss", "acc", "f1", "val_loss", "val_acc", "lr"):
        assert history(client, logger.run_id, key) == list(zip([1, 2, 3], logs[key], strict=True)), key
    assert history(client, logger.run_id, "batch_loss") == []
    logger.log_metric("custom", 2.5, step=7)
    test_logs = exp.test(make_data(40, seed=3), callbacks=[logger], progress=False)
    assert history(client, logger.run_id, "custom") == [(7, 2.5)]
    assert history(client, logger.run_id, "test_loss") == [(3, test_logs["test_loss"])]
    assert run_ids(client, "plain") == [logger.run_id]


def test_mlflow_logger_resume_mid_epoch_continues_the_same_run_once_per_step(tmp_path, tracking_uri, client):
    straight: list[MLFlowLogger] = []
    train_run(
        tmp_path / "straight",
        epochs=3,
        checkpoint_every=4,
        callbacks=make_loggers(tracking_uri, "straight", straight, batch_granularity=True),
    )
    resumed: list[MLFlowLogger] = []
    for step in (9, 15, None):  # commits at steps 8 and 12, both in the middle of an epoch
        train_run(
            tmp_path / "resumed",
            epochs=3,
            checkpoint_every=4,
            interrupt_at=step,
            callbacks=make_loggers(tracking_uri, "resumed", resumed, batch_granularity=True),
        )
    assert len({logger.run_id for logger in resumed}) == 1
    assert run_ids(client, "resumed") == [resumed[0].run_id]
    expected_id, actual_id = straight[0].run_id, resumed[0].run_id
    assert [step for step, _ in history(client, actual_id, "batch_loss")] == list(range(1, 19))
    for key in ("batch_loss", "batch_acc", "loss", "val_loss", "f1"):
        assert history(client, actual_id, key) == history(client, expected_id, key), key
    assert client.get_run(actual_id).info.status == "FINISHED"


def test_mlflow_logger_resume_after_a_crash_past_the_sent_epoch_logs_it_once(tmp_path, tracking_uri, client):
    made: list[MLFlowLogger] = []
    for crash in ([CrashAtEpochEnd(2)], []):  # epoch 2 is sent to MLflow, then dies before its commit
        factory = make_loggers(tracking_uri, "crash", made, batch_granularity=True)
        train_run(tmp_path / "run", epochs=3, callbacks=lambda f=factory, c=crash: [*f(), *c])
    run_id = made[0].run_id
    assert made[1].run_id == run_id
    assert [step for step, _ in history(client, run_id, "loss")] == [1, 2, 3]
    assert [step for step, _ in history(client, run_id, "batch_loss")] == list(range(1, 19))


def test_mlflow_logger_state_holds_the_run_and_unsent_batch_values(tracking_uri):
    logger = MLFlowLogger(tracking_uri=tracking_uri, batch_granularity=True)
    assert logger.needs_batch_values is True
    logger.set_trainer(type("Trainer", (), {"global_step": 4})())  # type: ignore[arg-type]
    logger.on_train_batch_end(4, {"batch": 4, "size": 16, "time": 0.1, "loss": 0.5, "acc": 50.0})
    state = logger.state_dict()
    assert state["run_id"] is None
    assert [record[:3] for record in state["pending"]] == [["batch_loss", 0.5, 4], ["batch_acc", 50.0, 4]]
    assert MLFlowLogger(tracking_uri=tracking_uri).needs_batch_values is False


def test_mlflow_logger_unknown_saved_run_is_an_error(tracking_uri):
    logger = MLFlowLogger(experiment_name="missing", tracking_uri=tracking_uri)
    logger.load_state_dict({"run_id": "0123456789abcdef0123456789abcdef", "pending": []})
    with pytest.raises(ConfigurationError, match="does not hold"):
        logger.on_train_begin({})


def test_mlflow_logger_rejects_a_config_that_is_not_a_mapping(tracking_uri):
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        MLFlowLogger(tracking_uri=tracking_uri).log_config_params([("lr", 0.1)])  # type: ignore[arg-type]


def test_mlflow_logger_without_mlflow_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r'pip install "experiment\[mlflow\]"'):
        MLFlowLogger(experiment_name="x")


def test_mlflow_logger_flattens_lists_and_tuples_of_the_config(tracking_uri, client):
    logger = MLFlowLogger(experiment_name="sequences", tracking_uri=tracking_uri)
    logger.log_config_params({"layers": [16, 8], "pair": (0.5, {"name": "relu"}), "name": "mlp"})
    logger.on_train_begin({})
    params = client.get_run(logger.run_id).data.params
    assert params == {
        "layers.0": "16",
        "layers.1": "8",
        "pair.0": "0.5",
        "pair.1.name": "relu",
        "name": "mlp",
    }


def test_mlflow_logger_logs_numpy_scalars_of_the_epoch_logs(tracking_uri, client):
    logger = MLFlowLogger(experiment_name="numpy", tracking_uri=tracking_uri)
    logger.on_train_begin({})
    logs = {
        "epoch": 1,
        "time": np.float64(0.5),
        "loss": np.float32(0.25),
        "auc": np.float64(0.75),
        "hits": np.int64(3),
    }
    logger.on_epoch_end(1, logs)
    logger.on_train_end({})
    assert history(client, logger.run_id, "loss") == [(1, 0.25)]
    assert history(client, logger.run_id, "auc") == [(1, 0.75)]
    assert history(client, logger.run_id, "hits") == [(1, 3.0)]


def test_mlflow_logger_log_params_and_log_metrics_send_each_entry(tmp_path, tracking_uri, client):
    made: list[MLFlowLogger] = []

    def factory() -> list[Any]:
        logger = MLFlowLogger(experiment_name="dicts", tracking_uri=tracking_uri)
        logger.log_params({"optimizer": "sgd", "batch_size": 16})  # before the run exists: queued
        logger.log_metrics({"baseline_acc": 33.0, "baseline_loss": 1.1}, step=0)
        made.append(logger)
        return [logger]

    train_run(tmp_path / "run", epochs=1, callbacks=factory)
    logger = made[0]
    logger.log_metrics({"calibration": 0.5, "ece": 0.125})  # after training: sent at once
    assert client.get_run(logger.run_id).data.params == {"optimizer": "sgd", "batch_size": "16"}
    assert history(client, logger.run_id, "baseline_acc") == [(0, 33.0)]
    assert history(client, logger.run_id, "baseline_loss") == [(0, 1.1)]
    assert history(client, logger.run_id, "calibration") == [(0, 0.5)]
    assert history(client, logger.run_id, "ece") == [(0, 0.125)]


@pytest.mark.parametrize("method", ["log_params", "log_metrics"])
def test_mlflow_logger_log_params_and_metrics_need_a_mapping(tracking_uri, method):
    logger = MLFlowLogger(tracking_uri=tracking_uri)
    with pytest.raises(ConfigurationError, match=r"received list; expected a mapping of names to values"):
        getattr(logger, method)([("lr", 0.1)])


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number == self.epoch:
            self.trainer.stop_training = True


def test_mlflow_logger_last_epoch_is_logged_at_each_training_end_at_its_step(tmp_path, tracking_uri, client):
    made: list[MLFlowLogger] = []
    factory = make_loggers(tracking_uri, "last-epoch", made)
    train_run(tmp_path / "run", epochs=2, callbacks=factory)
    train_run(tmp_path / "run", epochs=4, callbacks=factory)  # the same run, trained further
    assert made[0].run_id == made[1].run_id
    assert history(client, made[0].run_id, "last-epoch") == [(2, 2.0), (4, 4.0)]
    stopped: list[MLFlowLogger] = []
    train_run(
        tmp_path / "stopped",
        epochs=4,
        callbacks=lambda: [StopAfter(3), *make_loggers(tracking_uri, "stopped", stopped)()],
    )
    assert history(client, stopped[0].run_id, "last-epoch") == [(3, 3.0)]  # completed, not asked


class CrashAtTrainEnd(Callback):
    def on_train_end(self, logs: dict[str, Any]) -> None:
        raise Interrupt("killed after the other callbacks ended their training")


def test_mlflow_logger_last_epoch_is_not_repeated_when_an_ended_run_ends_again(
    tmp_path, tracking_uri, client
):
    made: list[MLFlowLogger] = []
    factory = make_loggers(tracking_uri, "ends-twice", made)
    train_run(tmp_path / "run", epochs=2, callbacks=lambda: [*factory(), CrashAtTrainEnd()])
    # the status is not "finished": training it again runs every on_train_end once more
    train_run(tmp_path / "run", epochs=2, callbacks=factory)
    run_id = made[0].run_id
    assert made[1].run_id == run_id
    assert history(client, run_id, "last-epoch") == [(2, 2.0)]
    assert [step for step, _ in history(client, run_id, "loss")] == [1, 2]
    assert client.get_run(run_id).info.status == "FINISHED"
