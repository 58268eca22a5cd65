"""Elastic runs resumed on other numbers of processes: ``elastic=True`` 2 → 1 → 3 and 3 → 2;
``elastic="exact"`` 2 → 1, 2 → 3, 1 → 2 and uninterrupted on 1, 2 and 3.

Three torchrun launches (2, 3 and 2 ranks) and a few single-process phases here train the runs;
every phase records, per rank, the sample indices of each optimizer step (the inputs carry their
index). With ``elastic=True`` the union over the ranks of each step must be exactly the global batch
of the uninterrupted single-process run, the losses in log.tsv and the final weights close to it (the
same run up to floating-point summation order), and every change of world size warned about and
recorded. With ``elastic="exact"`` (and Dropout) the final weights must be bit-identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment.inspection.summary import summarize
from tests.distributed.elastic_workload import joined_steps, read_phase, run_phase
from tests.support.scenario_launch import ScenarioLaunch, launch_scenarios

SCRIPT = Path(__file__).with_name("elastic_scenarios.py")
SAMPLES = 45
EPOCHS = 3
#: log.tsv losses and final weights of a resumed run against the uninterrupted one: differences in
#: the order of floating-point sums only (measured about 1e-8 here).
TOLERANCE = 1e-5
#: Exact runs: a global batch of 12 samples (4 per pass) in 6 groups, stopped at step 7 (the last
#: commit, every 2 steps, at step 6: mid-epoch).
EXACT_EPOCHS = 2
GROUPS = 6


@dataclass
class ElasticRuns:
    workdir: Path
    launches: list[ScenarioLaunch]
    single: dict[str, dict[str, Any]]  # phases run in this process, by name

    def phases(self, name: str, worlds: list[int]) -> list[list[dict[str, Any]]]:
        """The per-rank records of run ``name``, phase by phase (``worlds``: each phase's size)."""
        phases = []
        for world in worlds:
            if world == 1:
                phases.append([self.single[name]])
            else:
                records = self.workdir / "records"
                phases.append([read_phase(records / f"{name}-w{world}-rank{r}.json") for r in range(world)])
        return phases

    def describe(self) -> str:
        return "\n".join(launch.describe() for launch in self.launches)


def _single(
    workdir: Path, name: str, *, batch_size: int, stop_at: int, exact: bool = False, accumulate: int = 1
) -> dict[str, Any]:
    if exact:
        return run_phase(
            workdir / name,
            samples=SAMPLES,
            batch_size=batch_size,
            epochs=EXACT_EPOCHS,
            stop_at=stop_at,
            elastic="exact",
            groups=GROUPS,
            accumulate=accumulate,
        )
    return run_phase(workdir / name, samples=SAMPLES, batch_size=batch_size, epochs=EPOCHS, stop_at=stop_at)


def _exact(name: str, batch_size: int, stop: int, accumulate: int = 1) -> str:
    """An exact phase's spec: a global batch of 12 in 6 groups (batch_size 12, 6 or 4 per process)."""
    return f"{name}:{SAMPLES}:{batch_size}:{EXACT_EPOCHS}:{stop}:exact={GROUPS}:acc={accumulate}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> ElasticRuns:
    workdir = tmp_path_factory.mktemp("elastic")
    single: dict[str, dict[str, Any]] = {}
    # The uninterrupted runs, in one process: global batches of 8 (A) and 9 (B).
    single["ref8"] = _single(workdir, "ref8", batch_size=8, stop_at=0)
    single["ref9"] = _single(workdir, "ref9", batch_size=9, stop_at=0)
    # C: a global batch of 2, created here, which 3 processes cannot serve.
    single["C"] = _single(workdir, "C", batch_size=2, stop_at=1)
    # Exact: U1 uninterrupted; Z created here, then resumed on 2.
    single["U1"] = _single(workdir, "U1", batch_size=12, stop_at=0, exact=True)
    single["Z"] = _single(workdir, "Z", batch_size=12, stop_at=7, exact=True)
    # V: 2 global batches per optimizer step, uninterrupted here; created on 2, resumed on 3.
    single["V1"] = _single(workdir, "V1", batch_size=12, stop_at=0, exact=True, accumulate=2)
    first = [f"A:{SAMPLES}:4:{EPOCHS}:5", _exact("U2", 6, 0), _exact("X", 6, 7), _exact("Y", 6, 7)]
    first.append(_exact("V", 6, 3, accumulate=2))
    # S: elastic, stopped and resumed on the same 2 processes, against Sref uninterrupted on 2.
    first += [f"S:{SAMPLES}:4:{EPOCHS}:5", f"Sref:{SAMPLES}:4:{EPOCHS}:0"]
    # D: a DataLoader, epochs of 9 steps over passes of 6 batches; created on 2, resumed on 3 from
    # step 8 (inside the second pass of epoch 1).
    single["Dref"] = run_phase(
        workdir / "Dref", samples=SAMPLES, batch_size=8, epochs=2, stop_at=0, loader=True, steps_per_epoch=9
    )
    first.append(f"D:{SAMPLES}:4:2:9:loader=1:spe=9")
    # F: FSDP2, created on 2 (a global batch of 8, as ref8), resumed on 3: DCP reshards.
    first.append(f"F:{SAMPLES}:4:{EPOCHS}:5:fsdp=1")
    launches = [launch_scenarios(SCRIPT, workdir, *first, nproc=2, timeout=180)]
    single["A"] = _single(workdir, "A", batch_size=4, stop_at=10)
    single["X"] = _single(workdir, "X", batch_size=12, stop_at=0, exact=True)
    launches.append(
        launch_scenarios(
            SCRIPT,
            workdir,
            f"A:{SAMPLES}:4:{EPOCHS}:0",
            f"B:{SAMPLES}:3:{EPOCHS}:7",
            f"C:{SAMPLES}:2:{EPOCHS}:0",
            _exact("U3", 4, 0),
            _exact("Y", 4, 0),
            _exact("V", 4, 0, accumulate=2),
            f"D:{SAMPLES}:4:2:0:loader=1:spe=9",
            f"F:{SAMPLES}:4:{EPOCHS}:0:fsdp=1",
            nproc=3,
            timeout=180,
        )
    )
    last = [f"B:{SAMPLES}:3:{EPOCHS}:0", _exact("Z", 6, 0), f"S:{SAMPLES}:4:{EPOCHS}:0"]
    launches.append(launch_scenarios(SCRIPT, workdir, *last, nproc=2, timeout=180))
    return ElasticRuns(workdir, launches, single)


def test_elastic_launches_complete_on_every_rank(runs):
    for launch in runs.launches:
        assert launch.launch.returncode == 0, runs.describe()
        assert launch.errors == {}, runs.describe()
    assert {name: outcome["error"] for name, outcome in runs.single.items()} == dict.fromkeys(runs.single)


@pytest.mark.parametrize(
    ("name", "worlds", "reference"),
    [("A", [2, 1, 3], "ref8"), ("B", [3, 2], "ref9"), ("D", [2, 3], "Dref"), ("F", [2, 3], "ref8")],
)
def test_elastic_resume_trains_every_step_on_the_global_batch_of_one_process(runs, name, worlds, reference):
    joined = joined_steps(runs.phases(name, worlds))
    expected = {step: sorted(indices) for step, indices in runs.single[reference]["steps"].items()}
    assert joined == expected, runs.describe()


@pytest.mark.parametrize(("name", "worlds"), [("A", [2, 1, 3]), ("B", [3, 2]), ("D", [2, 3]), ("F", [2, 3])])
def test_elastic_ranks_take_contiguous_slices_of_each_global_batch(runs, name, worlds):
    """Within a step no sample is taken twice, and each rank's slice differs by one at most."""
    for ranks in runs.phases(name, worlds):
        for step in ranks[0]["steps"]:
            slices = [outcome["steps"][step] for outcome in ranks]
            taken = [i for part in slices for i in part]
            assert len(taken) == len(set(taken)), (name, step, slices)
            assert max(map(len, slices)) - min(map(len, slices)) <= 1, (name, step, slices)


@pytest.mark.parametrize(("name", "reference"), [("A", "ref8"), ("B", "ref9"), ("F", "ref8")])
def test_elastic_resume_logs_the_losses_of_the_uninterrupted_run(runs, name, reference):
    resumed = (runs.workdir / name / "log.tsv").read_text().splitlines()
    expected = (runs.workdir / reference / "log.tsv").read_text().splitlines()
    assert len(resumed) == len(expected) == EPOCHS + 1
    header = expected[0].split("\t")
    column = header.index("loss")
    for got, want in zip(resumed[1:], expected[1:]):
        assert abs(float(got.split("\t")[column]) - float(want.split("\t")[column])) < TOLERANCE


@pytest.mark.parametrize(
    ("name", "last_world", "reference"),
    [("A", 3, "ref8"), ("B", 2, "ref9"), ("D", 3, "Dref"), ("F", 3, "ref8")],
)
def test_elastic_resume_ends_close_to_the_uninterrupted_weights(runs, name, last_world, reference):
    final = read_phase(runs.workdir / "records" / f"{name}-w{last_world}-rank0.json")["weights"]
    expected = runs.single[reference]["weights"]
    for key, value in expected.items():
        difference = (torch.tensor(final[key]) - torch.tensor(value)).abs().max().item()
        assert difference < TOLERANCE, (key, difference)


@pytest.mark.parametrize(("name", "changes"), [("A", [(2, 1), (1, 3)]), ("B", [(3, 2)]), ("F", [(2, 3)])])
def test_elastic_world_size_changes_are_recorded_in_experiment_json(runs, name, changes):
    metadata = json.loads((runs.workdir / name / "experiment.json").read_text())
    recorded = [(c["from"], c["to"]) for c in metadata["changes"] if c["what"] == "world_size"]
    assert recorded == changes
    assert metadata["created_with"]["elastic"] is True
    assert metadata["status"] == "finished"
    sizes = " -> ".join(str(size) for size in [changes[0][0], *(now for _, now in changes)])
    assert f"processes {sizes})" in summarize(runs.workdir / name).training()  # what exp status shows


def test_elastic_resume_on_another_world_size_warns_once_naming_both_and_the_promise(runs):
    warned = [
        runs.single["A"]["warnings"],
        read_phase(runs.workdir / "records" / "A-w3-rank0.json")["warnings"],
    ]
    for messages, (then, now) in zip(warned, [(2, 1), (1, 3)]):
        elastic = [m for m in messages if "elastic run" in m]
        assert len(elastic) == 1, messages
        assert f"saved by {then} process(es) and resumes on {now}" in elastic[0]
        assert "up to floating-point summation order" in elastic[0]


def test_elastic_world_size_larger_than_the_global_batch_is_refused_on_every_rank(runs):
    for rank in range(3):
        error = read_phase(runs.workdir / "records" / f"C-w3-rank{rank}.json")["error"]
        assert error is not None and error.startswith("ConfigurationError"), error
        assert "global batch holds 2 sample(s) and this launch has 3 processes" in error


@pytest.mark.parametrize(
    ("name", "world"),
    [("U2", 2), ("U3", 3), ("X", 1), ("Y", 3), ("Z", 2)],
    ids=["started-on-2", "started-on-3", "2-to-1", "2-to-3", "1-to-2"],
)
def test_elastic_exact_ends_bit_identical_to_the_single_process_run(runs, name, world):
    if world == 1:
        final = runs.single[name]
    else:
        final = read_phase(runs.workdir / "records" / f"{name}-w{world}-rank0.json")
    assert final["error"] is None, final["error"]
    expected = runs.single["U1"]["weight_bits"]
    assert final["weight_bits"] == expected


def test_elastic_exact_with_accumulation_ends_bit_identical_after_2_to_3(runs):
    final = read_phase(runs.workdir / "records" / "V-w3-rank0.json")
    assert final["error"] is None, final["error"]
    assert final["weight_bits"] == runs.single["V1"]["weight_bits"]
    assert final["weight_bits"] != runs.single["U1"]["weight_bits"]  # accumulation did change the run


def test_elastic_exact_resume_warns_that_it_stays_bit_identical(runs):
    messages = [m for m in runs.single["X"]["warnings"] if "elastic run" in m]
    assert len(messages) == 1, runs.single["X"]["warnings"]
    assert "saved by 2 process(es) and resumes on 1" in messages[0]
    assert "bit-identical to the uninterrupted run" in messages[0]


def test_elastic_resume_on_the_same_world_size_stays_bit_identical(runs):
    resumed = read_phase(runs.workdir / "records" / "S-w2-rank0.json")
    whole = read_phase(runs.workdir / "records" / "Sref-w2-rank0.json")
    assert resumed["error"] is None and whole["error"] is None
    assert resumed["weight_bits"] == whole["weight_bits"]
    assert [m for m in resumed["warnings"] if "elastic run" in m] == []
    metadata = json.loads((runs.workdir / "S" / "experiment.json").read_text())
    assert "changes" not in metadata
