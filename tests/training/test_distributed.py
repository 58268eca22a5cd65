"""The single-process world, the agreement schedule and the epoch-metric check (the collective
paths run under torchrun in tests/distributed)."""

from __future__ import annotations

import pytest
import torch

from experiment.errors import ConfigurationError, StorageError
from experiment.training.agreement_schedule import AgreementSchedule
from experiment.training.distributed import SINGLE, World, sharing_problems, training_device
from experiment.training.loop import TrainingLoop
from experiment.training.metric_resolution import resolve_epoch_metrics
from experiment.training.metrics import F1
from experiment.training.strategy import DataParallel


def test_a_single_process_is_a_world_of_one_whose_operations_return_their_input():
    tensor = torch.tensor([1.0, 2.0])

    assert SINGLE.is_main and not SINGLE.distributed
    assert SINGLE.agree([3, 0]) == [3, 0]
    assert SINGLE.gather({"a": 1}) == [{"a": 1}]
    assert SINGLE.broadcast("x") == "x"
    assert SINGLE.total(tensor) is tensor
    assert SINGLE.on_main(lambda: 5) == 5
    with pytest.raises(StorageError, match="disk full"):
        SINGLE.on_main(lambda: (_ for _ in ()).throw(StorageError("disk full")))


class RankOneOfTwo(World):
    """Rank 1 of two, whose peer (rank 0) failed with ``peer`` (None: it did not)."""

    def __init__(self, peer: BaseException | None) -> None:
        super().__init__(size=2, rank=1)
        self.peer = peer
        self.sent: list[object] = []

    def agree(self, values: list[int]) -> list[int]:
        return [max(value, int(self.peer is not None)) for value in values]

    def gather(self, value: object) -> None:  # type: ignore[override]
        self.sent.append(value)
        return None  # rank 0 receives the list

    def broadcast(self, value: object) -> object:
        return (type(self.peer), str(self.peer)) if isinstance(self.peer, StorageError) else value


def test_raise_any_raises_a_peers_error_its_own_first_or_nothing_when_no_rank_failed():
    RankOneOfTwo(None).raise_any(None)  # no rank failed: returns after one agreement
    with pytest.raises(StorageError, match="rank 0 disk full"):
        RankOneOfTwo(StorageError("rank 0 disk full")).raise_any(None)
    world = RankOneOfTwo(StorageError("rank 0 disk full"))
    with pytest.raises(ConfigurationError, match="own"):
        world.raise_any(ConfigurationError("own"))
    assert world.sent == [(ConfigurationError, "own")]  # its error went to the others too
    world = RankOneOfTwo(None)
    with pytest.raises(OSError, match="broken"):
        world.raise_any(OSError("broken"))
    assert world.sent == [(RuntimeError, "rank 1 failed with OSError: broken")]  # as others raise it
    SINGLE.raise_any(None)
    with pytest.raises(OSError, match="alone"):
        SINGLE.raise_any(OSError("alone"))


def test_the_agreement_schedule_proposes_about_a_second_of_steps_ahead(monkeypatch):
    clock = iter([100.0, 100.5])  # 10 steps in half a second: 20 steps per second
    monkeypatch.setattr("experiment.training.agreement_schedule.time.perf_counter", lambda: next(clock))
    schedule = AgreementSchedule(seconds=1.0)

    assert schedule.due(1)
    assert schedule.proposal(1) == 2  # no pace known yet: the next step
    assert schedule.proposal(11) == 31
    schedule.agreed(40)  # another rank was faster: the largest proposal wins
    assert not schedule.due(39) and schedule.due(40)


def test_epoch_metrics_that_cannot_sync_across_processes_are_refused_under_torchrun():
    named = resolve_epoch_metrics(["f1", "auroc"])
    assert sharing_problems(named) == []
    assert sharing_problems([("old_f1", F1())]) == ["old_f1"]

    network = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigurationError, match=r"old_f1.*torchmetrics"):
        TrainingLoop(
            network,
            torch.optim.SGD(network.parameters(), lr=0.1),
            torch.nn.functional.cross_entropy,
            batch_metrics=[],
            epoch_metrics=[("old_f1", F1())],
            device=torch.device("cpu"),
            strategy=DataParallel(World(size=2, rank=1)),
        )


def test_lost_peer_reason_names_a_peer_that_went_away_in_one_line():
    from experiment.training.distributed import lost_peer_reason

    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:5593"
    )
    reason = lost_peer_reason(gloo)
    assert reason is not None and "\n" not in reason
    assert reason.startswith("another process of the run ended (killed or crashed)")
    assert lost_peer_reason(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert lost_peer_reason(ValueError("Connection reset by peer")) is None


def test_world_agree_on_names_each_agreed_value_and_barrier_returns_in_one_process():
    from experiment.training.distributed import SINGLE

    assert SINGLE.agree_on(signal=15, stop=1, next_step=40) == {"signal": 15, "stop": 1, "next_step": 40}
    assert SINGLE.barrier() is None


def test_training_device_of_a_rank_that_sees_one_gpu_is_that_gpu(monkeypatch):
    """srun --gpus-per-task=1: the task of local rank 3 sees one GPU, cuda:0."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)

    assert training_device(World(size=4, rank=3, local_rank=3)) == torch.device("cuda", 0)
    assert chosen == [0]
    assert training_device(SINGLE) is None
