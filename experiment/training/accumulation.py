"""Gradient accumulation: which training batches of an epoch make one optimizer step.

The batches of an epoch are numbered from 1. With ``batches`` batches per optimizer step, a group
starts at batch 1, ``batches + 1``, ``2 * batches + 1``... and ends ``batches`` batches later, or at
the epoch's last batch (``steps_per_epoch``, when the epoch's length is known), so the epoch's last
group may be shorter. When the data ends before a group does (an iterable of unknown length),
:attr:`AccumulationGroups.pending` says so, and the loop steps that shorter group after the
epoch's last batch. Each batch's loss is divided by ``batches`` before ``backward``, as Lightning
does, so that a group's gradient is the mean over its batches. An elastic run also weights each
batch's loss by its share of the global batch (``weights``, see
:mod:`experiment.training.elastic_data`).

Example:
    >>> groups = AccumulationGroups(4, steps_per_epoch=6)
    >>> [(groups.place(number), groups.stepped) for number in range(1, 7)]
    [(True, False), (False, False), (False, False), (False, True), (True, False), (False, True)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AccumulationGroups:
    """The accumulation groups of one training call: where each group starts and ends, the
    epoch's last, shorter group, and the division of the loss.

    The loop reads :attr:`stepped` to count optimizer steps; the callbacks read it as the
    trainer's ``optimizer_stepped``.

    Args:
        batches: batches per optimizer step (``accumulate_grad_batches``).
        steps_per_epoch: batches per epoch, when known: the epoch's last batch ends its group.
        weights: the factor of the loss of each batch of an epoch, by its number (None: 1).
    """

    def __init__(
        self,
        batches: int = 1,
        steps_per_epoch: int | None = None,
        weights: Callable[[int], float] | None = None,
    ) -> None:
        self.batches = batches
        self.steps_per_epoch = steps_per_epoch
        self.weights = weights
        #: The factor of the placed batch's loss before the division by ``batches``.
        self.weight = 1.0
        #: Whether the batch placed last ends its group: the optimizer steps after its backward.
        self.stepped = False
        #: Whether a group has begun and not ended (the data ended inside it).
        self.pending = False

    def place(self, batch_number: int) -> bool:
        """Place the epoch's batch ``batch_number`` in its group; return whether it starts the group
        (the gradients are zeroed before it). :attr:`stepped` then says whether it ends the group."""
        if self.weights is not None:
            self.weight = self.weights(batch_number)
        batches = self.batches
        if batches == 1:
            self.stepped = True
            self.pending = False
            return True
        ends = batch_number % batches == 0 or batch_number == self.steps_per_epoch
        self.stepped = ends
        self.pending = not ends
        return batch_number % batches == 1

    def divide(self, loss: Any) -> Any:
        """The loss to back-propagate: ``loss * weight / batches`` (``loss`` itself without
        accumulation and weight)."""
        if self.weight != 1.0:
            loss = loss * self.weight
        return loss / self.batches if self.batches > 1 else loss

    def close(self) -> None:
        """The group that the data's end left pending was stepped."""
        self.pending = False
