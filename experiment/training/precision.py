"""Numeric precision of training: full precision, or torch's autocast with an optional GradScaler.

Names follow Lightning: "32-true" (alias "32"), "bf16-mixed", "16-mixed". Mixed precision runs the
forward pass and the loss under ``torch.autocast(device_type, dtype)`` for training, validation and
test; "16-mixed" also scales the loss with ``torch.amp.GradScaler(device_type)``, whose state is
part of every commit (the ``scaler`` node of the state tree). Both work on CPU.

Example:
    >>> precision = Precision.resolve("bf16-mixed", torch.device("cpu"))
    >>> with precision.autocast():
    ...     loss = loss_function(network(x), y)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from experiment.arguments import reject

PRECISIONS = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Precision:
    """How the forward pass and the loss are computed, and the scaler of "16-mixed"."""

    def __init__(self, name: str, device_type: str, dtype: torch.dtype | None) -> None:
        self.name = name
        self.device_type = device_type
        self.dtype = dtype
        self.scaler: Any = torch.amp.GradScaler(device_type) if dtype is torch.float16 else None

    @classmethod
    def resolve(cls, name: Any, device: torch.device) -> Precision:
        """The precision called ``name`` on ``device``.

        Raises:
            ConfigurationError: an unknown name, or a mixed precision the device cannot run.
        """
        if not isinstance(name, str) or name not in PRECISIONS:
            raise reject("precision", name, "one of '32-true' (or '32'), 'bf16-mixed', '16-mixed'")
        canonical = "32-true" if name == "32" else name
        dtype = PRECISIONS[canonical]
        if dtype is not None and device.type not in ("cpu", "cuda"):
            raise reject(
                "precision",
                name,
                f"'32-true' on a {device.type} device: mixed precision runs on CPU and CUDA here",
            )
        if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise reject("precision", name, "'16-mixed' or '32-true': this GPU does not support bfloat16")
        return cls(canonical, device.type, dtype)

    @property
    def mixed(self) -> bool:
        return self.dtype is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast for mixed precision; nothing for "32-true"."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield
