"""Small fakes that drive the training loop directly, as torchtnt's tests drive ``train()`` with
dummy units: a step that trains nothing, commit points and callbacks that record what they see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from experiment import Callback
from experiment.state.progress import Progress
from experiment.training.accumulation import AccumulationGroups
from experiment.training.distributed import World
from experiment.training.progress_view import ProgressView
from experiment.training.step import StepParts


class FakeStep:
    """A training step that places each batch in its group, as a real step must, and returns the
    batch's mean as its loss; ``events`` gets ``("step", batch_number, starts, ends)``."""

    def __init__(self, groups: AccumulationGroups, events: list[tuple[Any, ...]]) -> None:
        self.groups = groups
        self.events = events

    @classmethod
    def maker(cls, events: list[tuple[Any, ...]], built: list[FakeStep] | None = None) -> Any:
        """``make(parts)`` for :meth:`TrainingLoop.use_step`; each step built is appended to ``built``."""

        def make(parts: StepParts) -> FakeStep:
            step = cls(parts.groups, events)
            if built is not None:
                built.append(step)
            return step

        return make

    def __call__(self, batch: torch.Tensor, batch_number: int) -> tuple[torch.Tensor, Any, Any]:
        starts = self.groups.place(batch_number)
        self.events.append(("step", batch_number, starts, self.groups.stepped))
        return batch.float().mean(), None, None

    def end_group(self, batch_number: int) -> None:
        self.events.append(("end_group", batch_number))
        self.groups.close()


class FakeCommits:
    """Commit points due at the optimizer steps in ``due_at``; ``events`` gets ``("commit", reason,
    global_step)`` for each commit."""

    def __init__(self, events: list[tuple[Any, ...]], progress: Any, due_at: Iterable[int] = ()) -> None:
        self.events = events
        self.progress = progress
        self.due_at = set(due_at)

    def due(self, global_step: int) -> bool:
        return global_step in self.due_at

    def commit(self, reason: str) -> None:
        self.events.append(("commit", reason, self.progress.global_step))


class Recorder(Callback):
    """Appends each training hook it receives to ``events``, with what the trainer says then:
    ``(hook, batch_number, steps_in_epoch, global_step, optimizer_stepped)`` for batch hooks."""

    def __init__(self, events: list[tuple[Any, ...]], *, stop_at: int | None = None) -> None:
        super().__init__()
        self.events = events
        self.stop_at = stop_at

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.events.append(("on_train_begin",))

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.events.append(("on_train_end",))

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.events.append(("on_epoch_begin", epoch_number))

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.events.append(("on_epoch_end", epoch_number))

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.events.append(("on_train_batch_begin", batch_number))

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        trainer = self.trainer
        self.events.append(
            (
                "on_train_batch_end",
                batch_number,
                trainer.steps_in_epoch,
                trainer.global_step,
                trainer.optimizer_stepped,
            )
        )
        if batch_number == self.stop_at:
            trainer.stop_training = True


def batches(count: int) -> list[torch.Tensor]:
    """``count`` batches of 2 samples, the ``i``-th (from 1) holding the value ``i``."""
    return [torch.full((2,), float(number)) for number in range(1, count + 1)]


class Unsized:
    """An iterable of batches that cannot tell its length (so an epoch's last group is not known
    in advance)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


class FakeTrainer(ProgressView):
    """What the callbacks see of a loop: the counters of ``progress`` and the ``groups``'
    ``optimizer_stepped``."""

    def __init__(self, progress: Progress, groups: AccumulationGroups) -> None:
        self.progress = progress
        self.groups = groups

    @property
    def optimizer_stepped(self) -> bool:
        return self.groups.stepped


class PeerWorld(World):
    """Two ranks seen from rank 0, the other one scripted: each agreement takes, name by name, the
    maximum of this rank's values and ``peer(values)``'s (0 for a name it leaves out) and is kept in
    :attr:`agreements`; sums and buffers are this rank's alone."""

    def __init__(self, peer: Any) -> None:
        super().__init__(size=2, rank=0)
        self.peer = peer
        self.agreements: list[dict[str, int]] = []

    def agree_on(self, **values: int) -> dict[str, int]:
        self.agreements.append(values)
        other = self.peer(values)
        return {name: max(value, other.get(name, 0)) for name, value in values.items()}

    def agree(self, values: list[int]) -> list[int]:
        return values

    def total(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def share_buffers(self, module: Any) -> None:
        pass
