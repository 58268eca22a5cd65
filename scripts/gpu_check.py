"""Checks that need a CUDA GPU, in a few minutes; prints one JSON summary.

- bf16-mixed and 16-mixed resume bit-identity: a run interrupted at several steps (mid-epoch, with
  step checkpoints) and resumed ends with the same weights as an uninterrupted one, with
  ``torch.use_deterministic_algorithms(True)``;
- no host synchronization in a steady-state training step (``torch.cuda.set_sync_debug_mode``
  raises on one), for 32-true and bf16-mixed;
- the time a commit blocks training for a multi-GB state, synchronous and asynchronous (the time
  between the step before a commit and the step after it, minus a plain step);
- FSDP2 resume bit-identity with synchronous and asynchronous directory commits, one rank per GPU
  with NCCL (scripts/gpu_check_fsdp.py, under torchrun) where two or more GPUs are visible;
  ``strategy="fsdp"`` needs two processes and NCCL one GPU per process, so with one GPU the case
  says it was skipped and why.

Usage::

    python scripts/gpu_check.py [--state-gb 2] [--out gpu_check.json]

Without CUDA it prints ``{"cuda": false}``, says on stderr that nothing was checked, and exits 0:
the test suite never needs a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiment import Callback, Experiment  # noqa: E402


class Stopped(Exception):
    """Raised by StopAt: leaves the last commit in place as a kill would."""


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step:
            raise Stopped(f"stopped at step {self.step}")


def _data(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=generator)
    return x, (x[:, 0] > 0).long()


def _run(directory: Path, precision: str, stop: int | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 2)).cuda()
    exp = Experiment(
        directory,
        net,
        optimizer="adamw",
        loss_function="cross_entropy",
        precision=precision,
        tensorboard=False,
    )
    callbacks = [StopAt(stop)] if stop is not None else []
    with contextlib.suppress(Stopped):
        exp.train(
            _data("cuda"), epochs=3, batch_size=64, checkpoint_every=5, callbacks=callbacks, progress=False
        )
    return {key: value.detach().cpu() for key, value in net.state_dict().items()}


def resume_identity(root: Path, precision: str) -> bool:
    expected = _run(root / f"{precision}-straight", precision, None)
    for stop in (7, 40, 70):
        _run(root / f"{precision}-resumed", precision, stop)
    actual = _run(root / f"{precision}-resumed", precision, None)
    return all(torch.equal(expected[key], actual[key]) for key in expected)


def no_host_sync(root: Path, precision: str) -> bool | str:
    class SyncCheck(Callback):
        def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
            torch.cuda.set_sync_debug_mode("error" if self.trainer.global_step >= 5 else "default")

        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            torch.cuda.set_sync_debug_mode("default")

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2)).cuda()
    x, y = _data("cuda")
    exp = Experiment(
        root / f"sync-{precision}",
        net,
        optimizer="adamw",
        loss_function="cross_entropy",
        precision=precision,
        tensorboard=False,
    )
    try:
        exp.train((x.cuda(), y.cuda()), epochs=1, batch_size=64, callbacks=[SyncCheck()], progress=False)
    except RuntimeError as error:
        return f"host sync: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return True


def commit_stall(root: Path, state_gb: float, async_checkpoint: bool) -> dict[str, float]:
    width = int((state_gb * 2**30 / 4 / 3 / 2) ** 0.5)  # two square layers, weights + 2 Adam moments
    net = nn.Sequential(nn.Linear(width, width), nn.Linear(width, width)).cuda()
    stamps: list[float] = []

    class Stamp(Callback):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    x = torch.randn(64, width)
    exp = Experiment(
        root / f"stall-{async_checkpoint}", net, optimizer="adam", loss_function="mse", tensorboard=False
    )
    exp.train(
        (x, x),
        epochs=1,
        batch_size=8,
        checkpoint_every=4,
        async_checkpoint=async_checkpoint,
        callbacks=[Stamp()],
        progress=False,
    )
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    plain = sorted(gaps)[len(gaps) // 2]
    committed = [gaps[index] for index in range(3, len(gaps), 4)]  # after steps 4, 8: a commit
    return {"state_gb": state_gb, "step_s": plain, "commit_stall_s": max(committed) - plain}


def fsdp_case(root: Path) -> dict[str, Any]:
    """The summary of scripts/gpu_check_fsdp.py over every visible GPU, or why it was skipped."""
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {"skipped": f"{gpus} GPU visible: strategy='fsdp' needs 2 processes, NCCL a GPU for each"}
    out = root / "fsdp.json"
    script = Path(__file__).with_name("gpu_check_fsdp.py")
    finished = subprocess.run(
        [sys.executable, str(script), "--nproc", str(min(gpus, 8)), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if finished.returncode != 0 or not out.exists():
        return {"failed": f"exit {finished.returncode}: {finished.stderr[-2000:]}"}
    return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-gb", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False}))
        print(
            f"gpu_check: no CUDA device is available (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}), so nothing was checked; run it on a machine with a CUDA GPU.",
            file=sys.stderr,
        )
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    summary: dict[str, Any] = {
        "cuda": True,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }
    try:
        for precision in ("bf16-mixed", "16-mixed"):
            summary[f"resume_identical_{precision}"] = resume_identity(root, precision)
        for precision in ("32-true", "bf16-mixed"):
            summary[f"no_host_sync_{precision}"] = no_host_sync(root, precision)
        torch.use_deterministic_algorithms(False)
        summary["commit_sync"] = commit_stall(root, args.state_gb, async_checkpoint=False)
        summary["commit_async"] = commit_stall(root, args.state_gb, async_checkpoint=True)
        summary["fsdp"] = fsdp_case(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
