"""Train a small MLP on scikit-learn's digits in a run directory; run it again to resume.

Usage:
    python scripts/train_digits.py [RUN_DIR] [--epochs N]

Kill it at any moment (Ctrl-C, kill -9) and run the same command again: training continues from the
last commit and ends with the weights and logs of a run that was never interrupted.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiment import Experiment


def digits_splits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Train / validation / test splits of the 1,797 digits, fixed by a seeded permutation."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (
        TensorDataset(x[:1200], y[:1200]),
        TensorDataset(x[1200:1500], y[1200:1500]),
        TensorDataset(x[1500:], y[1500:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/digits")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    train_set, valid_set, test_set = digits_splits()
    torch.manual_seed(0)  # the initial weights; a resumed run overwrites them from its checkpoint
    network = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    exp = Experiment(
        args.run_dir,
        network,
        optimizer=optimizer,
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        epoch_metrics=["f1"],
        monitor_metric="val_acc",
        monitor_mode="max",
        config={"hidden": 128, "dropout": 0.2, "lr": 0.1, "momentum": 0.9, "batch_size": 32},
    )
    exp.train(
        DataLoader(train_set, batch_size=32, shuffle=True),
        DataLoader(valid_set, batch_size=256),
        epochs=args.epochs,
        lr_schedulers=[torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)],
        checkpoint_every=10,
    )
    print(exp.logs.to_string(index=False))
    print(exp.test(DataLoader(test_set, batch_size=256)))


if __name__ == "__main__":
    main()
