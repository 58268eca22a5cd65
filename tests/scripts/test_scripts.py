"""Every script in scripts/ runs: ``--help``, and a tiny real run where the script has one.

Each script runs as a real subprocess (``python scripts/NAME.py ...``, as the README shows), with
sizes small enough for CI passed through its own options; the assertions read what it prints or
writes, never its timings. The processes spend most of their time importing torch, so the module
starts those its selected tests need all at once, as many running at a time as the machine has
cores, and each test waits for its own. A new script needs an entry in ``TINY_RUNS`` and a test
named ``test_<its name>_...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from experiment.store import tsv
from tests.support.cli import REPO_ROOT
from tests.support.torchrun import torchrun_env

SCRIPTS_DIR = REPO_ROOT / "scripts"
SCRIPTS = sorted(path.name for path in SCRIPTS_DIR.glob("*.py"))
TIMEOUT = 240.0

#: The tiny run of each script, the longest first (they start in this order): its arguments, where
#: ``{dir}`` is a fresh folder of its own (also its working directory), and its environment.
TINY_RUNS: dict[str, tuple[list[str], dict[str, str]]] = {
    "kill_stress.py": (
        # Seed 0 plans its first kill after 14 steps: within the single epoch of 30.
        ["--kills", "1", "--seed", "0", "--configs", "1", "--epochs", "1", "--workdir", "{dir}"],
        {},
    ),
    "bench_ddp.py": (["--nproc", "2", "--epochs", "1", "--repeats", "1", "--workdir", "{dir}"], {}),
    "bench_elastic.py": (
        ["--nproc", "2", "--epochs", "1", "--repeats", "1", "--groups", "1", "--workdir", "{dir}"],
        {},
    ),
    "bench_fsdp.py": (
        ["--size-mb", "0.5", "--epochs", "2", "--steps", "4", "--checkpoint-every", "2", "--repeats", "1"]
        + ["--workdir", "{dir}"],
        {},
    ),
    "gpu_check_fsdp.py": (["--device", "cpu", "--out", "{dir}/out.json"], {}),
    "bench_overhead.py": (["--epochs", "1", "--repeats", "1", "--workdir", "{dir}"], {}),
    "train_digits.py": (["{dir}/digits", "--epochs", "1"], {}),
    "bench_ls.py": (["--runs", "4", "--repeats", "1", "--keep", "{dir}/runs"], {}),
    "bench_commit.py": (
        ["--sizes-mb", "1", "--steps", "2", "--repeats", "1", "--threads", "1", "--dir", "{dir}"],
        {},
    ),
    "gpu_check.py": (["--out", "{dir}/out.json"], {"CUDA_VISIBLE_DEVICES": ""}),
}

#: ``scripts/NAME.py`` and the text after it on the same line, up to a comment, a closing backtick or
#: a table cell's end: the command lines that the README and the scripts' docstrings cite.
CITED_COMMAND = re.compile(r"scripts/(\w+\.py)([^`#|\n]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@dataclass
class Finished:
    """What a script's process left: its exit code, both outputs, and the folder it ran in."""

    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    def describe(self, tail: int = 4000) -> str:
        """The exit code and the end of both outputs, for an assertion message."""
        return (
            f"exited with {self.returncode}\n--- stdout (end) ---\n{self.stdout[-tail:]}\n"
            f"--- stderr (end) ---\n{self.stderr[-tail:]}"
        )

    def succeeded(self) -> Finished:
        """Itself, once checked that the script exited with 0."""
        assert self.returncode == 0, self.describe()
        return self


class ScriptRuns:
    """Script processes run in the background, ``workers`` at a time, each in a session of its own
    (whatever it starts dies with it); :meth:`result` waits for one of them."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="script-run")
        self._runs: dict[tuple[str, str], Future[Finished]] = {}
        self._running: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, name: str, args: list[str], env: dict[str, str], *, kind: str) -> None:
        workdir = self.root / kind / name.removesuffix(".py")
        self._runs[kind, name] = self._pool.submit(self._run, name, args, env, workdir)

    def result(self, name: str, *, kind: str) -> Finished:
        return self._runs[kind, name].result()

    def close(self) -> None:
        """Cancel what has not started and kill what still runs (an interrupted session)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._closed = True
            for process in self._running:
                with contextlib.suppress(ProcessLookupError):  # it ended: nothing left to kill
                    os.killpg(process.pid, signal.SIGKILL)
        self._pool.shutdown(wait=True)

    def _run(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> Finished:
        workdir.mkdir(parents=True)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{name} was not started: the module's runs were closed")
            process = subprocess.Popen(
                [sys.executable, str(SCRIPTS_DIR / name), *(arg.format(dir=workdir) for arg in args)],
                cwd=workdir,
                env=torchrun_env(**env),  # the repository importable, one thread, no torchrun variables
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self._running.add(process)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\n[killed by the test: it ran past {TIMEOUT} s]"
        finally:
            with self._lock:
                self._running.discard(process)
        return Finished(process.returncode, stdout, stderr, workdir)


def needed_runs(items: Iterable[pytest.Item]) -> list[tuple[str, str]]:
    """The (kind, script) runs that the selected tests of this module read: the ``--help`` of the
    script a parametrized test names, the tiny run of the script a test is named after."""
    needed = set()
    for item in items:
        if not isinstance(item, pytest.Function) or item.path != Path(__file__):
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            needed.add(("help", callspec.params["name"]))
        needed |= {("run", name) for name in TINY_RUNS if item.originalname.startswith(f"test_{name[:-3]}_")}
    order = list(TINY_RUNS)
    return sorted(needed, key=lambda run: (run[0] == "help", order.index(run[1]) if run[1] in order else 0))


@pytest.fixture(scope="module")
def script_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScriptRuns]:
    runs = ScriptRuns(tmp_path_factory.mktemp("scripts"), workers=os.cpu_count() or 2)
    for kind, name in needed_runs(request.session.items):
        args, env = TINY_RUNS[name] if kind == "run" else (["--help"], {})
        runs.start(name, args, env, kind=kind)
    yield runs
    runs.close()


def status_of(run_dir: Path) -> str:
    return json.loads((run_dir / "experiment.json").read_text())["status"]


# ------------------------------------------------------------------------------------ every script
@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_the_usage(script_runs: ScriptRuns, name: str) -> None:
    page = script_runs.result(name, kind="help").succeeded()
    assert page.stdout.startswith(f"usage: {name}"), page.describe()
    assert "-h, --help" in page.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_knows_every_option_the_readme_and_the_docstring_cite(
    script_runs: ScriptRuns, name: str
) -> None:
    texts = {"README.md": (REPO_ROOT / "README.md").read_text(encoding="utf-8")}
    texts[f"scripts/{name}"] = (SCRIPTS_DIR / name).read_text(encoding="utf-8")
    cited = {
        (where, option)
        for where, text in texts.items()
        for script, rest in CITED_COMMAND.findall(text)
        if script == name
        for option in OPTION.findall(rest)
    }
    known = set(OPTION.findall(script_runs.result(name, kind="help").succeeded().stdout))
    assert sorted(f"{where}: {option}" for where, option in cited if option not in known) == []


def test_every_script_has_a_tiny_run_and_a_test_of_it() -> None:
    tests = [name for name in globals() if name.startswith("test_")]
    assert sorted(TINY_RUNS) == SCRIPTS
    assert [name for name in SCRIPTS if not any(t.startswith(f"test_{name[:-3]}_") for t in tests)] == []


# ------------------------------------------------------------------------------- one tiny run each
def test_bench_commit_prints_its_ratios(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_commit.py", kind="run").succeeded()
    assert "== state of 1 MB (MLP" in result.stdout
    for ratio in ("sync / plain new file", "resume / torch.load", "async / copy", "sync peak / state"):
        assert re.search(rf"^  {re.escape(ratio)} +\d+\.\d+%? +target <= ", result.stdout, re.M), ratio
    assert list(result.workdir.iterdir()) == []  # its runs and plain files removed


def test_bench_overhead_prints_a_ratio_per_variant_and_measure(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_overhead.py", kind="run").succeeded()
    assert "1 epochs of 57 steps (batch 32) per run, 1 runs each" in result.stdout
    for variant in ("loss only:", "with accuracy:", "with f1:"):
        assert f"\n{variant}\n" in result.stdout
    assert len(re.findall(r"us/step  ratio \d+\.\d{3}$", result.stdout, re.M)) == 3 * 4
    assert result.stdout.count("per epoch outside the steps") == 3
    assert status_of(result.workdir / "run") == "finished"
    assert (result.workdir / "plain.pt").is_file()


@pytest.mark.slow
def test_bench_ddp_launches_torchrun_and_prints_its_ratios(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_ddp.py", kind="run").succeeded()
    assert "2 ranks (gloo) of 1 thread; 1 epochs of ~29 steps" in result.stdout, result.describe()
    assert len(re.findall(r"us/step  ratio \d+\.\d{3}$", result.stdout, re.M)) == 2 * 4
    assert status_of(result.workdir / "run") == "finished"
    assert (result.workdir / "plain.pt").is_file()


def test_bench_elastic_launches_torchrun_and_prints_its_ratios(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_elastic.py", kind="run").succeeded()
    assert "2 ranks (gloo) of 1 thread; 64-128-10 MLP, 1 epochs (batch 32 per rank) per run, 1 runs each" in (
        result.stdout
    )
    sides = re.findall(r"^  (\S+(?: \S+)*)  +\d+\.\d us/step  ratio \d+\.\d{3}$", result.stdout, re.M)
    assert sides == ["DDP", "elastic", "exact, 1 group(s) per rank (32 samples)"], result.describe()
    assert status_of(result.workdir / "run") == "finished"


@pytest.mark.slow
def test_bench_fsdp_launches_torchrun_and_prints_its_ratios(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_fsdp.py", kind="run").succeeded()
    assert "2 ranks (gloo) of 1 thread; state 0.5 MB (width 144" in result.stdout, result.describe()
    assert "2 epochs of 4 steps (batch 32 per rank), a commit every 2 steps" in result.stdout
    ratios = re.findall(
        r"^  (\S+(?: \S+)*)  +\S.* ms  ratio \d+\.\d{3}  \(target <= \d\.\d\d\)$", result.stdout, re.M
    )
    assert ratios == ["step", "synchronous commit", "asynchronous stall", "resume"], result.stdout
    for run in ("sync", "async"):
        assert status_of(result.workdir / run) == "finished"
    assert not (result.workdir / "plain").exists()


def test_bench_ls_lists_the_runs_it_builds(script_runs: ScriptRuns) -> None:
    result = script_runs.result("bench_ls.py", kind="run").succeeded()
    root = result.workdir / "runs"
    assert f"4 runs under {root}:" in result.stdout
    assert len(re.findall(r"median +\d+\.\d ms +min +\d+\.\d ms$", result.stdout, re.M)) == 6
    assert len(list(root.rglob("experiment.json"))) == 4
    assert [status_of(root / "real" / f"run-{i}") for i in range(3)] == ["finished"] * 3


def test_gpu_check_without_cuda_says_nothing_was_checked(script_runs: ScriptRuns) -> None:
    result = script_runs.result("gpu_check.py", kind="run").succeeded()
    assert json.loads(result.stdout) == {"cuda": False}
    assert "no CUDA device is available" in result.stderr
    assert "nothing was checked; run it on a machine with a CUDA GPU" in result.stderr
    assert not (result.workdir / "out.json").exists()


@pytest.mark.slow
def test_gpu_check_fsdp_on_the_cpu_resumes_two_gloo_ranks_bit_identically(script_runs: ScriptRuns) -> None:
    result = script_runs.result("gpu_check_fsdp.py", kind="run").succeeded()
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["ranks"] == 2 and summary["device"] == "cpu", result.describe()
    assert summary["resume_identical_sync"] is True and summary["resume_identical_async"] is True, summary
    assert json.loads((result.workdir / "out.json").read_text()) == summary


@pytest.mark.slow
def test_kill_stress_kills_resumes_and_ends_identical(script_runs: ScriptRuns) -> None:
    result = script_runs.result("kill_stress.py", kind="run").succeeded()
    assert re.findall(r"^reference (\d+) Config\(epochs=(\d+),", result.stdout, re.M) == [("0", "1")]
    assert "\nkills made: 1\n" in result.stdout
    assert "\nresumes: 1\n" in result.stdout
    assert "\nruns ended identical: 1 of 1\n" in result.stdout
    assert "\ntemporary files left behind by killed writers: 0" in result.stdout


def test_train_digits_trains_and_tests_a_run(script_runs: ScriptRuns) -> None:
    result = script_runs.result("train_digits.py", kind="run").succeeded()
    run_dir = result.workdir / "digits"
    assert status_of(run_dir) == "finished"
    assert [row["epoch"] for row in tsv.read_rows(run_dir / "log.tsv")] == ["1"]
    assert re.search(r"\{'test_loss': [\d.]+, 'test_acc': [\d.]+, 'test_f1': [\d.]+\}$", result.stdout, re.M)
