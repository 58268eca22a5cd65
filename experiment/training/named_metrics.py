"""Named metrics: the fast batch accuracies and the torchmetrics-backed epoch metrics.

Batch metrics (one number per batch, averaged over the epoch weighted by batch size): ``accuracy``/
``acc`` and ``top{k}_acc``/``top{k}_accuracy``, in percent. Epoch metrics (torchmetrics objects
accumulated on the device): ``f1``, ``precision``, ``recall``, ``auroc``, ``mae``, ``mse``, ``r2``,
and ``acc``/``top{k}_acc`` too (in percent). A named epoch metric is built at its first batch, with the
task and the number of classes inferred from that batch (see ``infer_spec``) unless given, and fixed
from then on; its state carries that spec, so that a resume rebuilds the same metric before loading.

torchmetrics (which imports SciPy) is imported when the first named epoch metric is built, not with
this module: a run without one does not pay for it at start-up.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from experiment.errors import ConfigurationError, DataError
from experiment.training.targets import class_target_problem, describe

#: The torchmetrics class (by name, so that importing this module does not import torchmetrics)
#: that each classification and regression metric builds.
CLASSIFICATION = {
    "accuracy": "Accuracy",
    "f1": "F1Score",
    "precision": "Precision",
    "recall": "Recall",
    "auroc": "AUROC",
}
REGRESSION = {
    "mae": "MeanAbsoluteError",
    "mse": "MeanSquaredError",
    "r2": "R2Score",
}
#: Epoch metric names (lower case) and the metric each one computes.
EPOCH_NAMES = {"acc": "accuracy", "fscore_macro": "f1"} | {n: n for n in (*CLASSIFICATION, *REGRESSION)}
_TOP_K = re.compile(r"top_?(\d+)_(acc|accuracy)")


def accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Percentage of samples whose arg-max (or, for one output, positive logit) is the label."""
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] > 1:
        predicted = y_pred.argmax(dim=-1)
    else:
        predicted = (y_pred.reshape(y_true.shape) > 0).to(y_true.dtype)
    return (predicted == y_true).float().mean() * 100.0


class TopKAccuracy:
    """Percentage of samples whose label is among the ``k`` highest outputs (a batch metric).

    Example:
        >>> float(TopKAccuracy(2)(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1])))
        100.0
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.__name__ = f"top{k}_acc"

    def __call__(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        hits = (y_pred.topk(self.k, dim=-1).indices == y_true.unsqueeze(-1)).any(dim=-1)
        return hits.float().mean() * 100.0

    def target_problem(self, y_pred: Any, y_true: Any) -> str | None:
        """Why these targets do not fit (class indices of at least k classes); None if they fit."""
        problem = class_target_problem(self.__name__, y_pred, y_true)
        if problem is None and (y_pred.ndim != y_true.ndim + 1 or y_pred.shape[-1] < self.k):
            problem = (
                f"metric {self.__name__!r} needs at least {self.k} class outputs; received y_pred "
                f"{describe(y_pred)}. Lower k or use 'acc'."
            )
        return problem


def batch_metric(name: str) -> tuple[str, Any] | None:
    """The logged name and function of batch metric ``name``, or None if it is not one."""
    if name in ("accuracy", "acc"):
        return "acc", accuracy
    match = _TOP_K.fullmatch(name)
    return (f"top{match[1]}_acc", TopKAccuracy(int(match[1]))) if match else None


def epoch_metric(name: str, options: dict[str, Any] | None = None) -> tuple[str, NamedMetric] | None:
    """The logged name and a new metric for epoch metric ``name``, or None if it is not one."""
    match = _TOP_K.fullmatch(name)
    if match:
        options = {"top_k": int(match[1]), **(options or {})}
        return f"top{match[1]}_acc", NamedMetric("accuracy", f"top{match[1]}_acc", options)
    if name not in EPOCH_NAMES:
        return None
    kind = EPOCH_NAMES[name]
    logged = {"accuracy": "acc", "fscore_macro": "f1"}.get(name, "acc" if kind == "accuracy" else name)
    return logged, NamedMetric(kind, logged, options)


def infer_spec(kind: str, name: str, y_pred: Any, y_true: Any) -> dict[str, Any]:
    """The task of metric ``kind`` for this first batch, or a DataError that says what is expected.

    One output per sample with 0/1 labels: binary (for acc, f1, precision and recall, the two classes
    0 and 1 from the sign of the logit, macro-averaged as ``f1`` always was); C outputs with integer
    class indices: multiclass with C classes; float 0/1 targets of y_pred's shape: multilabel.
    """
    if kind in REGRESSION:
        return _regression_spec(kind, name, y_pred, y_true)
    if not (isinstance(y_pred, torch.Tensor) and isinstance(y_true, torch.Tensor)):
        raise DataError(class_target_problem(name, y_pred, y_true) or "expected tensors")
    average = {} if kind == "accuracy" else {"average": "macro"}
    micro = {"average": "micro"} if kind == "accuracy" else {}
    if _is_multilabel(y_pred, y_true):
        inputs = "scores" if kind == "auroc" else "labels"
        return {"inputs": inputs, "task": "multilabel", "num_labels": y_pred.shape[-1], **average, **micro}
    problem = class_target_problem(name, y_pred, y_true)
    if problem is not None:
        raise DataError(problem)
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] > 1:
        return {"inputs": "plain", "task": "multiclass", "num_classes": y_pred.shape[-1], **average, **micro}
    if kind == "auroc":
        return {"inputs": "binary_scores", "task": "binary"}
    return {"inputs": "binary_labels", "task": "multiclass", "num_classes": 2, **average, **micro}


def _is_multilabel(y_pred: torch.Tensor, y_true: torch.Tensor) -> bool:
    if y_true.shape != y_pred.shape or y_pred.ndim < 2 or not y_true.dtype.is_floating_point:
        return False
    return bool(((y_true == 0) | (y_true == 1)).all())


def _regression_spec(kind: str, name: str, y_pred: Any, y_true: Any) -> dict[str, Any]:
    fits = (
        isinstance(y_pred, torch.Tensor)
        and isinstance(y_true, torch.Tensor)
        and y_true.dtype.is_floating_point
        and y_pred.numel() == y_true.numel()
        and (y_pred.shape == y_true.shape or y_pred.numel() == len(y_pred))
        and (kind != "r2" or y_true.ndim <= 2)
    )
    if not fits:
        raise DataError(
            f"metric {name!r} expects y_true as a floating-point tensor of y_pred's shape (at most 2 "
            f"dimensions for r2); received y_true {describe(y_true)} for y_pred {describe(y_pred)}."
        )
    return {"inputs": "regression"}


def _prepare(inputs: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if inputs == "labels":  # thresholded at logit 0, as acc does
        return (y_pred > 0).long(), y_true.long()
    if inputs == "scores":
        return y_pred, y_true.long()
    if inputs == "binary_labels":
        return (y_pred.reshape(y_true.shape) > 0).long(), y_true.long()
    if inputs == "binary_scores":
        return y_pred.reshape(y_true.shape), y_true.long()
    if inputs == "regression":
        return y_pred.reshape(y_true.shape), y_true
    return y_pred, y_true


class NamedMetric:
    """A torchmetrics metric built at the first batch (or at once, given a ``task``).

    Example:
        >>> metric = NamedMetric("f1", "f1")
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        >>> float(metric.compute())
        1.0
    """

    #: compute() combines the states of every rank of a torch.distributed run.
    syncs_across_processes = True

    def __init__(self, kind: str, name: str, options: dict[str, Any] | None = None) -> None:
        self.kind, self.name = kind, name
        self.options = dict(options or {})
        self.scale = 100.0 if kind == "accuracy" else 1.0
        self.spec: dict[str, Any] | None = None
        self.metric: Any = None
        self.updated = False
        if "task" in self.options or (kind in REGRESSION and self.options):
            self._build({"inputs": "plain" if kind in CLASSIFICATION else "regression"})

    def _build(self, spec: dict[str, Any]) -> None:
        kwargs = {key: value for key, value in spec.items() if key != "inputs"} | self.options
        import torchmetrics  # here, not at module level: it costs seconds at start-up (SciPy)

        factory = getattr(torchmetrics, CLASSIFICATION.get(self.kind) or REGRESSION[self.kind])
        try:
            self.metric = factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                f"metric {self.name!r}: torchmetrics refused options {kwargs}: {error}"
            ) from error
        self.spec, self._device = dict(spec), torch.device("cpu")

    def reset(self) -> None:
        if self.metric is not None:
            self.metric.reset()
        self.updated = False

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        if self.metric is None:
            self._build(infer_spec(self.kind, self.name, y_pred, y_true))
        assert self.spec is not None
        if self.spec["inputs"] is None:  # loaded from a former F1's confusion matrix
            self.spec["inputs"] = infer_spec(self.kind, self.name, y_pred, y_true)["inputs"]
        if y_pred.device != self._device:
            self.metric.to(y_pred.device)
            self._device = y_pred.device
        try:
            self.metric.update(*_prepare(self.spec["inputs"], y_pred.detach(), y_true))
        except (RuntimeError, ValueError) as error:
            raise DataError(
                f"metric {self.name!r} ({self.spec}) refused y_pred {describe(y_pred)} and y_true "
                f"{describe(y_true)}: {error}"
            ) from error
        if getattr(self.metric, "validate_args", False):
            self.metric.validate_args = False  # checked on the first batch: no host syncs per step
        self.updated = True

    def compute(self) -> torch.Tensor:
        """The metric over the epoch; under torch.distributed, over every rank's batches (the
        torchmetrics object gathers the other ranks' states and puts its own back)."""
        if not self.updated:
            return torch.tensor(float("nan"))
        if self.kind == "f1" and not self.options and self.spec and self.spec.get("task") == "multiclass":
            with self.metric.sync_context(should_sync=self.metric._to_sync):
                return _macro_f1(self.metric.tp, self.metric.fp, self.metric.fn)
        return self.metric.compute() * self.scale

    def state_dict(self) -> dict[str, Any]:
        if self.metric is None:
            return {"spec": None, "updated": False, "state": {}}
        state = {key: _to_cpu(value) for key, value in self.metric.metric_state.items()}
        return {"spec": dict(self.spec or {}), "updated": self.updated, "state": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "confusion" in state:  # the former F1 of release 0.1.0
            state = _from_confusion(state["confusion"])
        if state["spec"] is None:
            self.reset()
            return
        if self.metric is None or state["spec"] != self.spec:
            self._build(state["spec"])
        self.metric.reset()
        self.metric.to("cpu")
        self._device = torch.device("cpu")
        for key, value in state["state"].items():
            setattr(self.metric, key, _to_cpu(value))
        self.metric._update_count = int(state["updated"])
        self.metric._computed = None
        self.metric.validate_args = False
        self.updated = state["updated"]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, list):
        return [v.detach().to("cpu", copy=True) for v in value]
    return value.detach().to("cpu", copy=True) if torch.is_tensor(value) else value


def _from_confusion(confusion: torch.Tensor | None) -> dict[str, Any]:
    """The state of ``f1`` from the confusion matrix that the former F1 saved (rows: labels)."""
    if confusion is None:
        return {"spec": None, "updated": False, "state": {}}
    classes = confusion.shape[0]
    tp = confusion.diag()
    fp, fn = confusion.sum(dim=0) - tp, confusion.sum(dim=1) - tp
    state = {"tp": tp, "fp": fp, "fn": fn, "tn": confusion.sum() - tp - fp - fn}
    spec = {"inputs": None, "task": "multiclass", "num_classes": classes, "average": "macro"}
    return {"spec": spec, "updated": True, "state": state}


def _macro_f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """torchmetrics' macro F1, computed in double as the former F1 did, so logged values stay the same."""
    tp, counted = tp.double(), (2 * tp + fp + fn).double()
    present = counted > 0
    return (2 * tp / counted.clamp(min=1))[present].mean().float()
