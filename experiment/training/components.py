"""Turning names into optimizers, loss functions and devices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiment.errors import ConfigurationError

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
            return built
        raise ConfigurationError(
            f"The optimizer callable returned {type(built).__name__}; expected a torch.optim.Optimizer."
        )
    raise ConfigurationError(
        f"optimizer: received {optimizer!r} of type {type(optimizer).__name__}; expected a name "
        f"({', '.join(sorted(OPTIMIZERS))}), an optimizer instance, or a callable taking the parameters."
    )


def resolve_loss(loss_function: Any) -> Callable[[Any, Any], torch.Tensor] | None:
    """A loss from a name or a callable ``(y_pred, y_true) -> tensor``; None stays None."""
    if loss_function is None or (callable(loss_function) and not isinstance(loss_function, str)):
        return loss_function
    if isinstance(loss_function, str) and loss_function.lower() in LOSSES:
        return LOSSES[loss_function.lower()]()
    raise ConfigurationError(
        f"Unknown loss_function: received {loss_function!r}; expected one of {sorted(LOSSES)} or a "
        "callable (y_pred, y_true) -> scalar tensor."
    )


def resolve_device(device: Any, network: nn.Module) -> torch.device:
    """The device given, else the one the network's parameters are on, else the CPU."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ConfigurationError(
                f"device: received {device!r}; expected a torch device such as 'cpu' or 'cuda:0'."
            ) from error
    for parameter in network.parameters():
        return parameter.device
    return torch.device("cpu")
