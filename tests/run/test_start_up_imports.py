"""Start-up cost: ``from experiment import Experiment`` loads no optional heavy package.

torchmetrics (which imports SciPy and matplotlib), pandas, MLflow and TensorBoard are imported when a
feature that needs them is used: a named epoch metric built, a log read into a DataFrame, a logger
made, a TensorBoard file written. A fresh interpreter imports the front door and looks.
"""

from __future__ import annotations

from tests.support.cli import probe_json

HEAVY = ("torchmetrics", "scipy", "matplotlib", "pandas", "mlflow", "tensorboard", "torch.utils.tensorboard")

#: Imports Experiment, then runs argv[1] (Python code), then prints the heavy modules now loaded.
_PROBE = """
import json, sys
from experiment import Experiment
exec(sys.argv[1])
heavy = sys.argv[2:]
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def _heavy_after(code: str) -> list[str]:
    return probe_json(_PROBE, code, *HEAVY)


def test_start_up_imports_experiment_loads_no_torchmetrics_scipy_or_loggers():
    assert _heavy_after("pass") == []


def test_start_up_imports_named_epoch_metric_loads_torchmetrics_when_built():
    """The probe is not vacuous: building a named epoch metric imports torchmetrics (and SciPy)."""
    code = (
        "import torch\n"
        "from experiment.training.named_metrics import epoch_metric\n"
        "name, metric = epoch_metric('f1')\n"
        "assert 'torchmetrics' not in sys.modules  # resolving the name builds nothing yet\n"
        "metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))\n"
        "assert float(metric.compute()) == 1.0\n"
    )
    loaded = _heavy_after(code)
    assert "torchmetrics" in loaded
    assert "scipy" in loaded
