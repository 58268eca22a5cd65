"""Named metrics against torchmetrics computed directly; inferred tasks; exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
import torchmetrics

from experiment.errors import ConfigurationError, DataError
from experiment.training.metric_resolution import resolve_batch_metrics, resolve_epoch_metrics
from experiment.training.metrics import F1, EpochAccumulator, accuracy
from tests.support.training import assert_same_training_state, make_data, train_run

GENERATOR = torch.Generator().manual_seed(0)
BATCHES = 3
LOGITS = torch.randn(BATCHES, 16, 7, generator=GENERATOR)
LABELS = torch.randint(0, 7, (BATCHES, 16), generator=GENERATOR)
SCORES = torch.randn(BATCHES, 16, generator=GENERATOR)
BINARY = torch.randint(0, 2, (BATCHES, 16), generator=GENERATOR)
MULTILABEL = torch.randint(0, 2, (BATCHES, 16, 7), generator=GENERATOR).float()
TARGETS = torch.randn(BATCHES, 16, generator=GENERATOR)


def logged(names, predictions, targets, *, batch=()) -> dict[str, float]:
    metrics = EpochAccumulator(resolve_batch_metrics(batch), resolve_epoch_metrics(names))
    for y_pred, y_true in zip(predictions, targets):
        metrics.update(torch.tensor(0.0), y_pred, y_true, len(y_true))
    return metrics.averages()


def direct(metric, predictions, targets) -> float:
    for y_pred, y_true in zip(predictions, targets):
        metric.update(y_pred, y_true)
    return float(metric.compute())


MULTICLASS = {
    "acc": (100 * torchmetrics.Accuracy(task="multiclass", num_classes=7, average="micro")),
    "top3_acc": (100 * torchmetrics.Accuracy(task="multiclass", num_classes=7, top_k=3, average="micro")),
    "f1": torchmetrics.F1Score(task="multiclass", num_classes=7, average="macro"),
    "precision": torchmetrics.Precision(task="multiclass", num_classes=7, average="macro"),
    "recall": torchmetrics.Recall(task="multiclass", num_classes=7, average="macro"),
    "auroc": torchmetrics.AUROC(task="multiclass", num_classes=7, average="macro"),
}
MULTI_LABEL = {
    "f1": torchmetrics.F1Score(task="multilabel", num_labels=7, average="macro"),
    "precision": torchmetrics.Precision(task="multilabel", num_labels=7, average="macro"),
    "recall": torchmetrics.Recall(task="multilabel", num_labels=7, average="macro"),
    "auroc": torchmetrics.AUROC(task="multilabel", num_labels=7, average="macro"),
}
REGRESSION = {
    "mae": torchmetrics.MeanAbsoluteError(),
    "mse": torchmetrics.MeanSquaredError(),
    "r2": torchmetrics.R2Score(),
}


@pytest.mark.parametrize("name", MULTICLASS)
def test_named_metrics_multiclass_match_torchmetrics(name):
    values = logged([name], LOGITS, LABELS)
    assert values[name] == pytest.approx(direct(MULTICLASS[name], LOGITS, LABELS), rel=1e-6)


@pytest.mark.parametrize("name", MULTI_LABEL)
def test_named_metrics_multilabel_match_torchmetrics(name):
    values = logged([name], LOGITS, MULTILABEL)
    assert values[name] == pytest.approx(direct(MULTI_LABEL[name], LOGITS, MULTILABEL.long()), rel=1e-6)


@pytest.mark.parametrize("name", REGRESSION)
def test_named_metrics_regression_match_torchmetrics(name):
    values = logged([name], SCORES, TARGETS)
    assert values[name] == pytest.approx(direct(REGRESSION[name], SCORES, TARGETS), rel=1e-6)


def test_named_metrics_binary_auroc_matches_torchmetrics():
    values = logged(["auroc"], SCORES.unsqueeze(-1), BINARY)
    assert values["auroc"] == pytest.approx(direct(torchmetrics.AUROC(task="binary"), SCORES, BINARY))


@pytest.mark.parametrize("name", ["precision", "recall"])
def test_named_metrics_binary_averages_both_classes(name):
    """One logit per sample: classes 0 and 1 from its sign, macro-averaged (as f1 always was)."""
    metric = MULTICLASS[name].__class__(num_classes=2, average="macro")
    labels = [(s > 0).long() for s in SCORES]
    assert logged([name], SCORES, BINARY)[name] == pytest.approx(direct(metric, labels, BINARY), rel=1e-6)


@pytest.mark.parametrize("name, k", [("acc", 1), ("top3_acc", 3), ("top5_accuracy", 5)])
def test_named_metrics_batch_accuracies_match_torchmetrics(name, k):
    values = logged([], LOGITS, LABELS, batch=[name])
    expected = torchmetrics.Accuracy(task="multiclass", num_classes=7, top_k=k, average="micro")
    assert values[name.replace("accuracy", "acc")] == pytest.approx(100 * direct(expected, LOGITS, LABELS))


@pytest.mark.parametrize(
    "y_pred, y_true", [(LOGITS, LABELS), (SCORES, BINARY), (SCORES.unsqueeze(-1), BINARY.float())]
)
def test_named_metrics_f1_and_acc_keep_their_former_values(y_pred, y_true):
    former = F1()
    for p, t in zip(y_pred, y_true):
        former.update(p, t)
    values = logged(["f1", "acc"], y_pred, y_true, batch=["acc"])
    assert values["f1"] == pytest.approx(float(former.compute()), rel=1e-6)
    expected = sum(float(accuracy(p, t)) for p, t in zip(y_pred, y_true)) / BATCHES
    assert values["acc"] == pytest.approx(expected, rel=1e-6)


def test_named_metrics_explicit_task_is_used():
    options = {"task": "multiclass", "num_classes": 7, "average": "micro"}
    values = logged([("f1", options)], LOGITS, LABELS)
    assert values["f1"] == pytest.approx(direct(torchmetrics.F1Score(**options), LOGITS, LABELS))


def test_named_metrics_explicit_options_refused_by_torchmetrics():
    with pytest.raises(ConfigurationError, match=r"metric 'f1': torchmetrics refused options"):
        resolve_epoch_metrics([("f1", {"task": "multiclass"})])


def test_named_metrics_epoch_name_in_batch_metrics_is_refused():
    with pytest.raises(
        ConfigurationError, match=r"received 'f1' \(an epoch metric: pass it in epoch_metrics\)"
    ):
        resolve_batch_metrics(["f1"])


@pytest.mark.parametrize("name", ["precision", "recall", "auroc", "top3_acc"])
def test_named_metrics_one_hot_targets_are_refused(name):
    one_hot = torch.eye(7, dtype=torch.long)[LABELS]
    with pytest.raises(DataError, match=rf"metric '{name}' expects y_true as class indices.*y.argmax"):
        logged([name], LOGITS, one_hot)


def test_named_metrics_top_k_needs_k_classes():
    with pytest.raises(DataError, match=r"metric 'top9_acc' needs at least 9 class outputs"):
        logged([], LOGITS, LABELS, batch=["top9_acc"])


@pytest.mark.parametrize("name", REGRESSION)
def test_named_metrics_regression_refuses_class_indices(name):
    with pytest.raises(DataError, match=rf"metric '{name}' expects y_true as a floating-point tensor"):
        logged([name], LOGITS, LABELS)


def test_named_metrics_state_rebuilds_the_inferred_metric():
    names = ["f1", "auroc", "top3_acc"]
    straight = EpochAccumulator([], resolve_epoch_metrics(names))
    resumed = EpochAccumulator([], resolve_epoch_metrics(names))
    straight.update(torch.tensor(0.0), LOGITS[0], LABELS[0], 16)
    resumed.load_state_dict(straight.state_dict())
    for metrics in (straight, resumed):
        metrics.update(torch.tensor(0.0), LOGITS[1], LABELS[1], 16)
    assert resumed.averages() == straight.averages()
    assert resumed.epoch_metrics[0][1].spec == {
        "inputs": "plain", "task": "multiclass", "num_classes": 7, "average": "macro"
    }  # fmt: skip


EPOCH_METRICS = ["acc", "f1", "precision", "recall", "auroc", "top2_acc"]


def test_named_metrics_resume_mid_epoch_is_exact(tmp_path):
    options = {"epochs": 3, "experiment_options": {"tensorboard": False, "epoch_metrics": EPOCH_METRICS}}
    expected = train_run(tmp_path / "straight", **options)
    for step in (3, 10):  # in the first epoch, before anything was inferred afresh; then in epoch 2
        train_run(tmp_path / "resumed", interrupt_at=step, checkpoint_every=2, **options)
    actual = train_run(tmp_path / "resumed", checkpoint_every=2, **options)
    assert_same_training_state(expected, actual)
    assert {f"val_{name}" for name in EPOCH_METRICS} <= set(actual.logs.columns)


def test_named_metrics_regression_network_trains(tmp_path):
    x, y = make_data()
    from tests.support.training import make_experiment

    exp = make_experiment(
        tmp_path / "run", loss_function="mse", batch_metrics=[], epoch_metrics=["mae", "mse", "r2"]
    )
    exp.network[-1] = torch.nn.Linear(16, 1)
    exp.optimizer.add_param_group({"params": exp.network[-1].parameters()})
    exp.train((x, y.float().unsqueeze(-1)), epochs=1, progress=False)
    assert set(exp.logs.columns) >= {"mae", "mse", "r2"}


def _regression_step(trainer, batch):
    x, y = batch
    y_pred = trainer.network(x)[:, 0]
    target = y.float()
    return {"loss": torch.nn.functional.mse_loss(y_pred, target), "y_pred": y_pred, "y_true": target}


def test_named_regression_metrics_resume_mid_epoch_is_exact(tmp_path):
    metrics = ["mae", "mse", "r2"]
    experiment_options = {
        "tensorboard": False,
        "batch_metrics": [],
        "epoch_metrics": metrics,
        "train_step": _regression_step,
    }
    options = {"epochs": 3, "experiment_options": experiment_options}
    expected = train_run(tmp_path / "straight", **options)
    for step in (3, 10):  # in the first epoch, then in the second
        train_run(tmp_path / "resumed", interrupt_at=step, checkpoint_every=2, **options)
    actual = train_run(tmp_path / "resumed", checkpoint_every=2, **options)
    assert_same_training_state(expected, actual)
    assert {*metrics, *(f"val_{name}" for name in metrics)} <= set(actual.logs.columns)
    assert actual.logs["mse"].notna().all()
