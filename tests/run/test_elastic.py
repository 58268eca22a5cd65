"""Elastic runs in one process: recorded at creation, resumed exactly on the same world size, the
refusals made before anything is loaded, and the share of a checkpoint written by another number of
processes (tests/distributed/test_elastic.py resumes real runs on 1, 2 and 3 processes)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from experiment import Experiment
from experiment.errors import ConfigurationError, DataError, StateMismatchError
from experiment.run.creation import creation_problems
from experiment.run.elastic import rank_seed, reshared
from experiment.state.rng import capture_rng, derived_rng, restore_rng
from tests.support.state_checks import snapshot_files
from tests.support.training import Interrupt, InterruptAt, assert_same_training_state, make_data, make_network


def _train(directory, *, elastic=True, interrupt_at=None, epochs=2, data=None):
    network = make_network()
    exp = Experiment(
        directory,
        network,
        optimizer="adam",
        loss_function="cross_entropy",
        elastic=elastic,
        tensorboard=False,
    )
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at else []
    with contextlib.suppress(Interrupt):
        exp.train(
            data if data is not None else make_data(50),
            epochs=epochs,
            batch_size=8,
            callbacks=callbacks,
            checkpoint_every=2,
            progress=False,
        )
    return exp


def test_elastic_run_records_elastic_and_its_global_batch(tmp_path):
    _train(tmp_path / "run", epochs=1)
    created = json.loads((tmp_path / "run" / "experiment.json").read_text())["created_with"]
    assert (created["elastic"], created["global_batch"], created["world_size"]) == (True, 8, 1)


def test_elastic_run_resumed_on_the_same_world_size_is_bit_identical(tmp_path):
    whole = _train(tmp_path / "whole", epochs=3)
    _train(tmp_path / "cut", epochs=3, interrupt_at=5)  # mid-epoch: 7 batches per epoch
    resumed = _train(tmp_path / "cut", epochs=3)
    assert_same_training_state(whole, resumed)


@pytest.mark.parametrize(("then", "now"), [(True, False), (False, True)])
def test_elastic_changed_on_an_existing_run_is_refused_before_anything_is_loaded(tmp_path, then, now):
    _train(tmp_path / "run", elastic=then, epochs=1)
    before = snapshot_files(tmp_path / "run")
    with pytest.raises(
        ConfigurationError, match=f"received {now}, but the run .* was created with elastic={then}"
    ):
        _train(tmp_path / "run", elastic=now, epochs=2)
    assert snapshot_files(tmp_path / "run") == before


def test_elastic_accepts_only_false_or_true(tmp_path):
    with pytest.raises(ConfigurationError, match="elastic: received 'yes'; expected False, True or 'exact'"):
        Experiment(tmp_path, make_network(), loss_function="cross_entropy", elastic="yes")


def test_elastic_exact_with_fsdp_is_refused(tmp_path):
    with pytest.raises(
        ConfigurationError, match="elastic='exact': received strategy='fsdp'.*Pass elastic=True"
    ):
        Experiment(tmp_path, make_network(), loss_function="cross_entropy", elastic="exact", strategy="fsdp")


def test_elastic_run_needs_a_dataloader_with_a_batch_size(tmp_path):
    x, y = make_data(16)
    dataset = TensorDataset(x, y)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(dataset), 4, False))
    with pytest.raises(DataError, match="DataLoader without batch_size"):
        _train(tmp_path / "run", data=loader)


def test_elastic_strategy_may_go_from_ddp_to_one_process_and_back():
    recorded = {"optimizer": [], "strategy": "ddp", "elastic": True, "data": {}}
    current = {"optimizer": [], "strategy": "single", "data": {}, "precision": None}
    assert creation_problems(recorded, current, mid_epoch=True) == []
    assert creation_problems({**recorded, "elastic": False}, current, mid_epoch=True) != []


def _saved(world: int, *, steps_in_epoch: int = 0, epoch_metrics: dict | None = None) -> dict:
    rng = {"step": capture_rng([torch.Generator()]), "pass": None, "pass_step": 0, "pass_index": 3}
    metrics = [
        {"samples": 4 * (r + 1), "sums": torch.tensor([float(r + 1)]), "epoch_metrics": epoch_metrics or {}}
        for r in range(world)
    ]
    return {
        "world_size": world,
        "nodes": {
            "progress": {"global_step": 12, "steps_in_epoch": steps_in_epoch},
            "rng": {"world_size": world, "ranks": [rng] * world},
            "train_metrics": {"world_size": world, "ranks": metrics},
        },
    }


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_elastic_reshare_derives_each_rank_random_state_from_seed_step_and_rank(rank):
    share = reshared(_saved(2), rank, seed=7)["nodes"]["rng"]
    assert share["pass_index"] == 3
    restore_rng(share["step"], [generator := torch.Generator()])
    drawn = torch.rand(3), generator.get_state()
    restore_rng(derived_rng(rank_seed(7, 12, rank), 1), [expected := torch.Generator()])
    assert torch.equal(drawn[0], torch.rand(3)) and torch.equal(drawn[1], expected.get_state())
    assert rank_seed(7, 12, rank) not in {rank_seed(7, 12, r) for r in range(3) if r != rank}
    assert rank_seed(7, 12, rank) != rank_seed(7, 13, rank)


def test_elastic_reshare_puts_the_running_sums_of_every_saved_rank_on_rank_zero():
    saved = _saved(3, steps_in_epoch=2)
    zero, other = reshared(saved, 0, seed=7), reshared(saved, 1, seed=7)
    assert zero["nodes"]["train_metrics"]["samples"] == 4 + 8 + 12
    assert torch.equal(zero["nodes"]["train_metrics"]["sums"], torch.tensor([6.0]))
    assert other["nodes"]["train_metrics"] == {"samples": 0, "sums": None, "epoch_metrics": {}}


def test_elastic_reshare_refuses_a_mid_epoch_checkpoint_with_epoch_metrics():
    saved = _saved(2, steps_in_epoch=2, epoch_metrics={"f1": {"tp": torch.zeros(2)}})
    with pytest.raises(
        StateMismatchError, match=r"stops 2 batch\(es\) into an epoch with epoch metrics \['f1'\]"
    ):
        reshared(saved, 0, seed=7)
    assert (
        reshared(
            {**saved, "nodes": {**saved["nodes"], "progress": {"global_step": 12, "steps_in_epoch": 0}}},
            0,
            seed=7,
        )["nodes"]["train_metrics"]["epoch_metrics"]
        == {}
    )


def test_a_run_that_is_not_elastic_records_nothing_of_it(tmp_path):
    _train(tmp_path / "run", elastic=False, epochs=1)
    created = json.loads((tmp_path / "run" / "experiment.json").read_text())["created_with"]
    assert not {"elastic", "global_batch", "elastic_groups"} & set(created)
