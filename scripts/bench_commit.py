"""How long a commit blocks training, what memory it takes, and how long a resume loads, for big states.

For each state size (a wide two-layer MLP with Adam, on CPU: the state is the weights and the two
Adam moments, about 200 MB and 600 MB by default), in one run, on a temporary folder of a real disk:

- copy: ``copy_`` of every tensor of the state into CPU buffers allocated beforehand, the part of an
  asynchronous commit that must block training.
- plain: ``torch.save`` of ``{"model": ..., "optimizer": ...}`` state dicts straight into a file
  (the same file each time, as a hand-written loop does), flush and fsync. It runs at the start of
  each epoch of the synchronous run, so that plain saves and library commits alternate and meet
  the same state of the disk's write-back (which makes single figures vary by 2-3x here).
- sync / async: ``Experiment.train`` with ``async_checkpoint`` False / True, an epoch of a few steps,
  a commit per epoch. A callback stamps ``on_epoch_end`` (the last hook before the commit) and the
  next ``on_epoch_begin``: the time between is everything training waits for at an epoch end
  (the commit with its finiteness check and log row; for async, the wait for the previous write,
  if it is still running, and the copy). The first commit (which allocates the reused buffers) is
  left out; the median of the others is shown. The learning rate is 0 so that the monitored loss
  improves only once: later commits write the state alone, as ``plain`` does, not best weights too.
- peak memory: a thread samples VmRSS every millisecond; the figure is the highest sample during a
  commit minus the sample just before it (page cache is not resident memory of the process).
- step time while a background write runs (the writer thread is alive for the whole step) against
  steps of the same run while no write runs.
- resume: ``load_tensors`` (the library's safe load: weights only, zip CRCs checked) of the newest
  state file against a bare ``torch.load(weights_only=True)`` of it, medians of alternating loads;
  and, for information, a whole ``Experiment.train`` call that finds the run finished (lock, load,
  check, apply, status).

The ratios are printed against the targets of the issue. The machine is shared by nothing else,
hopefully: the figures of a busy machine mean little.

Usage::

    python scripts/bench_commit.py [--sizes-mb 200 600] [--dir /var/tmp] [--threads 2]
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from experiment import Callback, Experiment  # noqa: E402
from experiment.store.safe_load import load_tensors  # noqa: E402

BATCH = 8
TARGETS = {"async / copy": 1.2, "sync / plain": 1.1, "resume / torch.load": 1.2}
PEAK_TARGET = 0.05  # of the state size, for a synchronous commit
WRITER_THREAD = "experiment-commit-writer"


# ------------------------------------------------------------------------------ measuring tools
class MemorySampler:
    """Samples the resident memory of this process (VmRSS) every millisecond in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with open("/proc/self/status", "rb") as status:
            while not self._stop.wait(0.001):
                status.seek(0)
                for line in status:
                    if line.startswith(b"VmRSS:"):
                        self.samples.append((time.perf_counter(), int(line.split()[1]) * 1024))
                        break

    def peak_extra(self, start: float, end: float) -> int:
        """The highest sample in [start, end] minus the last sample before ``start``."""
        before = [rss for t, rss in self.samples if t <= start][-1:] or [self.samples[0][1]]
        inside = [rss for t, rss in self.samples if start <= t <= end] or before
        return max(inside) - before[0]


class CommitClock(Callback):
    """Stamps each epoch end and the next epoch begin (the commit lies between), and each step."""

    needs_batch_values = False

    def __init__(self, plain_save: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.plain_save = plain_save
        self.plain_saves: list[tuple[float, float]] = []
        self.epoch_ends: list[float] = []
        self.epoch_begins: list[float] = []
        self.steps: list[tuple[float, float, bool]] = []  # begin, end, a write ran all along
        self._step_begin = (0.0, False)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.epoch_begins.append(time.perf_counter())
        if self.plain_save is not None and epoch_number > 1:  # after a commit, outside its window
            started = time.perf_counter()
            self.plain_save()
            self.plain_saves.append((started, time.perf_counter()))

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.epoch_ends.append(time.perf_counter())

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        self._step_begin = (time.perf_counter(), writer_busy())

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        begin, busy = self._step_begin
        self.steps.append((begin, time.perf_counter(), busy and writer_busy()))

    def commits(self) -> list[tuple[float, float]]:
        """(epoch end, next epoch begin) of every commit but the first and the last."""
        return list(zip(self.epoch_ends[1:-1], self.epoch_begins[2:]))


def writer_busy() -> bool:
    return any(thread.name == WRITER_THREAD and thread.is_alive() for thread in threading.enumerate())


def median_time(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tensors_of(tree: Any) -> Iterator[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from tensors_of(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from tensors_of(value)


# ----------------------------------------------------------------------------------- the model
def build(size_mb: float) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """A two-layer MLP whose weights and Adam moments take about ``size_mb`` MB; Adam at lr 0."""
    width = int((size_mb * 1e6 / 4 / 3 / 2) ** 0.5)
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
    return network, torch.optim.Adam(network.parameters(), lr=0.0), width


def state_nbytes(network: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tree = {"model": network.state_dict(), "optimizer": optimizer.state_dict()}
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors_of(tree))


def warm_up(network: nn.Module, optimizer: torch.optim.Optimizer, width: int) -> None:
    """One step, so that the Adam moments exist (the state has its full size)."""
    nn.functional.mse_loss(network(torch.randn(BATCH, width)), torch.randn(BATCH, width)).backward()
    optimizer.step()
    optimizer.zero_grad()


# ---------------------------------------------------------------------------- the measurements
def measure_copy(network: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    tree = {"model": network.state_dict(), "optimizer": optimizer.state_dict()}
    pairs = [(torch.empty_like(tensor), tensor) for tensor in tensors_of(tree)]

    def copy() -> None:
        for buffer, tensor in pairs:
            buffer.copy_(tensor)

    copy()  # the buffers' pages are touched once, as reused buffers are
    return median_time(copy, 9)


def plain_saver(network: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> Callable[[], None]:
    def save() -> None:
        with open(path, "wb") as file:
            torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict()}, file)
            file.flush()
            os.fsync(file.fileno())

    return save


def train_with_commits(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_dir: Path,
    steps: int,
    plain_save: Callable[[], None] | None = None,
    **options: Any,
) -> tuple[CommitClock, Callable[[], Any]]:
    """Six epochs of ``steps`` steps, a commit at each epoch end. Returns the clock's stamps and a
    function that calls train() again (it finds the run finished: a resume that trains nothing)."""
    width = network[0].in_features
    x, y = torch.randn(BATCH * steps, width), torch.randn(BATCH * steps, width)
    clock = CommitClock(plain_save)
    exp = Experiment(run_dir, network, optimizer=optimizer, loss_function="mse", tensorboard=False)
    settings = {"epochs": 6, "batch_size": BATCH, "progress": False, **options}
    exp.train((x, y), callbacks=[clock], **settings)
    return clock, lambda: exp.train((x, y), **settings)


def window_figures(windows: list[tuple[float, float]], sampler: MemorySampler) -> tuple[float, int]:
    """Median seconds of the windows and the highest peak extra memory in one of them."""
    blocked = statistics.median(end - start for start, end in windows)
    return blocked, max(sampler.peak_extra(start, end) for start, end in windows)


def step_figures(clock: CommitClock) -> tuple[float | None, float | None]:
    """Median step seconds with a background write running all along, and with none."""
    during = [end - begin for begin, end, busy in clock.steps if busy]
    without = [end - begin for begin, end, busy in clock.steps[1:] if not busy]
    return (
        statistics.median(during) if during else None,
        statistics.median(without) if without else None,
    )


def measure_resume(run_dir: Path, finish: Callable[[], Any]) -> tuple[float, float, float]:
    """Median seconds of load_tensors and of torch.load of the newest state (alternating), and the
    seconds of ``finish()``, a train() call that finds the run finished."""
    newest = max((run_dir / "checkpoints").glob("state-*.pt"))
    library, bare = [], []
    for _ in range(3):
        library.append(median_time(lambda: load_tensors(newest), 1))
        bare.append(median_time(lambda: torch.load(newest, map_location="cpu", weights_only=True), 1))
    return statistics.median(library), statistics.median(bare), median_time(finish, 1)


# ------------------------------------------------------------------------------ one state size
def bench_size(size_mb: float, folder: Path, steps: int) -> dict[str, Any]:
    network, optimizer, width = build(size_mb)
    warm_up(network, optimizer, width)
    figures: dict[str, Any] = {"state": state_nbytes(network, optimizer), "width": width}
    figures["copy"] = measure_copy(network, optimizer)
    with MemorySampler() as sampler:
        save = plain_saver(network, optimizer, folder / "plain.pt")
        clock, finish = train_with_commits(network, optimizer, folder / "sync", steps, save)
        figures["plain"], figures["plain peak"] = window_figures(clock.plain_saves[1:], sampler)
        figures["sync"], figures["sync peak"] = window_figures(clock.commits(), sampler)
        figures["resume"], figures["torch.load"], figures["whole resume"] = measure_resume(
            folder / "sync", finish
        )
        shutil.rmtree(folder / "sync")
        if "async_checkpoint" not in inspect.signature(Experiment.train).parameters:
            figures["async"] = None  # Experiment.train has no async_checkpoint argument yet
            return figures
        clock, _ = train_with_commits(network, optimizer, folder / "async", steps, async_checkpoint=True)
        figures["async"], figures["async peak"] = window_figures(clock.commits(), sampler)
        figures["step during write"], figures["step"] = step_figures(clock)
        shutil.rmtree(folder / "async")
    return figures


def report(size_mb: float, f: dict[str, Any]) -> None:
    mb, ms = 1e6, 1e3
    print(f"\n== state of {f['state'] / mb:.0f} MB (MLP {f['width']}x{f['width']}x{f['width']}, Adam) ==")
    print(f"copy into reused CPU buffers     {f['copy'] * ms:8.1f} ms")
    print(f"plain torch.save + fsync         {f['plain'] * ms:8.1f} ms   peak +{f['plain peak'] / mb:.1f} MB")
    print(f"library, synchronous commit      {f['sync'] * ms:8.1f} ms   peak +{f['sync peak'] / mb:.1f} MB")
    if f["async"] is None:
        print("library, asynchronous commit     skipped: Experiment.train has no async_checkpoint argument")
    else:
        print(
            f"library, asynchronous commit     {f['async'] * ms:8.1f} ms   peak +{f['async peak'] / mb:.1f} MB"
        )
        during, without = f["step during write"], f["step"]
        if during is not None and without is not None:
            print(
                f"training step                    {without * ms:8.1f} ms   while a background write "
                f"runs {during * ms:.1f} ms ({during / without:.2f}x)"
            )
    print(
        f"resume: load_tensors             {f['resume'] * ms:8.1f} ms   bare torch.load {f['torch.load'] * ms:.1f} ms"
    )
    print(
        f"resume: whole train() call       {f['whole resume'] * ms:8.1f} ms   (lock, load, check, apply, status)"
    )
    ratios = {"sync / plain": f["sync"] / f["plain"], "resume / torch.load": f["resume"] / f["torch.load"]}
    if f["async"] is not None:
        ratios["async / copy"] = f["async"] / f["copy"]
    for name, ratio in ratios.items():
        verdict = "ok" if ratio <= TARGETS[name] else "MISSED"
        print(f"  {name:22s} {ratio:6.2f}   target <= {TARGETS[name]}   {verdict}")
    share = f["sync peak"] / f["state"]
    print(
        f"  {'sync peak / state':22s} {share:6.1%}   target <= {PEAK_TARGET:.0%}   {'ok' if share <= PEAK_TARGET else 'MISSED'}"
    )


def file_system_of(folder: Path) -> str:
    """The type of the file system that holds ``folder`` (from /proc/mounts; "?" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    best = max((m for m in mounts if str(folder).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    return best[2] if best else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[200, 600], help="state sizes")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (default: by size)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-commit-", dir=args.dir))
    kind = file_system_of(folder.resolve())
    print(f"writing in {folder} ({kind}); torch {torch.__version__}, {args.threads} thread(s)")
    if kind in ("tmpfs", "ramfs"):
        print("warning: a file system in memory: fsync costs nothing there; pass --dir on a disk")
    try:
        for size_mb in args.sizes_mb:
            # An epoch must outlast a background write (about 1 s per 400 MB here), or the next
            # commit waits for it and the asynchronous figure measures the disk, not the copy.
            steps = args.steps or max(6, int(size_mb / 40))
            report(size_mb, bench_size(size_mb, folder, steps))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
