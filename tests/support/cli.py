"""Helpers of the command-line tests: fake run directories, a real training module, a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiment.store import tsv

REPO_ROOT = Path(__file__).resolve().parents[2]

#: A training module that is both a script (``python tinytrain.py DIR [--epochs N]``) and an entry
#: point (``exp run tinytrain:main DIR -- --epochs N``). With BLOCK_AT_STEP=k in its environment, it
#: prints READY once step k's batch is done and the checkpoint of an earlier step is durable (the
#: writer thread renames it into place while training goes on), then waits on stdin until it is
#: killed; the resumed process, started without that variable, does not.
TRAINING_MODULE = """
import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from experiment import Callback, Experiment


class BlockAt(Callback):
    needs_batch_values = False

    def __init__(self, step, directory):
        super().__init__()
        self.step = step
        self.checkpoints = Path(directory) / "checkpoints"

    def on_train_batch_end(self, batch_number, logs):
        if self.trainer.global_step == self.step:
            deadline = time.monotonic() + 60
            while any(p.name.endswith(".tmp") for p in self.checkpoints.iterdir()):
                assert time.monotonic() < deadline, "the step's commit never became durable"
                time.sleep(0.005)
            print("READY", flush=True)
            sys.stdin.readline()


def main(directory, *args):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    options = parser.parse_args(args)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(network.parameters(), lr=options.lr, momentum=0.9)
    experiment = Experiment(directory, network, optimizer=optimizer, loss_function="cross_entropy",
                            batch_metrics=["accuracy"], tensorboard=False,
                            config={"lr": options.lr, "hidden": 16, "model": {"dropout": 0.2}})
    block = os.environ.get("BLOCK_AT_STEP")
    callbacks = [BlockAt(int(block), directory)] if block else []
    experiment.train((x[:64], y[:64]), (x[64:], y[64:]), epochs=options.epochs, batch_size=16,
                     checkpoint_every=3, callbacks=callbacks)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
"""


def write_training_module(folder: Path) -> Path:
    path = folder / "tinytrain.py"
    path.write_text(TRAINING_MODULE)
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child process, with the repository importable and ``extra`` added."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BLOCK_AT_STEP", "EXPERIMENT_EPOCHS", "EXPERIMENT_RESUME_DIR")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), extra.pop("PYTHONPATH", "")]))
    env.update(extra)
    return env


def start_and_kill(argv: list[str], *, cwd: Path, block_at: int, **env: str) -> int:
    """Start ``argv``, wait until it reports step ``block_at`` done, SIGKILL it; return its exit code."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=subprocess_env(BLOCK_AT_STEP=str(block_at), **env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until_ready(process)
    process.kill()
    process.communicate()
    return process.returncode


def exp_command(*args: str) -> list[str]:
    """``exp ARGS`` as a subprocess command line (through ``python -m cli``)."""
    return [sys.executable, "-m", "cli", *args]


def write_fake_run(
    directory: Path,
    *,
    epochs_done: int = 3,
    epochs: int = 5,
    status: str = "finished",
    monitor: str = "val_loss",
    mode: str = "min",
    values: list[float] | None = None,
    config: dict[str, Any] | None = None,
    command: dict[str, Any] | None = None,
    message: str | None = None,
) -> Path:
    """A run directory as the library writes it (experiment.json, log.tsv, best file), no checkpoint.

    ``values`` are the monitored values by epoch (default: decreasing losses); val_loss derives
    from them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    values = values if values is not None else [1.0 / (epoch + 1) for epoch in range(epochs_done)]
    rows = [
        {
            "epoch": epoch + 1,
            "time": 0.5,
            "lr": 0.1,
            "loss": value + 0.1,
            "acc": 50.0 + epoch,
            "val_loss": value,
            "val_acc": 40.0 + epoch,
        }
        for epoch, value in enumerate(values)
    ]
    for row, value in zip(rows, values, strict=True):
        row[monitor] = value
    metadata = {
        "format_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-01T00:00:00+00:00",
        "command": command or {"argv": [sys.executable, "-c", "pass"], "cwd": str(directory.parent)},
        "config": config if config is not None else {"lr": 0.1},
        "settings": {
            "epochs": epochs,
            "seed": 42,
            "monitor_metric": monitor,
            "monitor_mode": mode,
            "checkpoint_every": None,
            "steps_per_epoch": 4,
        },
        "status": status,
        "message": message,
        "pid": 12345,
        "host": "fakehost",
    }
    (directory / "experiment.json").write_text(json.dumps(metadata, indent=2))
    if rows:
        (directory / "log.tsv").write_text(tsv.render(rows))
        best = _best_epoch(rows, monitor, mode)
        (directory / "checkpoints").mkdir(exist_ok=True)
        (directory / "checkpoints" / f"best-epoch{best:04d}.pt").write_bytes(b"fake weights")
    return directory


def _best_epoch(rows: list[dict[str, Any]], monitor: str, mode: str) -> int:
    best = rows[0]
    for row in rows[1:]:
        if (row[monitor] < best[monitor]) if mode == "min" else (row[monitor] > best[monitor]):
            best = row
    return int(best["epoch"])


def call_as_nobody(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """Call ``function`` as user 'nobody' (uid/gid 65534) in a forked child when running as root,
    where chmod does not stop writes; in this process otherwise. Returns ``(error class name,
    message)``, or ``("none", "no error")``.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        try:
            function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - reported to the caller
            return type(error).__name__, str(error)
        return "none", "no error"
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a process with threads
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        report = "none\tno error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            report = f"{type(error).__name__}\t{error}"
        finally:
            os.write(write_end, report.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    os.waitpid(pid, 0)
    kind, _, message = report.partition("\t")
    return kind, message


def write_two_fake_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Two fake runs whose logs, lengths and configs differ (a: 3 epochs, b: 2)."""
    a = write_fake_run(
        tmp_path / "a", values=[0.9, 0.4, 0.6], config={"lr": 0.1, "model": {"depth": 2}, "seed": 1}
    )
    b = write_fake_run(
        tmp_path / "b", values=[0.8, 0.7], config={"lr": 0.01, "model": {"depth": 2}, "wd": 0.0}
    )
    return a, b


def wait_until_ready(process: subprocess.Popen[str]) -> None:
    """Read the child's output until it prints READY (its imports and set-up are done)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == "READY":
            return


def probe_json(code: str, *args: str) -> Any:
    """Run ``code`` in a fresh interpreter (arguments in ``sys.argv[1:]``) from the repository root;
    return the JSON it prints."""
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)
