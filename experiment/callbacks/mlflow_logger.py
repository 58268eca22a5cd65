"""MLFlowLogger: parameters and per-epoch metrics of a run in MLflow, one MLflow run across resumes.

MLflow is an optional extra (``pip install "experiment[mlflow]"``), imported when a logger is made.
The logger talks to MLflow through an ``MlflowClient`` of its own, so it never touches the global
active run of ``mlflow.start_run``.

The MLflow run id is part of the logger's saved state: a resumed training reopens the same MLflow
run and goes on logging there. MLflow keeps every value ever logged for a (metric, step) pair, so
the logger makes sure that each one is sent once:

- batch metrics (``batch_granularity=True``) wait in the logger's state until their epoch ends and
  are then sent with the epoch's metrics; steps of an interrupted attempt past its last checkpoint
  were never sent, and the resumed attempt sends them once;
- if training died after an epoch's metrics were sent but before that epoch was committed, the
  resumed run recomputes that epoch and, before sending it, skips the (metric, step) pairs that
  MLflow already holds;
- the ``last-epoch`` metric of a training's end is logged at the step of that epoch, and not again
  when a run killed after sending it ends its training once more.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from typing import Any

from experiment.arguments import reject
from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError, MissingExtraError

#: MLflow refuses more metrics than this in one ``log_batch`` call.
MAX_METRICS_PER_CALL = 1000

#: The metric logged when training ends: the number of epochs completed (Poutyne's name).
LAST_EPOCH = "last-epoch"


def _client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise MissingExtraError(
            "MLFlowLogger needs mlflow, which is not installed. Install the extra: "
            'pip install "experiment[mlflow]".'
        ) from error
    return MlflowClient


class MLFlowLogger(Callback):
    """Logs the epoch metrics of training and testing, and parameters, to an MLflow run.

    Epoch metrics are logged with ``step`` = the epoch number; with ``batch_granularity`` the
    batch loss and metrics are logged too, as ``batch_<name>`` with ``step`` = the global step.
    Test metrics (``test_loss``...) are logged with ``step`` = the number of completed epochs.
    When training ends, the metric ``last-epoch`` (Poutyne's) holds the number of epochs completed,
    at that same step, so a run trained further later adds a point instead of overwriting it.
    Parameters and metrics logged before training starts are sent once the run is open (on a
    resume, after the saved run id is restored). The run is marked finished when training ends.

    Args:
        experiment_name: the MLflow experiment, created if needed; MLflow's "Default" if None.
        tracking_uri: where MLflow stores runs (``"sqlite:///mlflow.db"``, ``"http://host:5000"``);
            MLflow's default (the ``MLFLOW_TRACKING_URI`` variable, else ``sqlite:///mlflow.db``)
            if None. A resumed training must use the same one.
        batch_granularity: also log the values of every training batch.

    Raises:
        MissingExtraError: mlflow is not installed.

    Example:
        >>> mlflow_logger = MLFlowLogger(experiment_name="blobs", tracking_uri="sqlite:///mlflow.db")
        >>> mlflow_logger.log_config_params({"lr": 0.1, "model": {"hidden": 16}})
        >>> exp.train(train_loader, valid_loader, epochs=10, callbacks=[mlflow_logger])
        >>> mlflow_logger.run_id  # the same after any number of resumes
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

    def __init__(
        self,
        *,
        experiment_name: str | None = None,
        tracking_uri: str | None = None,
        batch_granularity: bool = False,
    ) -> None:
        super().__init__()
        self._client_class = _client_class()
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.batch_granularity = bool(batch_granularity)
        self.needs_batch_values = self.batch_granularity
        self.run_id: str | None = None
        self._client: Any = None
        self._active = False
        self._queued: list[tuple[str, tuple[Any, ...]]] = []
        self._pending: list[list[Any]] = []
        self._recheck_epoch: int | None = None
        self._finish_after_test = False

    # ------------------------------------------------------------------------------ user API
    def log_config_params(self, config_params: Mapping[str, Any]) -> None:
        """Log a configuration as parameters; nested keys and list positions are joined with dots
        (``model.hidden``, ``layers.0``)."""
        for name, value in _flatten(_checked_mapping("config_params", config_params)):
            self.log_param(name, value)

    def log_param(self, param_name: str, value: Any) -> None:
        """Log one parameter (MLflow refuses a new value for a parameter already logged)."""
        self._send("param", (param_name, value))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log each ``name: value`` of ``params`` as a parameter, as :meth:`log_param` does (values
        are logged as they are; :meth:`log_config_params` flattens nested ones)."""
        for name, value in _checked_mapping("params", params).items():
            self.log_param(name, value)

    def log_metric(self, metric_name: str, value: float, step: int | None = None) -> None:
        """Log one metric value, at ``step`` if given."""
        self._send("metric", (metric_name, float(value), step))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log each ``name: value`` of ``metrics``, all at ``step`` if given."""
        for name, value in _checked_mapping("metrics", metrics).items():
            self.log_metric(name, value, step=step)

    def _send(self, kind: str, item: tuple[Any, ...]) -> None:
        if not self._active:
            self._queued.append((kind, item))
        elif kind == "param":
            self._client.log_param(self.run_id, *item)
        else:
            self._client.log_metric(self.run_id, item[0], item[1], step=item[2])

    # --------------------------------------------------------------------------------- hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._open_run()
        trainer = self.trainer if self.has_trainer else None
        if trainer is not None and (trainer.epochs_completed or trainer.steps_in_epoch):
            self._recheck_epoch = trainer.epochs_completed + 1

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if not self.batch_granularity:
            return
        stamp, step = _now_ms(), self.trainer.global_step
        for key, value in _numeric(logs, skip=("batch", "size", "time")):
            self._pending.append([f"batch_{key}", value, step, stamp])

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        stamp = _now_ms()
        records = self._pending + [[k, v, epoch_number, stamp] for k, v in _numeric(logs, skip=("epoch",))]
        if self._recheck_epoch == epoch_number:
            records = self._not_yet_logged(records)
        self._recheck_epoch = None
        self._log_records(records)
        self._pending = []

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.run_id is None:
            return  # nothing of this training was logged (its run never began here)
        if not self._active:  # a run already over whose end was not reached: reopen its MLflow run
            self._open_run()
        if self.has_trainer:
            self._log_last_epoch(self.trainer.epochs_completed)
        self._client.set_terminated(self.run_id, status="FINISHED")

    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self._finish_after_test = not self._active
        if not self._active:
            self._open_run()

    def on_test_end(self, logs: dict[str, Any]) -> None:
        step = self.trainer.epochs_completed if self.has_trainer else 0
        self._log_records([[k, v, step, _now_ms()] for k, v in _numeric(logs, skip=("time",))])
        if self._finish_after_test:
            self._client.set_terminated(self.run_id, status="FINISHED")

    # ----------------------------------------------------------------------------- the run
    def _open_run(self) -> None:
        """Create the MLflow run, or reopen the one of the saved state, then send what waited."""
        if self._client is None:
            self._client = self._client_class(tracking_uri=self.tracking_uri)
        client = self._client
        if self.run_id is None:
            self.run_id = client.create_run(self._experiment_id()).info.run_id
        else:
            from mlflow.exceptions import MlflowException

            try:
                run = client.get_run(self.run_id)
            except MlflowException as error:
                raise ConfigurationError(
                    f"MLFlowLogger: the checkpoint continues MLflow run {self.run_id!r}, which the "
                    f"tracking URI {client.tracking_uri!r} does not hold ({error}). Pass the "
                    "tracking_uri of the interrupted training."
                ) from None
            if run.info.status != "RUNNING":
                client.update_run(self.run_id, status="RUNNING")
        self._active = True
        queued, self._queued = self._queued, []
        for kind, item in queued:
            self._send(kind, item)

    def _experiment_id(self) -> str:
        name = self.experiment_name or "Default"
        experiment = self._client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else self._client.create_experiment(name)

    def _not_yet_logged(self, records: list[list[Any]]) -> list[list[Any]]:
        """Drop the records whose (metric, step) an interrupted attempt already sent."""
        sent: dict[str, set[int]] = {}
        for key in {record[0] for record in records}:
            sent[key] = {metric.step for metric in self._client.get_metric_history(self.run_id, key)}
        return [record for record in records if record[2] not in sent[record[0]]]

    def _log_last_epoch(self, epochs: int) -> None:
        """Log ``last-epoch`` at the step ``epochs``, unless an attempt killed after it did."""
        logged = self._client.get_metric_history(self.run_id, LAST_EPOCH)
        if all(metric.step != epochs for metric in logged):
            self._log_records([[LAST_EPOCH, float(epochs), epochs, _now_ms()]])

    def _log_records(self, records: list[list[Any]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, value, stamp, step) for key, value, step, stamp in records]
        for start in range(0, len(metrics), MAX_METRICS_PER_CALL):
            self._client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_CALL])

    # ---------------------------------------------------------------------------- the state
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pending": [list(record) for record in self._pending]}

    def state_problems(self, state: dict[str, Any]) -> list[str]:
        return missing_state_keys("MLFlowLogger", state, ("run_id", "pending"))

    @checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]
        self._pending = [list(record) for record in state["pending"]]
        self._active = False


def _checked_mapping(role: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise reject(role, value, "a mapping of names to values", received=type(value).__name__)
    return value


def _numeric(logs: dict[str, Any], skip: tuple[str, ...]) -> list[tuple[str, float]]:
    return [
        (key, float(value))
        for key, value in logs.items()
        if key not in skip and isinstance(value, numbers.Real) and not isinstance(value, bool)
    ]


def _flatten(
    config: Mapping[str, Any] | list[Any] | tuple[Any, ...], prefix: str = ""
) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    entries = config.items() if isinstance(config, Mapping) else enumerate(config)
    for key, value in entries:
        name = f"{prefix}{key}"
        if isinstance(value, (Mapping, list, tuple)):
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def _now_ms() -> int:
    return int(time.time() * 1000)
