"""How long a commit blocks training, what memory it takes, and how long a resume loads, for big states.

For each state size (a wide two-layer MLP with Adam, on CPU: the state is the weights and the two
Adam moments, about 200 MB and 600 MB by default), on a temporary folder of a real disk:

- copy: ``copy_`` of every tensor of the state into CPU buffers allocated beforehand, the part of an
  asynchronous commit that must block training.
- sync: ``Experiment.train`` with ``async_checkpoint=False``, six epochs of a few steps, a commit
  per epoch. A callback stamps ``on_epoch_end`` (the last hook before the commit) and the next
  ``on_epoch_begin``: the time between is everything training waits for at an epoch end (the
  commit: finiteness check of every tensor, log row, ``torch.save`` into a temporary file, fsync,
  rename, fsync of the folder). The superseded state file is removed by the library's writer
  thread, outside that window. The first commit and the last (which has no next epoch) are left
  out; the median of the others is shown. The learning rate is 0, so that the monitored loss
  improves only once: later commits write the state alone, not best weights too.
- plain, new file: the loop one writes by hand, with the same model, optimizer, batches and
  epochs: at each epoch end ``torch.save`` of ``{"model": ..., "optimizer": ...}`` state dicts into
  a new file (``ckpt-NNNNNN.pt``), flush and fsync; then a thread removes the file of two saves
  before, as the library's writer thread does (two states kept; the memory the removal frees comes
  back at the same moment of the epoch as in the library's run). The figure is the save and the
  fsync, median over the same epochs as sync; the removal (what a loop that removes inline would
  wait for too) is shown apart. This is the reference of the target: what a loop that keeps its
  previous checkpoint, as an atomic commit must, waits for.
- plain, one file overwritten: the same loop saving into one file each time (``open(path, "wb")``,
  save, fsync), for information. It is faster here for a reason outside the file format: its
  truncation frees the page-cache memory of the previous save just before the new save fills as
  much, so the writes land in memory the machine has just used, whereas a new file (the library's
  or the hand-written one) takes memory that has been free for seconds. The CI machine is a
  virtual machine whose hypervisor takes back the memory the guest leaves free (``virtio_balloon``
  free page reporting); filling such memory again costs about 2 ms per MB (``perf``: 82 % of a
  save's time in ``copy_folio_from_iter_atomic``, the copy into page-cache pages; 600 MB of raw
  1 MB writes take 1.3 s into a new file, 0.2 s into a truncated one, 0.36 s into a new file right
  after another cached 600 MB file is removed). On a machine whose free memory stays mapped, the
  two plain figures should be close. An atomic commit cannot overwrite the file that holds the
  last good state.
- The three runs (sync, plain new file, plain overwritten) alternate ``--repeats`` times, in an
  order that rotates from one repetition to the next, each run removing its files at its end; each
  figure pools the saves of its runs. Single saves vary by 2-4x here (the disk's write-back, and
  whether the memory they fill is still mapped), and the ratio of two pooled medians by about
  +-20 % from one invocation to the next on a machine that runs other work: more repetitions
  narrow it.
- async: as sync with ``async_checkpoint=True``: the window is the wait for the previous write, if it
  is still running, and the copy.
- peak memory: a thread samples VmRSS every millisecond; the figure is the highest sample during a
  commit (or a plain save) minus the sample just before it (page cache is not resident memory of the
  process).
- step time while a background write runs (the writer thread is alive for the whole step) against
  steps of the same run while no write runs.
- resume: at the end of each sync run, ``load_tensors`` (the library's safe load: weights only,
  zip CRCs checked) of the newest state file against a bare ``torch.load(weights_only=True)`` of
  it, medians of alternating loads; and, for information, a whole ``Experiment.train`` call that
  finds the run finished (lock, load, check, apply, status).

The ratios are printed against the targets of the issue. The machine is shared by nothing else,
hopefully: the figures of a busy machine mean little.

Usage::

    python scripts/bench_commit.py [--sizes-mb 200 600] [--dir /var/tmp] [--threads 2] [--repeats 2]
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
EPOCHS = 6
TARGETS = {"async / copy": 1.2, "sync / plain new file": 1.1, "resume / torch.load": 1.2}
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

    def __init__(self) -> None:
        super().__init__()
        self.epoch_ends: list[float] = []
        self.epoch_begins: list[float] = []
        self.steps: list[tuple[float, float, bool]] = []  # begin, end, a write ran all along
        self._step_begin = (0.0, False)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.epoch_begins.append(time.perf_counter())

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


def plain_save(network: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """What a hand-written loop does: ``torch.save`` of the state dicts into ``path``, then fsync."""
    with open(path, "wb") as file:
        torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict()}, file)
        file.flush()
        os.fsync(file.fileno())


def plain_loop(
    network: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, steps: int, *, new_files: bool
) -> tuple[list[tuple[float, float]], list[float]]:
    """A hand-written loop of the sync run's rhythm: ``EPOCHS`` epochs of ``steps`` steps, a plain
    save at each epoch end, into a new file or into one file. With new files, the file of two saves
    before is removed in a thread started right after the save, as the library's writer thread
    does (so that the memory it frees comes back at the same moment of the epoch). Returns the
    (start, end) of the saves of the epochs that sync measures, and the seconds of each removal."""
    width = network[0].in_features
    x, y = torch.randn(BATCH * steps, width), torch.randn(BATCH * steps, width)
    folder.mkdir()
    saves: list[tuple[float, float]] = []
    removals: list[float] = []
    kept: list[Path] = []
    remover: threading.Thread | None = None

    def remove(path: Path) -> None:
        started = time.perf_counter()
        path.unlink()
        removals.append(time.perf_counter() - started)

    for epoch in range(1, EPOCHS + 1):
        for step in range(steps):
            batch = slice(step * BATCH, (step + 1) * BATCH)
            optimizer.zero_grad()
            nn.functional.mse_loss(network(x[batch]), y[batch]).backward()
            optimizer.step()
        path = folder / (f"ckpt-{epoch:06d}.pt" if new_files else "plain.pt")
        started = time.perf_counter()
        if remover is not None:  # as a commit waits for the writer thread's previous work
            remover.join()
        plain_save(network, optimizer, path)
        saves.append((started, time.perf_counter()))
        kept.append(path)
        if new_files and len(kept) > 2:
            remover = threading.Thread(target=remove, args=(kept.pop(0),))
            remover.start()
    if remover is not None:
        remover.join()
    shutil.rmtree(folder)
    return saves[1:-1], removals


def train_with_commits(
    network: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path, steps: int, **options: Any
) -> tuple[CommitClock, Callable[[], Any]]:
    """``EPOCHS`` epochs of ``steps`` steps, a commit at each epoch end. Returns the clock's stamps
    and a function that calls train() again (it finds the run finished: a resume that trains
    nothing)."""
    width = network[0].in_features
    x, y = torch.randn(BATCH * steps, width), torch.randn(BATCH * steps, width)
    clock = CommitClock()
    exp = Experiment(run_dir, network, optimizer=optimizer, loss_function="mse", tensorboard=False)
    settings = {"epochs": EPOCHS, "batch_size": BATCH, "progress": False, **options}
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


def measure_resume(run_dir: Path, finish: Callable[[], Any]) -> dict[str, list[float]]:
    """Seconds of load_tensors and of torch.load of the newest state (alternating loads), and of
    ``finish()``, a train() call that finds the run finished."""
    newest = max((run_dir / "checkpoints").glob("state-*.pt"))
    samples: dict[str, list[float]] = {"resume": [], "torch.load": []}
    for _ in range(3):
        samples["resume"].append(median_time(lambda: load_tensors(newest), 1))
        samples["torch.load"].append(
            median_time(lambda: torch.load(newest, map_location="cpu", weights_only=True), 1)
        )
    samples["whole resume"] = [median_time(finish, 1)]
    return samples


# ------------------------------------------------------------------------------ one state size
def alternate_runs(
    network: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, steps: int, repeats: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]]]:
    """The sync run and the two plain loops, ``repeats`` times in a rotating order; each run
    removes its files at its end. Returns the windows of each kind and the other samples (the
    plain loop's removals, the resume figures of each sync run)."""
    windows: dict[str, list[tuple[float, float]]] = {"sync": [], "plain new": [], "plain overwrite": []}
    samples: dict[str, list[float]] = {"removal": [], "resume": [], "torch.load": [], "whole resume": []}

    def sync() -> None:
        clock, finish = train_with_commits(network, optimizer, folder / "sync", steps)
        windows["sync"] += clock.commits()
        for name, values in measure_resume(folder / "sync", finish).items():
            samples[name] += values
        shutil.rmtree(folder / "sync")

    def plain_new() -> None:
        saves, removals = plain_loop(network, optimizer, folder / "plain", steps, new_files=True)
        windows["plain new"] += saves
        samples["removal"] += removals

    def plain_overwrite() -> None:
        windows["plain overwrite"] += plain_loop(
            network, optimizer, folder / "plain", steps, new_files=False
        )[0]

    runs = [sync, plain_new, plain_overwrite]
    for repeat in range(repeats):  # so that the disk's moods and the order's effects fall on all three
        for run in runs[repeat % 3 :] + runs[: repeat % 3]:
            run()
    return windows, samples


def bench_size(size_mb: float, folder: Path, steps: int, repeats: int) -> dict[str, Any]:
    network, optimizer, width = build(size_mb)
    warm_up(network, optimizer, width)
    figures: dict[str, Any] = {"state": state_nbytes(network, optimizer), "width": width}
    figures["copy"] = measure_copy(network, optimizer)
    with MemorySampler() as sampler:
        windows, samples = alternate_runs(network, optimizer, folder, steps, repeats)
        for name, spans in windows.items():
            figures[name], figures[f"{name} peak"] = window_figures(spans, sampler)
        figures.update({name: statistics.median(values) for name, values in samples.items()})
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
    print(
        f"plain save + fsync, new file     {f['plain new'] * ms:8.1f} ms   peak +{f['plain new peak'] / mb:.1f} MB"
        f"   (then removing the file of two saves before: {f['removal'] * ms:.1f} ms)"
    )
    print(
        f"plain save + fsync, overwritten  {f['plain overwrite'] * ms:8.1f} ms   "
        f"peak +{f['plain overwrite peak'] / mb:.1f} MB"
    )
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
    ratios = {
        "sync / plain new file": f["sync"] / f["plain new"],
        "resume / torch.load": f["resume"] / f["torch.load"],
    }
    if f["async"] is not None:
        ratios["async / copy"] = f["async"] / f["copy"]
    for name, ratio in ratios.items():
        verdict = "ok" if ratio <= TARGETS[name] else "MISSED"
        print(f"  {name:22s} {ratio:6.2f}   target <= {TARGETS[name]}   {verdict}")
    overwrite = f["sync"] / f["plain overwrite"]
    print(f"  {'sync / plain overwrite':22s} {overwrite:6.2f}   (for information: see the docstring)")
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
    parser.add_argument("--repeats", type=int, default=2, help="alternations of sync and plain runs")
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
            report(size_mb, bench_size(size_mb, folder, steps, args.repeats))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
