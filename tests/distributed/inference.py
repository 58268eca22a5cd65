"""test(), evaluate() and predict() of a finished run under torchrun, against one process.

Each rank runs :func:`run_inference` on its Experiment; rank 0 gets what every rank returned and
:func:`inference_problems` compares it with one process that evaluates the whole data with the same
weights and the same batches as the ranks (:func:`reference_logs`). The library sums each rank's
loss and metric values times the batch size in float32, then the sums and counts over the ranks in
float64; done the same way here, the logs are expected bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiment import Experiment
from tests.distributed.checks import same_number
from tests.distributed.workload import make_network
from tests.support.run_comparison import tree_differences
from tests.support.state_checks import newest_state

#: The batch size of test() and evaluate(): 41 validation samples make strides of 21 and 20 samples
#: on 2 ranks, evaluated in batches of 8, 8, 5 and 8, 8, 4.
EVAL_BATCH = 8
#: What each value of :func:`run_inference` came from, for the messages.
CALLS = {
    "test": "test() logs",
    "evaluate": "evaluate() logs",
    "return_pred": "evaluate(return_pred=True) logs",
    "outputs": "evaluate(return_pred=True) outputs",
    "predict": "predict(x)",
}


def run_inference(experiment: Experiment, valid: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """On one rank: test() of the last weights (the network keeps them), evaluate() without and
    with return_pred, predict(x); what each returned, and the weights the network holds."""
    x, y = valid
    tested = experiment.test(valid, checkpoint="last", batch_size=EVAL_BATCH, progress=False)
    weights = {key: value.detach().clone() for key, value in experiment.network.state_dict().items()}
    evaluated = experiment.evaluate(valid, batch_size=EVAL_BATCH)
    # All the data in one batch, so that the outputs are network(x) itself, bit for bit.
    whole, outputs = experiment.evaluate(valid, batch_size=len(y), return_pred=True)
    predicted = experiment.predict(x, batch_size=len(y))
    return {
        "test": tested,
        "evaluate": evaluated,
        "return_pred": whole,
        "outputs": outputs,
        "predict": predicted,
        "weights": weights,
    }


def inference_problems(
    ranks: list[dict[str, Any]], valid: tuple[torch.Tensor, torch.Tensor], run_dir: Path, epochs: int
) -> dict[str, list[str]]:
    """What each rank's :func:`run_inference` returned, against one process:

    - ``inference_logs``: every rank holds the last saved weights after test(); test() and
      evaluate() give every rank the logs of the ranks' strides evaluated in batches of EVAL_BATCH
      and summed; evaluate(return_pred=True), where every rank runs over all the data, those of
      all the data in one batch;
    - ``test_log``: test_log.tsv holds one row, test()'s (rank 0 alone appends it; the scenario's
      ``writers`` check sees that no other rank wrote);
    - ``predictions``: the outputs of evaluate(return_pred=True) and predict(x) are network(x) over
      all the data, on every rank.
    """
    found: dict[str, list[str]] = {"inference_logs": [], "test_log": [], "predictions": []}
    saved = newest_state(run_dir)["nodes"]["model"]
    for rank, outcome in enumerate(ranks):
        found["inference_logs"] += [
            f"rank {rank}: after test(checkpoint='last'), the network's {difference} (vs the saved weights)"
            for difference in tree_differences(saved, outcome["weights"])
        ]
    network = make_network()
    network.load_state_dict(saved)
    split = reference_logs(network, valid, len(ranks), EVAL_BATCH)
    whole = reference_logs(network, valid, 1, len(valid[1]))
    for key, expected in (("test", split), ("evaluate", split), ("return_pred", whole)):
        found["inference_logs"] += logs_problems(CALLS[key], expected, [outcome[key] for outcome in ranks])
    found["test_log"] += logged_test_problems(run_dir, ranks[0]["test"], "last", epochs)
    network.eval()
    with torch.no_grad():
        expected_outputs = network(valid[0])
    for key in ("outputs", "predict"):
        found["predictions"] += output_problems(
            CALLS[key], expected_outputs, [outcome[key] for outcome in ranks]
        )
    return found


def reference_logs(
    network: torch.nn.Module, valid: tuple[torch.Tensor, torch.Tensor], world_size: int, batch_size: int
) -> dict[str, float]:
    """``test_loss``, ``test_acc`` and ``test_f1`` of ``network`` over ``valid`` as ``world_size``
    processes evaluating their strides (samples r, r + world, ...) in batches of ``batch_size``
    compute them, done here in one process: each rank's loss and accuracy times the batch size summed
    in float32 in batch order, these sums and counts added over the ranks in float64, macro F1 from
    the confusion counts of every sample. The workload's loss and metrics, as plain torch."""
    x, y = valid
    totals = torch.zeros(3, dtype=torch.float64)
    predicted, targets = [], []
    network.eval()
    with torch.no_grad():
        for rank in range(world_size):
            sums: torch.Tensor | None = None
            shard_x, shard_y = x[rank::world_size], y[rank::world_size]
            for start in range(0, len(shard_y), batch_size):
                batch_x, batch_y = shard_x[start : start + batch_size], shard_y[start : start + batch_size]
                output = network(batch_x)
                loss = torch.nn.functional.cross_entropy(output, batch_y)
                hits = (output.argmax(dim=-1) == batch_y).float().mean() * 100.0
                weighted = torch.stack([loss, hits]) * torch.tensor(float(len(batch_y)))
                sums = weighted if sums is None else sums + weighted
                predicted.append(output.argmax(dim=-1))
                targets.append(batch_y)
            assert sums is not None
            totals += torch.cat([sums.double(), torch.tensor([float(len(shard_y))], dtype=torch.float64)])
    loss, accuracy = (totals[:2] / totals[2]).tolist()
    f1 = _macro_f1(torch.cat(predicted), torch.cat(targets))
    return {"test_loss": loss, "test_acc": accuracy, "test_f1": f1}


def _macro_f1(predicted: torch.Tensor, target: torch.Tensor, classes: int = 3) -> float:
    """Macro F1 over the classes that occur among the labels or the predictions, in float64."""
    scores = []
    for label in range(classes):
        hits = int(((predicted == label) & (target == label)).sum())
        counted = int((predicted == label).sum()) + int((target == label).sum())
        if counted:
            scores.append(2 * hits / counted)
    return float(torch.tensor(scores, dtype=torch.float64).mean().float())


def logs_problems(what: str, expected: dict[str, float], per_rank: list[dict[str, float]]) -> list[str]:
    """Every rank's logs equal ``expected`` exactly (the same keys, the same numbers)."""
    return [
        f"{what} on rank {rank}: {logs}; expected (one process over the same batches) {expected}"
        for rank, logs in enumerate(per_rank)
        if logs != expected
    ]


def logged_test_problems(run_dir: Path, logs: dict[str, float], checkpoint: str, epoch: int) -> list[str]:
    """test_log.tsv holds one row (the launch tests once, with every rank), for ``checkpoint`` and
    ``epoch``, with the values of ``logs``."""
    path = run_dir / "test_log.tsv"
    if not path.exists():
        return [f"{run_dir.name}/test_log.tsv does not exist after test()"]
    rows = pd.read_csv(path, sep="\t").to_dict("records")
    if len(rows) != 1:
        return [f"{run_dir.name}/test_log.tsv has {len(rows)} rows after one test(); expected 1: {rows}"]
    row, expected = rows[0], {"checkpoint": checkpoint, "epoch": epoch, **logs}
    return [
        f"{run_dir.name}/test_log.tsv {key}: {row.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if not same_number(value, row.get(key))
    ]


def output_problems(what: str, expected: torch.Tensor, per_rank: list[Any]) -> list[str]:
    """Every rank got ``expected`` (the network's output over all the data), bit for bit."""
    problems = []
    for rank, output in enumerate(per_rank):
        if not isinstance(output, torch.Tensor) or output.shape != expected.shape:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            problems.append(f"{what} on rank {rank}: {shape}; expected a tensor {tuple(expected.shape)}")
        elif not torch.equal(output, expected):
            difference = float((output - expected).abs().max())
            problems.append(f"{what} on rank {rank} differs from network(x) (by up to {difference})")
    return problems
