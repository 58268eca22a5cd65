"""torchrun's variables from srun's, for processes that srun started without torchrun."""

from __future__ import annotations

import pytest

from experiment.errors import ConfigurationError
from experiment.training.launch import first_node, srun_variables

SRUN_TASK = {
    "SLURM_JOB_ID": "20041",
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
}


def test_srun_variables_give_rank_size_local_rank_first_node_and_a_port_of_the_job() -> None:
    assert srun_variables(SRUN_TASK) == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "15041",
    }


def test_srun_variables_give_two_steps_of_one_job_running_at_once_different_ports() -> None:
    first = srun_variables({**SRUN_TASK, "SLURM_STEP_ID": "0"})["MASTER_PORT"]
    second = srun_variables({**SRUN_TASK, "SLURM_STEP_ID": "1"})["MASTER_PORT"]
    assert (first, second) == ("15041", "15138")


def test_srun_variables_leave_torchrun_and_the_users_address_alone() -> None:
    assert srun_variables({**SRUN_TASK, "WORLD_SIZE": "2"}) == {}  # torchrun inside the job
    chosen = srun_variables({**SRUN_TASK, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4000"})
    assert (chosen["MASTER_ADDR"], chosen["MASTER_PORT"]) == ("10.0.0.1", "4000")


@pytest.mark.parametrize("tasks", [None, "1"])
def test_srun_variables_are_empty_for_a_single_task(tasks: str | None) -> None:
    environ = {key: value for key, value in SRUN_TASK.items() if key != "SLURM_STEP_NUM_TASKS"}
    if tasks is not None:
        environ["SLURM_STEP_NUM_TASKS"] = tasks
    assert srun_variables(environ) == {}


def test_srun_variables_are_empty_in_the_batch_script_of_a_job_of_several_tasks() -> None:
    """``sbatch -n 4``: the batch script sees SLURM_NTASKS=4 but is one process, not a job step."""
    batch_shell = {key: value for key, value in SRUN_TASK.items() if not key.startswith("SLURM_STEP")}
    assert srun_variables({**batch_shell, "SLURM_PROCID": "0"}) == {}


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("vm", "vm"),
        ("node[03-05,9],gpu1", "node03"),
        ("gpu1,node[1-2]", "gpu1"),
        ("a-[001-4]-ib", "a-001-ib"),
    ],
)
def test_first_node_reads_slurms_compressed_node_list(nodelist: str, first: str) -> None:
    assert first_node(nodelist) == first


def test_first_node_rejects_an_unreadable_list() -> None:
    with pytest.raises(ConfigurationError, match=r"Received: '\[1-2\]'; expected a list such as"):
        first_node("[1-2]")
