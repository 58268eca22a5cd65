"""`exp plot DIR...`: learning curves written as an image of the expected size."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from experiment.errors import MissingExtraError
from experiment.inspection.plotting import (
    figure_pixels,
    learning_curves_figure,
    plot_learning_curves,
    spans_decades,
)
from tests.support.cli import write_fake_run
from tests.support.training import train_run


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _assert_picture(path, size):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert (image.shape[1], image.shape[0]) == size
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # curves, text and axes, not a blank


def test_cli_plot_overlays_runs_with_one_panel_per_metric(tmp_path):
    train_run(tmp_path / "a", epochs=3)
    train_run(tmp_path / "b", epochs=2, experiment_options={"batch_metrics": []})
    output = tmp_path / "curves.png"

    result = _invoke("plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(output))

    assert result.exit_code == 0, result.output
    assert result.output == f"Wrote {output}\n"
    _assert_picture(output, figure_pixels(4))  # loss, acc, f1, lr: two rows of panels
    assert figure_pixels(4) == (1500, 720)


def test_cli_plot_chosen_metrics(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", values=[0.9, 0.5, 0.7])
    output = tmp_path / "loss.png"

    result = _invoke("plot", str(run_dir), "--metric", "val_loss", "--metric", "acc", "-o", str(output))

    assert result.exit_code == 0, result.output
    _assert_picture(output, (1000, 360))


def test_cli_plot_rejects_an_unknown_metric(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    result = _invoke("plot", str(run_dir), "--metric", "f2", "-o", str(tmp_path / "x.png"))

    assert result.exit_code == 1
    assert (
        result.output == "Error: metric: received 'f2', not logged by these runs; expected one of "
        "loss, acc, lr.\n"
    )
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_refuses_a_run_without_epochs_and_a_directory_that_is_not_a_run(tmp_path):
    empty = write_fake_run(tmp_path / "empty", values=[])

    no_epochs = _invoke("plot", str(empty), "-o", str(tmp_path / "x.png"))
    not_a_run = _invoke("plot", str(tmp_path), "-o", str(tmp_path / "x.png"))

    assert no_epochs.exit_code == 1 and "has no completed epoch yet" in no_epochs.output
    assert not_a_run.exit_code == 1 and "is not a run directory" in not_a_run.output
    assert _invoke("plot").exit_code == 2


def test_cli_plot_without_matplotlib_says_which_extra_to_install(tmp_path, monkeypatch):
    run_dir = write_fake_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    result = _invoke("plot", str(run_dir), "-o", str(tmp_path / "x.png"))

    assert result.exit_code == 1
    assert (
        result.output == "Error: Plotting needs matplotlib, which is not installed. Install the plot "
        "extra: pip install 'experiment[plot]'.\n"
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'experiment\[plot\]'"):
        plot_learning_curves([run_dir], tmp_path / "x.png")


def test_plotting_writes_the_format_of_the_suffix(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    plot_learning_curves([run_dir], tmp_path / "curves.svg", metrics=["loss"])

    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")


def _panels(figure) -> dict[str, object]:
    return {axes.get_title(): axes for axes in figure.axes}


def test_plotting_labels_the_axes_with_epoch_and_the_metric(tmp_path):
    run_dir = write_fake_run(tmp_path / "run")

    panels = _panels(learning_curves_figure([run_dir]))

    assert list(panels) == ["loss", "acc", "lr"]
    for metric, axes in panels.items():
        assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", metric)


def test_plotting_draws_a_learning_rate_spanning_decades_on_a_log_axis(tmp_path):
    def decaying(optimizer: torch.optim.Optimizer) -> list[object]:
        return [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)]

    train_run(tmp_path / "decaying", epochs=3, schedulers=decaying, progress=False)
    constant = write_fake_run(tmp_path / "constant")

    decaying_panels = _panels(learning_curves_figure([tmp_path / "decaying"], metrics=["lr", "loss"]))
    constant_panels = _panels(learning_curves_figure([constant], metrics=["lr"]))

    assert decaying_panels["lr"].get_yscale() == "log"  # 0.1, 0.01, 0.001
    assert decaying_panels["loss"].get_yscale() == "linear"
    assert constant_panels["lr"].get_yscale() == "linear"


def test_plotting_spans_decades_only_for_positive_values_over_a_factor_of_ten():
    assert spans_decades([0.1, 0.001]) and spans_decades([1e-3, float("nan"), 1.0])
    assert not spans_decades([0.1, 0.02]) and not spans_decades([0.0, 0.1]) and not spans_decades([])
