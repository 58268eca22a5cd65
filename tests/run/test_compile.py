"""torch.compile: a compiled network trains, commits and resumes, and its files carry no prefix.

The tests compile with ``backend="eager"`` (fast, no C compiler needed); it still wraps the network
in an ``OptimizedModule`` whose ``state_dict`` keys start with ``_orig_mod.``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from experiment import (
    BestModelRestore,
    ConfigurationError,
    Experiment,
    ModelCheckpoint,
    TensorBoardGradientTracker,
)
from experiment.store.safe_load import load_tensors
from tests.support.state_checks import newest_state, state_files
from tests.support.training import (
    Interrupt,
    InterruptAt,
    assert_same_training_state,
    make_data,
    make_network,
    train_run,
)

EAGER = {"backend": "eager"}


def compiled_run(directory: Path, *, interrupt_at: int | None = None, epochs: int = 3) -> Experiment:
    """As train_run, with a network the user compiled before building the Experiment."""
    network = make_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    exp = Experiment(
        directory,
        torch.compile(network, backend="eager"),
        optimizer=optimizer,
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        epoch_metrics=["f1"],
    )
    x, y = make_data()
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    with contextlib.suppress(Interrupt):
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True
        )
        exp.train(
            loader,
            make_data(48, seed=2),
            epochs=epochs,
            callbacks=callbacks,
            checkpoint_every=2,
            progress=False,
        )
    return exp


def _keys(state: dict[str, Any]) -> list[str]:
    return list(state)


def test_compiled_network_resumes_into_an_uncompiled_one_and_back(run_dirs):
    uninterrupted, resumed = run_dirs
    reference = train_run(uninterrupted, epochs=3, checkpoint_every=2, progress=False)
    compiled_run(resumed, interrupt_at=4)
    train_run(resumed, epochs=3, interrupt_at=11, checkpoint_every=2, progress=False)
    final = train_run(
        resumed, epochs=3, checkpoint_every=2, progress=False, experiment_options={"compile": EAGER}
    )
    assert type(final.loop.network).__name__ == "OptimizedModule"
    assert_same_training_state(reference, final)


def test_compiled_network_files_carry_no_orig_mod_prefix(tmp_path: Path):
    plain = train_run(tmp_path / "plain", epochs=2, progress=False)
    weights = tmp_path / "weights.pt"
    callbacks = [BestModelRestore(), ModelCheckpoint(str(weights))]
    train_run(tmp_path / "run", epochs=2, callbacks=lambda: callbacks, experiment_options={"compile": EAGER})
    expected = _keys(plain.network.state_dict())
    tree = newest_state(tmp_path / "run")
    assert _keys(tree["nodes"]["model"]) == expected
    assert tree["classes"]["model"] == "Sequential"
    for best in (tmp_path / "run" / "checkpoints").glob("best-epoch*.pt"):
        assert _keys(load_tensors(best)) == expected
    assert _keys(load_tensors(weights)) == expected
    restore_state = next(v for k, v in tree["nodes"].items() if "BestModelRestore" in k)
    assert _keys(restore_state["best_weights"]) == expected
    assert not any("_orig_mod" in str(path) for path in state_files(tmp_path / "run"))


def test_gradient_tracker_names_the_parameters_of_a_compiled_network_without_prefix(tmp_path: Path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    tracker = TensorBoardGradientTracker(writer)
    try:
        train_run(
            tmp_path / "run", epochs=1, callbacks=lambda: [tracker], experiment_options={"compile": EAGER}
        )
    finally:
        writer.close()
    assert tracker.names == ["0.weight", "3.weight"]


def test_compiled_network_tests_and_predicts_from_uncompiled_files(tmp_path: Path):
    plain = train_run(tmp_path / "run", epochs=2, progress=False)
    x, y = make_data(20, seed=4)
    expected = plain.test((x, y), progress=False)
    network = make_network()
    exp = Experiment(
        tmp_path / "run",
        torch.compile(network, backend="eager"),
        loss_function="cross_entropy",
        batch_metrics=["accuracy"],
        epoch_metrics=["f1"],
    )
    assert exp.test((x, y), progress=False) == pytest.approx(expected)
    assert torch.allclose(exp.predict(x, checkpoint="best"), plain.predict(x), atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_true_wraps_the_network_for_training_only(tmp_path: Path):
    network = make_network()
    exp = Experiment(tmp_path, network, loss_function="cross_entropy", compile=True)
    assert exp.network is network
    assert type(exp.loop.network).__name__ == "OptimizedModule"
    assert exp.loop.network._orig_mod is network
    again = Experiment(tmp_path / "b", exp.loop.network, loss_function="cross_entropy", compile=True)
    assert again.loop.network is exp.loop.network  # compiled once


def test_compile_of_another_type_is_refused(tmp_path: Path):
    with pytest.raises(ConfigurationError, match=r"compile: received 'yes'; expected True, False"):
        Experiment(tmp_path, nn.Linear(2, 2), loss_function="mse", compile="yes")
