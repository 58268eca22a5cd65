"""AccumulationGroups: where each group of accumulated batches starts and ends, and the loss division."""

from __future__ import annotations

import torch

from experiment.training.accumulation import AccumulationGroups


def test_accumulation_groups_end_every_batches_and_at_the_epoch_s_last_batch():
    groups = AccumulationGroups(3, steps_per_epoch=7)
    placed = [(groups.place(number), groups.stepped) for number in range(1, 8)]
    assert placed == [
        (True, False),
        (False, False),
        (False, True),
        (True, False),
        (False, False),
        (False, True),
        (True, True),  # the last group holds one batch
    ]
    assert groups.stepped and not groups.pending


def test_accumulation_groups_without_accumulation_start_and_end_at_every_batch():
    groups = AccumulationGroups()
    assert [(groups.place(number), groups.stepped) for number in (1, 2, 3)] == [(True, True)] * 3


def test_accumulation_groups_of_an_epoch_of_unknown_length_leave_its_last_group_pending():
    groups = AccumulationGroups(2)
    for number in range(1, 6):
        groups.place(number)
    assert groups.pending and not groups.stepped
    groups.close()
    assert not groups.pending and not groups.stepped  # the last batch itself did not step


def test_accumulation_groups_divide_the_loss_by_their_size():
    loss = torch.tensor(6.0)
    assert float(AccumulationGroups(3).divide(loss)) == 2.0
    assert AccumulationGroups(1).divide(loss) is loss
