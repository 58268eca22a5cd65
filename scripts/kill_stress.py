"""Kill real training processes with SIGKILL, resume them until they finish, check bit-identity.

Each round trains a small MLP (dropout, SGD with momentum, StepLR, a shuffling DataLoader) in a fresh
run directory, in a child process that is killed with ``kill -9`` at random moments and started again
until it finishes on its own. Some kills are aimed at checkpoint writes: the harness polls the
``checkpoints/`` folder for the temporary files of ``experiment.store.files.atomic_writer`` and kills as
soon as one appears (the child slows its own fsync down a little so that the window can be caught).
The finished run must equal an uninterrupted one: every state checkpoint (weights, optimizer,
schedulers, callbacks, loop position, random state) and the best weights bit for bit, log.tsv in
every column but ``time``, and each TensorBoard scalar exactly once per epoch with the same value.

With ``--async`` the killed runs train with ``async_checkpoint=True``: a background thread writes
each commit while training goes on, every fsync of the child is slowed so that random kills also
land while a write is in flight, and those kills are counted apart. The references stay
synchronous, so an asynchronous run must end exactly as a synchronous uninterrupted one.

Usage::

    python scripts/kill_stress.py --kills 50 --seed 0 --workdir /tmp/kill-stress
    python scripts/kill_stress.py --kills 30 --seed 7 --async

The harness lives in tests/support (kill_child.py, kill.py, run_comparison.py), which
tests/run/test_kill.py uses for its smaller version of the same check; this script keeps the loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.support

from tests.support.kill import (  # noqa: E402
    STEPS_PER_EPOCH,
    Config,
    RunReport,
    kill_plan,
    run_uninterrupted,
    train_with_kills,
    write_training_script,
)
from tests.support.run_comparison import run_differences  # noqa: E402

#: The configurations the rounds cycle through: step checkpoints, epoch checkpoints only, and step
#: checkpoints that do not divide the epoch, the last two with a seeded loader generator.
CONFIGS = (
    Config(checkpoint_every=4),
    Config(checkpoint_every=None, loader_generator=True),
    Config(checkpoint_every=7, loader_generator=True),
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to make in all (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan (default 0)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where runs go (default: a temporary folder)"
    )
    parser.add_argument(
        "--kills-per-run", type=int, default=6, help="kills before a run may finish (default 6)"
    )
    parser.add_argument("--write-share", type=float, default=0.4, help="share of kills aimed at writes (0.4)")
    parser.add_argument(
        "--startup-share", type=float, default=0.1, help="share of kills in the first 0.3 s of a launch (0.1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directories that ended identical")
    parser.add_argument(
        "--configs",
        type=int,
        choices=range(1, len(CONFIGS) + 1),
        default=len(CONFIGS),
        metavar=f"{{1..{len(CONFIGS)}}}",
        help=f"how many of the {len(CONFIGS)} configurations the rounds cycle through (default all)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every run (default 5)")
    parser.add_argument(
        "--async",
        dest="async_checkpoint",
        action="store_true",
        help="train the killed runs with async_checkpoint=True (background writes)",
    )
    return parser.parse_args(argv)


def train_references(script: Path, workdir: Path, configs: list[Config]) -> list[Path]:
    """One uninterrupted run per configuration."""
    references = []
    for index, config in enumerate(configs):
        references.append(workdir / f"reference-{index}")
        shutil.rmtree(references[index], ignore_errors=True)
        seconds = run_uninterrupted(script, references[index], config)
        print(f"reference {index} {config}: {seconds:.2f} s from READY to exit", flush=True)
    return references


def stress_round(
    args: argparse.Namespace, rng: random.Random, script: Path, number: int, budget: int
) -> tuple[RunReport, list[str]]:
    """Train run ``number`` with up to ``budget`` kills; return its report and its differences."""
    configs = chosen_configs(args)
    index = number % len(configs)
    config = dataclasses.replace(configs[index], async_checkpoint=args.async_checkpoint)
    run_dir = args.workdir / f"run-{number:03d}"
    shutil.rmtree(run_dir, ignore_errors=True)
    plan = kill_plan(
        rng,
        budget,
        write_share=args.write_share,
        max_steps_ahead=STEPS_PER_EPOCH,
        startup_share=args.startup_share,
    )
    report = train_with_kills(script, run_dir, config, plan)
    problems = run_differences(args.workdir / f"reference-{index}", run_dir, config.epochs)
    background = (
        f", {report.kills_during_background_write} during a background write" if args.async_checkpoint else ""
    )
    print(
        f"run {number:3d} config {index}: {report.kills} kills ({report.kills_during_write} "
        f"mid-write{background}, at steps {report.kill_steps}), {report.resumes} resumes, "
        f"{report.seconds:.1f} s, {'identical' if not problems else 'DIFFERENT'}",
        flush=True,
    )
    for problem in problems[:10]:
        print(f"    {problem}", flush=True)
    if not problems and not args.keep:
        shutil.rmtree(run_dir)
    return report, problems


def chosen_configs(args: argparse.Namespace) -> list[Config]:
    """The first ``--configs`` configurations, trained for ``--epochs`` epochs."""
    return [dataclasses.replace(config, epochs=args.epochs) for config in CONFIGS[: args.configs]]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    args.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="kill-stress-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    script = write_training_script(args.workdir)
    train_references(script, args.workdir, chosen_configs(args))
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    while totals["kills"] < args.kills:
        budget = min(args.kills_per_run, args.kills - totals["kills"])
        report, problems = stress_round(args, rng, script, totals["runs"], budget)
        totals.update(
            kills=report.kills,
            during_write=report.kills_during_write,
            during_background_write=report.kills_during_background_write,
            resumes=report.resumes,
            startup=report.kills_before_first_step,
            runs=1,
            identical=int(not problems),
            leftover=report.leftover_temporaries,
        )
        kinds.update(report.write_kinds)
    background = (
        f"  landed while a background write was in flight: {totals['during_background_write']}\n"
        if args.async_checkpoint
        else ""
    )
    print(
        f"\nkills made: {totals['kills']}{' (asynchronous commits)' if args.async_checkpoint else ''}\n"
        f"  during checkpoint writes: {totals['during_write']} {dict(kinds)}\n"
        f"{background}"
        f"  before a launch's first step (start-up, restore): {totals['startup']}\n"
        f"resumes: {totals['resumes']}\n"
        f"runs ended identical: {totals['identical']} of {totals['runs']}\n"
        f"temporary files left behind by killed writers: {totals['leftover']}"
    )
    return 0 if totals["identical"] == totals["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
