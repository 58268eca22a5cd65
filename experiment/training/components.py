"""Turning names into optimizers, loss functions and devices, and checking what the user gave."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiment.errors import ConfigurationError, DataError
from experiment.training.targets import describe, loss_expectation, loss_target_problem

OPTIMIZERS: dict[str, Any] = {  # name -> optimizer class taking the parameters
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "huber": nn.HuberLoss,
    "bce": nn.BCELoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "kl_div": lambda: nn.KLDivLoss(reduction="batchmean"),
    "poisson_nll": nn.PoissonNLLLoss,
}


def resolve_optimizer(optimizer: Any, network: nn.Module) -> torch.optim.Optimizer:
    """An optimizer from a name, an instance, or a callable taking the parameters."""
    if isinstance(optimizer, torch.optim.Optimizer):
        check_optimizer_parameters(optimizer, network)
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ConfigurationError(
                f"Unknown optimizer: received {optimizer!r}; expected one of {sorted(OPTIMIZERS)}, "
                "an optimizer instance, or a callable taking the parameters."
            )
        return OPTIMIZERS[key](network.parameters())
    if callable(optimizer):
        built = optimizer(network.parameters())
        if isinstance(built, torch.optim.Optimizer):
            check_optimizer_parameters(built, network)
            return built
        raise ConfigurationError(
            f"The optimizer callable returned {type(built).__name__}; expected a torch.optim.Optimizer."
        )
    raise ConfigurationError(
        f"optimizer: received {optimizer!r} of type {type(optimizer).__name__}; expected a name "
        f"({', '.join(sorted(OPTIMIZERS))}), an optimizer instance, or a callable taking the parameters."
    )


def check_optimizer_parameters(optimizer: torch.optim.Optimizer, network: nn.Module) -> None:
    """Refuse an optimizer that holds none of the network's parameters; warn when it leaves some out.

    Either way the network would not train, or would train only in part, without a word: the usual
    cause is an optimizer built on another instance of the network (made before a re-creation).

    Raises:
        ConfigurationError: the network has parameters and the optimizer holds none of them.
    """
    named = list(network.named_parameters())
    if not named:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(parameter) in held for _, parameter in named):
        raise ConfigurationError(
            f"optimizer: received a {type(optimizer).__name__} that holds none of the network's "
            f"{len(named)} parameter tensors, so the network would never train; expected an "
            "optimizer over this network's parameters. Build it on network.parameters() of the "
            "network given to Experiment (not a copy or an earlier instance), or pass a name such "
            "as 'sgd'."
        )
    left_out = [name for name, parameter in named if parameter.requires_grad and id(parameter) not in held]
    if left_out:
        shown = ", ".join(left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        warn_at_user_code(
            f"optimizer: the {type(optimizer).__name__} leaves out {len(left_out)} of the network's "
            f"{sum(p.requires_grad for _, p in named)} trainable parameter tensors ({shown}); they "
            "will not be trained. Add them to the optimizer, or freeze them with "
            "requires_grad_(False) if that is intended."
        )


_LIBRARY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn_at_user_code(message: str) -> None:
    """``warnings.warn`` attributed to the first caller outside the library (wherever it was called from)."""
    frame: Any = sys._getframe(0)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


class NamedLoss:
    """A loss of :data:`LOSSES`, which checks the targets of its first batch and explains its failures.

    The first call checks ``y_true`` against what the loss expects (torch would otherwise broadcast
    a target of another shape, or fail in the backward pass on integer targets); any error torch
    raises is re-raised as a DataError that says what was expected. The value is the module's own.

    Example:
        >>> loss = NamedLoss("mse", nn.MSELoss())
        >>> loss(torch.zeros(2, 1), torch.zeros(2, 1))
        tensor(0.)
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self._forward = module.forward  # a named loss has no hooks: skip Module.__call__
        self._checked = False

    def __call__(self, y_pred: Any, y_true: Any) -> torch.Tensor:
        if not self._checked:
            problem = loss_target_problem(self.name, y_pred, y_true)
            if problem is not None:
                raise DataError(problem)
            self._checked = True
        try:
            return self._forward(y_pred, y_true)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            raise DataError(
                f"loss_function {self.name!r} failed on y_pred {describe(y_pred)} and y_true "
                f"{describe(y_true)}: {error} It expects y_true as "
                f"{loss_expectation(self.name, y_pred)}. Fix the targets, or pass a loss callable."
            ) from error

    def __repr__(self) -> str:
        return f"NamedLoss({self.name!r}, {self.module!r})"


def resolve_loss(loss_function: Any) -> Callable[[Any, Any], torch.Tensor] | None:
    """A loss from a name or a callable ``(y_pred, y_true) -> tensor``; None stays None.

    A name gives a :class:`NamedLoss`, which checks the targets of the first batch it sees.
    """
    if loss_function is None or (callable(loss_function) and not isinstance(loss_function, str)):
        return loss_function
    if isinstance(loss_function, str) and loss_function.lower() in LOSSES:
        name = loss_function.lower()
        return NamedLoss(name, LOSSES[name]())
    raise ConfigurationError(
        f"Unknown loss_function: received {loss_function!r}; expected one of {sorted(LOSSES)} or a "
        "callable (y_pred, y_true) -> scalar tensor."
    )


def resolve_device(device: Any, network: nn.Module) -> torch.device:
    """The device given, else the one the network's parameters are on, else the CPU.

    Raises:
        ConfigurationError: ``device`` is not a device, or names a CUDA device this process lacks.
    """
    if device is not None:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ConfigurationError(
                f"device: received {device!r}; expected a torch device such as 'cpu' or 'cuda:0'."
            ) from error
        _check_available(device, resolved)
        return resolved
    for parameter in network.parameters():
        return parameter.device
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The devices this process can train on: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _check_available(given: Any, device: torch.device) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            reason = "CUDA is not available in this process (torch.cuda.is_available() is False"
            reason += ": this torch is built without CUDA)" if torch.version.cuda is None else ")"
        elif device.index is not None and device.index >= count:
            reason = f"this process sees {count} CUDA device(s)"
        else:
            return
    elif device.type == "mps" and not torch.backends.mps.is_available():
        reason = "MPS is not available in this process"
    else:
        return
    raise ConfigurationError(
        f"device: received {given!r}, but {reason}; expected one of the available devices "
        f"{available_devices()}. Pass one of them, or leave device=None to train where the network's "
        "parameters are."
    )
