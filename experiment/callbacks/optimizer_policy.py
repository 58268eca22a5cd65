"""OptimizerPolicy: chains phases and sets the optimizer's parameters before each training step."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from typing import Any

import torch

from experiment.arguments import check_int
from experiment.callbacks.base import Callback, optimizer_stepped
from experiment.callbacks.saved_state import missing_state_keys
from experiment.errors import ConfigurationError
from experiment.schedules.phases import Phase, plot_values


class OptimizerPolicy(Callback):
    """Runs phases one after the other, setting every parameter group's lr and momentum each step.

    The policy counts the training steps it has applied; that count is its whole saved state, so a
    resumed run continues the schedule exactly and ``initial_step`` is only needed to start a new
    run part-way through a schedule. Past the last phase, the last values stay in force.
    ``momentum`` sets ``betas[0]`` of Adam-family optimizers and ``momentum`` of the others (SGD,
    RMSprop); an optimizer with neither is refused when training begins.

    Args:
        phases: the phases, in order.
        initial_step: the step of the schedule to start at in a fresh run.

    Raises:
        ConfigurationError: ``phases`` is empty or holds something else than Phase objects, or
            ``initial_step`` is not an integer >= 0.

    Example:
        >>> policy = OptimizerPolicy(one_cycle_phases(steps=20 * len(train_loader)))
        >>> exp.train(train_loader, valid_loader, epochs=20, callbacks=[policy])
    """

    needs_batch_values = False

    def __init__(self, phases: Iterable[Phase], *, initial_step: int = 0) -> None:
        super().__init__()
        self.phases = list(phases)
        if not self.phases or not all(isinstance(phase, Phase) for phase in self.phases):
            raise ConfigurationError(
                f"OptimizerPolicy: phases received {self.phases!r}; expected a non-empty list of Phase "
                "objects (for instance one_cycle_phases(steps) or [Phase(lr=linspace(0.1, 1, 100))])."
            )
        self.initial_step = _check_step("initial_step", initial_step)
        self.current_step = self.initial_step
        self._ends = list(itertools.accumulate(len(phase) for phase in self.phases))

    @property
    def total_steps(self) -> int:
        """The number of steps of all the phases together."""
        return self._ends[-1]

    def value_at(self, step: int) -> dict[str, float]:
        """The settings of schedule step ``step`` (the last step's settings past the end)."""
        step = min(_check_step("step", step), self.total_steps - 1)
        index = bisect.bisect_right(self._ends, step)
        start = self._ends[index - 1] if index else 0
        return self.phases[index].value_at(step - start)

    # -------------------------------------------------------------------------------------- hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if any("momentum" in phase.params for phase in self.phases):
            optimizer = self.trainer.optimizer
            for index, group in enumerate(optimizer.param_groups):
                _momentum_key(group, index, optimizer)

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        values = self.value_at(self.current_step)
        optimizer = self.trainer.optimizer
        for index, group in enumerate(optimizer.param_groups):
            if "lr" in values:
                _assign(group, "lr", values["lr"])
            if "momentum" in values:
                _set_momentum(group, _momentum_key(group, index, optimizer), values["momentum"])

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if optimizer_stepped(self.trainer):  # counts optimizer steps, not accumulated batches
            self.current_step += 1

    # -------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.current_step}

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        """What makes a saved state unfit: no ``step``, or a step that is not an integer >= 0."""
        problems = missing_state_keys("OptimizerPolicy", state_dict, ("step",))
        if problems:
            return problems
        try:
            _check_step("the saved step", state_dict["step"])
        except ConfigurationError as error:
            return [str(error)]
        return []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the schedule at the saved step.

        Raises:
            ConfigurationError: the saved step is not an integer >= 0 (see :meth:`state_problems`).
        """
        self.current_step = _check_step("the saved step", state_dict.get("step"))

    # ------------------------------------------------------------------------------------ display
    def plot(self, param: str = "lr", ax: Any = None) -> Any:
        """Draw ``param`` over every step of the schedule; returns the matplotlib axes.

        Steps of phases that do not set ``param`` are left blank.

        Raises:
            ConfigurationError: no phase sets ``param``.
            MissingExtraError: matplotlib is not installed.
        """
        if not any(param in phase.params for phase in self.phases):
            raise ConfigurationError(f"plot: param received {param!r}; no phase of this policy sets it.")
        values = [
            space_value
            for phase in self.phases
            for space_value in (phase.spaces[param] if param in phase.params else [math.nan] * len(phase))
        ]
        return plot_values(values, param, ax)


def _check_step(name: str, value: Any) -> int:
    return int(check_int(name, value, minimum=0, owner="OptimizerPolicy"))


def _assign(group: dict[str, Any], key: str, value: float) -> None:
    # A tensor setting (lr=torch.tensor(...)) is filled in place: fused/capturable steps hold it.
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def _momentum_key(group: dict[str, Any], index: int, optimizer: torch.optim.Optimizer) -> str:
    """Where a group keeps its momentum: ``betas`` (Adam family) or ``momentum`` (SGD, RMSprop)."""
    for key in ("betas", "momentum"):
        if key in group:
            return key
    raise ConfigurationError(
        f"OptimizerPolicy: the phases set momentum but parameter group {index} of "
        f"{type(optimizer).__name__} has neither 'momentum' nor 'betas' (its settings: "
        f"{sorted(k for k in group if k != 'params')}). Use an optimizer with momentum (SGD, "
        "RMSprop, Adam, AdamW...) or phases without momentum."
    )


def _set_momentum(group: dict[str, Any], key: str, value: float) -> None:
    if key == "momentum":
        _assign(group, key, value)
        return
    first, *rest = group["betas"]
    if isinstance(first, torch.Tensor):
        first.fill_(value)
    else:
        group["betas"] = (value, *rest)
