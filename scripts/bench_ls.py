"""How long `exp ls` takes over 200 run directories, in-process and as a command.

Most directories are written directly (experiment.json, a log.tsv of 20 to 2,000 epochs with the
columns a classifier logs, and a best-weights file named after the best epoch), as the library
lays them out; a few are real runs trained here. Prints the time of the listing itself (and, for comparison, of
reading every log whole with pandas), the time of the whole command, and the time of a bare
`import experiment` that the command pays first.

Usage: python scripts/bench_ls.py [--runs 200] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from click.testing import CliRunner
from torch import nn

from cli.main import cli
from experiment import Experiment
from experiment.inspection.summary import summarize_all
from experiment.store import tsv

STATUSES = ["finished"] * 6 + ["interrupted", "failed", "stopped", "running"]
REAL_RUNS = 3  # run directories trained for real; the others are written directly


def fake_run(directory: Path, rng: random.Random) -> int:
    """A realistic run directory without checkpoints; returns its number of epochs."""
    epochs = rng.choice([20, 50, 100, 300, 1000, 2000])
    done = epochs if rng.random() < 0.6 else rng.randint(1, epochs)
    rows, value = [], 2.0
    for epoch in range(1, done + 1):
        value *= rng.uniform(0.97, 1.01)
        rows.append(
            {
                "epoch": epoch,
                "time": rng.uniform(5, 50),
                "lr": 0.1 * 0.99**epoch,
                "loss": value,
                "acc": 100 - 20 * value,
                "f1": 1 - value / 3,
                "val_loss": value * 1.1,
                "val_acc": 100 - 22 * value,
                "val_f1": 1 - value / 2.8,
            }
        )
    best = min(rows, key=lambda row: row["val_loss"])["epoch"]
    (directory / "checkpoints").mkdir(parents=True)
    (directory / "log.tsv").write_text(tsv.render(rows))
    (directory / "checkpoints" / f"best-epoch{best:04d}.pt").write_bytes(b"\0" * 1024)
    metadata = {
        "format_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-01T00:00:00+00:00",
        "command": {"argv": [sys.executable, "train.py", "--lr", "0.1"], "cwd": str(directory.parent)},
        "config": {"lr": 0.1, "batch_size": 64, "model": {"depth": rng.randint(2, 8), "width": 256}},
        "settings": {
            "epochs": epochs,
            "seed": 42,
            "monitor_metric": "val_loss",
            "monitor_mode": "min",
            "checkpoint_every": 500,
            "steps_per_epoch": 300,
        },
        "status": rng.choice(STATUSES),
        "message": None,
        "pid": 4242,
        "host": "node-7",
    }
    (directory / "experiment.json").write_text(json.dumps(metadata, indent=2))
    return done


def real_run(directory: Path, seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    network = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    experiment = Experiment(
        directory,
        network,
        optimizer="adam",
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        tensorboard=False,
        config={"seed": seed},
    )
    experiment.train((x[:192], y[:192]), (x[192:], y[192:]), epochs=5, batch_size=32, checkpoint_every=4)


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def command_time(argv: list[str], repeats: int) -> list[float]:
    return timed(lambda: subprocess.run(argv, check=True, capture_output=True), repeats)


def report(name: str, times: list[float]) -> None:
    print(f"{name:<50} median {statistics.median(times) * 1000:8.1f} ms   min {min(times) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=200,
        help=f"run directories, {REAL_RUNS} of them trained, at least {REAL_RUNS} (default 200)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timings of each figure (default 5)")
    parser.add_argument("--keep", type=Path, help="build the directories here and keep them")
    options = parser.parse_args()
    root = options.keep or Path(tempfile.mkdtemp(prefix="bench_ls_"))
    try:
        measure(root, options.runs, options.repeats)
    finally:
        if options.keep is None:
            shutil.rmtree(root)


def measure(root: Path, runs: int, repeats: int) -> None:
    rng = random.Random(0)
    epochs = [fake_run(root / f"sweep-{i // 20:02d}" / f"run-{i:03d}", rng) for i in range(runs - REAL_RUNS)]
    for i in range(REAL_RUNS):
        real_run(root / "real" / f"run-{i}", seed=i)
    log_bytes = sum(p.stat().st_size for p in root.rglob("log.tsv"))
    print(f"{runs} runs under {root}: {sum(epochs)} epochs logged, log.tsv files {log_bytes / 1e6:.1f} MB")

    summaries = summarize_all(root)
    assert len(summaries) == runs, len(summaries)
    runner = CliRunner()
    report("summarize_all (in-process)", timed(lambda: summarize_all(root), repeats))
    report(
        "exp ls, rendered (in-process, CliRunner)",
        timed(lambda: runner.invoke(cli, ["ls", str(root)], catch_exceptions=False), repeats),
    )
    report(
        "exp ls --json (in-process, CliRunner)",
        timed(lambda: runner.invoke(cli, ["ls", str(root), "--json"], catch_exceptions=False), repeats),
    )
    logs = sorted(root.rglob("log.tsv"))
    report(
        "for comparison: pandas reads every whole log.tsv",
        timed(lambda: [pd.read_csv(path, sep="\t") for path in logs], repeats),
    )
    report(
        "python -m cli ls ROOT (a new process)",
        command_time([sys.executable, "-m", "cli", "ls", str(root)], repeats),
    )
    report(
        "python -c 'import experiment' (start-up alone)",
        command_time([sys.executable, "-c", "import experiment"], repeats),
    )


if __name__ == "__main__":
    main()
