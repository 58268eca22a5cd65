"""The settings of one training call: built once by ``Experiment.train``, recorded as they are."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from experiment.state.best import resolve_mode

if TYPE_CHECKING:
    from experiment.training.plan import TrainingPlan


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What one ``train()`` call was asked to do, after its arguments were checked and resolved.

    experiment.json records it under ``settings`` (:meth:`recorded`), and the session, the record
    and the committer read it from here instead of from copies of ``train()``'s arguments.

    Attributes:
        epochs: the run's total target of epochs.
        seed: seeds a fresh run (each rank adds its rank).
        monitor_metric: the logged key that decides the best epoch.
        monitor_mode: "min" or "max", as given or inferred from ``monitor_metric``.
        checkpoint_every: commit every this many optimizer steps too (None: at epoch ends only).
        async_checkpoint: write commits from the background writer.
        steps_per_epoch: training batches per epoch (None: one pass over a source of unknown length).
    """

    epochs: int
    seed: int
    monitor_metric: str
    monitor_mode: str
    checkpoint_every: int | None
    async_checkpoint: bool
    steps_per_epoch: int | None

    @classmethod
    def of_plan(
        cls,
        plan: TrainingPlan,
        *,
        seed: int,
        monitor_mode: str | None,
        checkpoint_every: int | None,
        async_checkpoint: bool,
    ) -> RunSettings:
        """The settings of a call that trains ``plan``: its epochs, monitor and steps per epoch,
        the monitor's mode (``monitor_mode``, or inferred from the monitor's name when None).

        Raises:
            ConfigurationError: ``monitor_mode`` is None and the monitor's direction is unknown.
        """
        return cls(
            epochs=plan.epochs,
            seed=seed,
            monitor_metric=plan.monitor,
            monitor_mode=resolve_mode(monitor_mode, plan.monitor, role="monitor_mode"),
            checkpoint_every=checkpoint_every,
            async_checkpoint=bool(async_checkpoint),
            steps_per_epoch=plan.train.steps_per_epoch,
        )

    def recorded(self) -> dict[str, Any]:
        """The settings as experiment.json's ``settings`` holds them."""
        return dataclasses.asdict(self)
