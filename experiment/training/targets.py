"""What the named losses and the built-in classification metrics expect of ``y_true``.

Each check looks at one batch (the first one: the loss wrapper and the metric accumulator call them
once) and returns a description of the problem, or None. A wrong target must fail loudly here:
several of them make torch broadcast or promote instead of failing, and the run would then train or
report a wrong number without a word.
"""

from __future__ import annotations

from typing import Any

import torch

#: What each named loss expects of y_true: class indices or probabilities ("classes"), class
#: indices only ("indices"), or a float tensor of y_pred's shape ("elementwise").
LOSS_TARGETS = {
    "cross_entropy": "classes",
    "nll": "indices",
    "mse": "elementwise",
    "l1": "elementwise",
    "smooth_l1": "elementwise",
    "huber": "elementwise",
    "bce": "elementwise",
    "bce_with_logits": "elementwise",
    "kl_div": "elementwise",
    "poisson_nll": "elementwise",
}


def describe(value: Any) -> str:
    """``torch.int64 tensor of shape (16,)``, or the type of what is not a tensor."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _is_integer(tensor: torch.Tensor) -> bool:
    return not (tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool)


def _index_shape(y_pred: torch.Tensor) -> tuple[int, ...]:
    """The shape of class indices for ``y_pred``: its shape without the class dimension 1."""
    return tuple(y_pred.shape[:1]) + tuple(y_pred.shape[2:]) if y_pred.ndim >= 2 else ()


def loss_expectation(name: str, y_pred: Any) -> str:
    """What loss ``name`` expects of y_true, in words, for this ``y_pred``."""
    kind = LOSS_TARGETS[name]
    shape = tuple(y_pred.shape) if isinstance(y_pred, torch.Tensor) else None
    indices = "class indices (an integer tensor shaped like y_pred without its class dimension 1" + (
        f", here {_index_shape(y_pred)})" if shape is not None else ")"
    )
    if kind == "indices":
        return indices
    if kind == "classes":
        probabilities = (
            f"class probabilities (a float tensor of y_pred's shape{f', {shape}' if shape else ''})"
        )
        return f"{indices} or {probabilities}"
    return f"a floating-point tensor of y_pred's shape{f' {shape}' if shape else ''}"


def loss_target_problem(name: str, y_pred: Any, y_true: Any) -> str | None:
    """Why ``y_true`` does not fit named loss ``name`` for this ``y_pred``, with the fix; None if it fits."""
    if not (isinstance(y_pred, torch.Tensor) and isinstance(y_true, torch.Tensor)):
        return None  # torch says what it thinks of it; the loss wrapper adds what was expected
    kind = LOSS_TARGETS[name]
    indices_fit = _is_integer(y_true) and tuple(y_true.shape) == _index_shape(y_pred)
    same_shape = y_true.shape == y_pred.shape
    if kind == "indices" and indices_fit:
        return None
    if kind == "classes" and (indices_fit or (same_shape and y_true.dtype.is_floating_point)):
        return None
    if kind == "elementwise" and same_shape and y_true.dtype.is_floating_point:
        return None
    return (
        f"loss_function {name!r} expects y_true as {loss_expectation(name, y_pred)}; received y_true "
        f"{describe(y_true)} for y_pred {describe(y_pred)}. {_loss_hint(kind, y_pred, y_true)}"
    )


def _loss_hint(kind: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> str:
    if kind == "elementwise":
        if y_true.shape != y_pred.shape and y_true.numel() == y_pred.numel():
            return "Reshape the targets to y_pred's shape (y.view_as(y_pred)); torch would broadcast them."
        if y_true.shape == y_pred.shape:
            return "Convert the targets to floating point (y.float())."
        return "Give targets of y_pred's shape, or pick the loss that fits these targets."
    if y_true.shape == y_pred.shape:  # one-hot integer targets, or probabilities given to nll
        fix = "y.argmax(dim=1)" + (" or, for cross_entropy, y.float()" if kind == "classes" else "")
        return f"These look like one-hot targets: convert them with {fix}."
    if tuple(y_true.shape) == _index_shape(y_pred):
        return "Convert the class indices to integers (y.long())."
    return "Give one class index per prediction, or pick the loss that fits these targets."


def class_target_problem(metric: str, y_pred: Any, y_true: Any) -> str | None:
    """Why ``y_true`` does not fit a classification metric (accuracy, F1); None if it fits.

    The metrics take the arg-max of the last dimension of ``y_pred`` as the predicted class and compare
    it with integer class indices of ``y_pred``'s shape without that dimension; with one output per
    sample, the sign of the logit with labels 0 and 1. Reads two values from the device.
    """
    if not (isinstance(y_pred, torch.Tensor) and isinstance(y_true, torch.Tensor)):
        return (
            f"metric {metric!r} expects tensors; received y_pred {describe(y_pred)} and y_true "
            f"{describe(y_true)}. Make the network return a tensor and the dataset give tensor targets."
        )
    expects = f"metric {metric!r} expects y_true as class indices"
    received = f"received y_true {describe(y_true)} for y_pred {describe(y_pred)}"
    classes = y_pred.shape[-1] if y_pred.ndim else 1
    if y_pred.ndim == y_true.ndim + 1 and classes > 1:
        expected_shape = tuple(y_pred.shape[:-1])
        if tuple(y_true.shape) != expected_shape or not _is_integer(y_true):
            fix = (
                "Convert the labels with y.long()"
                if y_true.shape == expected_shape
                else "Give one per sample"
            )
            return f"{expects}: an integer tensor of shape {expected_shape}; {received}. {fix}."
        low, high = torch.stack([y_true.min(), y_true.max()]).tolist() if y_true.numel() else (0, 0)
        if low < 0 or high >= classes:
            return f"{expects} in [0, {classes}); {received}, holding labels from {low} to {high}."
        return None
    one_output_per_sample = y_pred.ndim == 0 or y_pred.numel() == len(y_pred)
    if one_output_per_sample and y_pred.numel() == y_true.numel():
        if y_true.numel() and not bool(((y_true == 0) | (y_true == 1)).all()):
            return f"{expects} 0 or 1 for one output per sample; {received}, holding other values."
        return None
    hint = (
        "These look like one-hot or probability targets: convert them with y.argmax(dim=1)"
        if y_true.shape == y_pred.shape
        else "Give one class index per sample"
    )
    return (
        f"{expects} (an integer tensor of shape {tuple(y_pred.shape[:-1])}); {received}. {hint} "
        "(multi-label targets: float 0/1 labels of y_pred's shape, for the epoch metrics f1, precision, "
        "recall and auroc)."
    )
