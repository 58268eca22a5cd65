"""PolicyRunner: the callback that drives deep_pipe-style policies and a validate() function.

It is what :func:`experiment.run.train_model.train_model` adds to the run. Per epoch (counted from 0 as
the policies see it):

- ``epoch_started(e)`` of every policy runs once: for the first epoch at the start of training, for
  the next ones right after the previous epoch finished, so that a :class:`StopTraining` raised
  there stops before the epoch runs and is committed with the previous epoch;
- at the epoch's start (and on a resume), the value policies' values are computed (``value_at``),
  the one named ``lr`` is set on every parameter group of the optimizer, and :attr:`values` holds
  them for the training step;
- at the epoch's end: ``validate()`` runs (network in eval mode, no gradients), its metrics are added
  to the epoch's logs with a ``val_`` prefix (unless they have one), the numeric values of the value
  policies are logged under their names, then ``epoch_finished(e, train_losses=..., metrics=...)``
  of every policy runs.

The losses of the epoch's steps are kept only when a policy implements ``epoch_finished``; they are
part of the saved state, so a resume in the middle of an epoch hands the policies every step's loss.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from experiment.arguments import reject
from experiment.callbacks.base import Callback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.schedules.value_policies import StopTraining, ValuePolicy, wants_train_losses
from experiment.state.stateful import ChecksState, Stateful

logger = logging.getLogger(__name__)

RESERVED_NAMES = ("epoch", "time", "loss", "batch", "size")


class PolicyRunner(Callback):
    """Runs named policies and a validation function at the epochs' starts and ends.

    Args:
        policies: policies by name; value policies give :attr:`values` under that name, and the
            one named ``lr`` sets the optimizer's learning rate.
        validate: a callable returning a dict of metrics (numbers), run at each epoch end.

    Raises:
        ConfigurationError: a name is reserved or ``validate`` is not callable.

    Example:
        >>> runner = PolicyRunner({"lr": Exponential(0.1, 0.5)}, validate=lambda: {"acc": 0.5})
        >>> exp.train(train, epochs=3, callbacks=[runner])
    """

    adds_epoch_logs = True  # the metrics returned by validate()

    def __init__(
        self, policies: Mapping[str, Any], *, validate: Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        super().__init__()
        for name in policies:
            if name in RESERVED_NAMES or name.startswith("val_"):
                raise ConfigurationError(
                    f"Policy name {name!r} is reserved for a logged key; expected another name "
                    f"(not one of {list(RESERVED_NAMES)}, not starting with 'val_')."
                )
        if validate is not None and not callable(validate):
            raise reject("validate", validate, "a callable", received=type(validate).__name__)
        self.policies = dict(policies)
        self.value_policies = {n: p for n, p in self.policies.items() if isinstance(p, ValuePolicy)}
        self.validate = validate
        self.needs_batch_values = any(wants_train_losses(p) for p in self.policies.values())
        self.values: dict[str, Any] = {}
        self.started_epoch = -1
        self.train_losses: list[float] = []
        self.stopped_by: str | None = None

    # ------------------------------------------------------------------------------------ hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        epoch = self.trainer.epochs_completed
        if self.started_epoch < epoch:
            self._start(epoch)
        self._refresh_values(epoch)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        epoch = epoch_number - 1
        if self.started_epoch < epoch:
            self._start(epoch)
        self._refresh_values(epoch)
        self.train_losses = []

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.needs_batch_values:
            self.train_losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        epoch = epoch_number - 1
        metrics = self._validate(self.validate) if self.validate is not None else {}
        logs.update({name if name.startswith("val_") else f"val_{name}": v for name, v in metrics.items()})
        for name, value in self.values.items():
            if name != "lr" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                logs[name] = float(value)
        losses, self.train_losses = self.train_losses, []
        for name, policy in self.policies.items():
            if not self._run(
                name, policy.epoch_finished, epoch, train_losses=list(losses), metrics=dict(metrics)
            ):
                return
        if epoch + 1 < self.params.get("epochs", 0):
            self._start(epoch + 1)

    # ---------------------------------------------------------------------------------- helpers
    def _start(self, epoch: int) -> None:
        self.started_epoch = epoch
        for name, policy in self.policies.items():
            if not self._run(name, policy.epoch_started, epoch):
                return

    def _run(self, name: str, method: Callable[..., None], *args: Any, **kwargs: Any) -> bool:
        """Call a policy's hook; on StopTraining, ask the loop to stop and return False."""
        try:
            method(*args, **kwargs)
        except StopTraining:
            self.stopped_by = name
            self.trainer.stop_training = True
            logger.info("Policy %r stopped training in %s(%s).", name, method.__name__, args[0])
            return False
        return True

    def _refresh_values(self, epoch: int) -> None:
        self.values = {name: policy.value_at(epoch) for name, policy in self.value_policies.items()}
        for name, policy in self.value_policies.items():
            policy.value = self.values[name]
        if "lr" in self.values:
            for group in self.trainer.optimizer.param_groups:
                group["lr"] = self.values["lr"]

    def _validate(self, validate: Callable[[], Mapping[str, Any]]) -> dict[str, float]:
        network = self.trainer.network
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                metrics = validate()
        finally:
            network.train(was_training)
        if not isinstance(metrics, Mapping):
            raise ConfigurationError(
                f"validate() returned {type(metrics).__name__}; expected a dict of metric name -> number."
            )
        return {str(name): _as_float(name, value) for name, value in metrics.items()}

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "started_epoch": self.started_epoch,
            "train_losses": list(self.train_losses),
            "stopped_by": self.stopped_by,
            "policies": {n: p.state_dict() for n, p in self.policies.items() if isinstance(p, Stateful)},
        }

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        """What makes a saved state unfit: missing keys, other stateful policies, their own problems."""
        keys = ("started_epoch", "train_losses", "stopped_by", "policies")
        problems = missing_state_keys("PolicyRunner", state_dict, keys)
        if problems:
            return problems
        saved = state_dict["policies"]
        stateful = sorted(n for n, p in self.policies.items() if isinstance(p, Stateful))
        if sorted(saved) != stateful:
            return [
                f"PolicyRunner: the checkpoint holds states of the policies {sorted(saved)}; received "
                f"the stateful policies {stateful}. Pass the policies of the run that wrote it."
            ]
        return [
            problem
            for name in stateful
            if isinstance(self.policies[name], ChecksState)
            for problem in self.policies[name].state_problems(saved[name])
        ]

    @checked_load
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the epoch position, the epoch's losses and each stateful policy.

        Raises:
            StateMismatchError: :meth:`state_problems` finds the state unfit; nothing is changed.
        """
        self.started_epoch = state_dict["started_epoch"]
        self.train_losses = [float(loss) for loss in state_dict["train_losses"]]
        self.stopped_by = state_dict["stopped_by"]
        for name, state in state_dict["policies"].items():
            self.policies[name].load_state_dict(state)


def _as_float(name: Any, value: Any) -> float:
    if isinstance(value, (torch.Tensor,)) and value.numel() == 1:
        return float(value.item())
    if hasattr(value, "item") and getattr(value, "size", None) == 1:
        return float(value.item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise ConfigurationError(
        f"validate() returned {name!r}: {value!r} of type {type(value).__name__}; expected a number "
        "(or a one-element tensor or array)."
    )
