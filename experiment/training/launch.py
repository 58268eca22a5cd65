"""Where the ranks of a run come from when no torchrun launched them: SLURM's ``srun``.

torchrun gives each process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. ``srun -n N python train.py`` gives ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``,
``SLURM_LOCALID`` and the step's nodes instead; :func:`srun_variables` turns them into
torchrun's, so that the process group starts the same way. torchrun's variables win when present
(torchrun inside a SLURM job), and a user's ``MASTER_ADDR``/``MASTER_PORT`` are kept.

The batch script of ``sbatch -n 4`` itself sees ``SLURM_NTASKS=4`` but is one process: only the
variables of a job step (which ``srun`` sets, ``SLURM_STEP_NUM_TASKS``) count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from experiment.errors import ConfigurationError

#: The ports a job step's rendezvous may use: BASE_PORT + ((job id + 97 x step id) mod PORT_SPAN),
#: below Linux's ephemeral range, so that two jobs sharing a node, or two steps of one job running
#: at once (a sweep of ``srun &``), seldom meet.
BASE_PORT, PORT_SPAN, STEP_STRIDE = 15000, 10000, 97


def srun_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for a process that ``srun`` started as one of several tasks; empty
    when torchrun's are present or this is not such a process.

    Example:
        >>> srun_variables({"SLURM_JOB_ID": "1234", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
        ...                 "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"})["MASTER_ADDR"]
        'gpu07'

    Raises:
        ConfigurationError: the allocation's node list cannot be read.
    """
    tasks = environ.get("SLURM_STEP_NUM_TASKS")
    if "WORLD_SIZE" in environ or not tasks or int(tasks) <= 1 or "SLURM_PROCID" not in environ:
        return {}
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
    step = int(environ.get("SLURM_STEP_ID", "0")) if environ.get("SLURM_STEP_ID", "").isdigit() else 0
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": tasks,
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_node(nodes),
        "MASTER_PORT": environ.get("MASTER_PORT")
        or str(BASE_PORT + (int(environ["SLURM_JOB_ID"]) + STEP_STRIDE * step) % PORT_SPAN),
    }


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[03-05,9],gpu1`` gives ``node03``.

    Raises:
        ConfigurationError: ``nodelist`` is empty or not in SLURM's compressed form.
    """
    match = re.match(r"([^,\[\]]+)(?:\[(\d+)[^\]]*\]([^,\[\]]*))?(?:,|$)", nodelist)
    if match is None:
        raise ConfigurationError(
            f"Cannot read the first node of SLURM's node list. Received: {nodelist!r}; expected a "
            "list such as 'node[01-04],gpu7' in SLURM_JOB_NODELIST. Set MASTER_ADDR to the first "
            "node's address to start the process group without it."
        )
    prefix, number, suffix = match.groups()
    return prefix if number is None else f"{prefix}{number}{suffix}"
