"""FSDP2 resume bit-identity on GPUs: the case of scripts/gpu_check.py that needs several processes.

For synchronous and asynchronous directory commits, each rank trains an MLP with dropout under
``strategy="fsdp"`` (bf16-mixed on CUDA, 32-true on the CPU; deterministic algorithms), with a
commit every 5 steps, once without a stop and once stopped by an exception on every rank after
steps 7 and 20 and resumed with a fresh network, optimizer and Experiment each time. It compares the
full (gathered) model and optimizer state dicts at the end, and prints one JSON object (rank 0):
``{"ranks", "device", "precision", "resume_identical_sync", "resume_identical_async", "seconds"}``.

scripts/gpu_check.py runs it with one rank per GPU (NCCL) where at least two GPUs are visible.
``--device cpu`` runs it on the CPU with gloo, which is how the test suite checks the script.

Usage (it starts torchrun itself when run without it)::

    python scripts/gpu_check_fsdp.py [--nproc N] [--device cuda|cpu] [--out FILE]
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
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_check import StopAt, Stopped  # noqa: E402  (scripts/ is on the path)

from experiment import Experiment  # noqa: E402

STOPS = (7, 20)
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _run(directory: Path, device: str, asynchronous: bool, stop: int | None) -> dict[str, Any]:
    """Train (or resume) the run in ``directory``; the full state dicts at the end (every rank)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 2)).to(device)
    experiment = Experiment(
        directory,
        network,
        optimizer="adamw",
        loss_function="cross_entropy",
        strategy="fsdp",
        precision="bf16-mixed" if device == "cuda" else "32-true",
        tensorboard=False,
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=generator)
    callbacks = [StopAt(stop)] if stop is not None else []
    with contextlib.suppress(Stopped):
        experiment.train(
            (x, (x[:, 0] > 0).long()),
            epochs=3,
            batch_size=64,
            checkpoint_every=5,
            async_checkpoint=asynchronous,
            callbacks=callbacks,
            progress=False,
        )
    model, optimizer = get_state_dict(experiment.network, experiment.optimizer, options=FULL)
    return {"model": model, "optimizer": optimizer}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def worker(args: argparse.Namespace) -> None:
    device = args.device
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("cpu:gloo,cuda:nccl" if device == "cuda" else "gloo")
    box = [tempfile.mkdtemp(prefix="gpu-check-fsdp-") if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    root = Path(str(box[0]))
    started = time.perf_counter()
    summary: dict[str, Any] = {"device": device}
    try:
        for asynchronous in (False, True):
            name = "async" if asynchronous else "sync"
            expected = _run(root / f"{name}-straight", device, asynchronous, None)
            for stop in STOPS:
                _run(root / f"{name}-resumed", device, asynchronous, stop)
            actual = _run(root / f"{name}-resumed", device, asynchronous, None)
            verdicts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(verdicts, _same(expected, actual))
            summary[f"resume_identical_{name}"] = all(verdicts)
    finally:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(root, ignore_errors=True)
    summary.update(ranks=dist.get_world_size(), seconds=round(time.perf_counter() - started, 1))
    summary["precision"] = "bf16-mixed" if device == "cuda" else "32-true"
    if dist.get_rank() == 0:
        text = json.dumps(summary, indent=2)
        print(text, flush=True)
        if args.out is not None:
            args.out.write_text(text + "\n")
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nproc", type=int, default=None, help="ranks (default: the GPUs visible, or 2 on the CPU)"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if "WORLD_SIZE" in os.environ:
        worker(args)
        return
    nproc = args.nproc or (torch.cuda.device_count() if args.device == "cuda" else 2)
    if nproc < 2:
        parser.error(
            f"strategy='fsdp' needs at least 2 processes and NCCL one GPU per process; {nproc} GPU(s) "
            "visible. Run it on a machine with 2 or more GPUs, or with --device cpu."
        )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    arguments = ["--device", args.device, *(["--out", str(args.out)] if args.out else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    raise SystemExit(subprocess.call([*command, __file__, *arguments], env=env))


if __name__ == "__main__":
    main()
