"""`exp export DIR [--checkpoint last|best] -o model.pt`: a run's weights as one plain state dict
file, for a run of one file per commit and for a run whose commits are folders of shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from experiment import ConfigurationError, Experiment, RunDirectoryError
from experiment.inspection.exporting import export_weights
from tests.support.cli import write_fake_run
from tests.support.sharded_runs import shard_commits
from tests.support.training import make_network, train_run

NAMES = [name for name, _ in make_network().named_parameters()]


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _loaded(path: Path) -> dict[str, torch.Tensor]:
    """The file read as a user would, loaded strictly into the network the run trained."""
    weights = torch.load(path, weights_only=True)
    make_network(seed=5).load_state_dict(weights)  # strict: same keys and shapes
    return weights


def _assert_equal(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert torch.equal(found[key], value), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Experiment]:
    """A finished 3-epoch run: its network holds the last epoch's weights."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    return run_dir, train_run(run_dir, epochs=3)


def _best_file(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("best-epoch*.pt"))[-1]


def test_cli_export_writes_the_last_epochs_weights_as_a_plain_state_dict(trained, tmp_path: Path):
    run_dir, experiment = trained
    output = tmp_path / "model.pt"
    result = _invoke("export", str(run_dir), "-o", str(output))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"Wrote {output}: the weights of epoch 3 (--checkpoint last), 4 tensors, "
    )
    _assert_equal(_loaded(output), experiment.network.state_dict())


def test_cli_export_best_writes_the_best_epochs_weights(trained, tmp_path: Path):
    run_dir, _ = trained
    output = tmp_path / "best.pt"
    result = _invoke("export", str(run_dir), "--checkpoint", "best", "-o", str(output))
    assert result.exit_code == 0, result.output
    best = _best_file(run_dir)
    epoch = int(best.stem.removeprefix("best-epoch"))
    assert f"the weights of epoch {epoch} (--checkpoint best)" in result.output
    _assert_equal(_loaded(output), torch.load(best, weights_only=True))


def test_cli_export_reads_a_run_whose_commits_are_folders_of_shards(trained, tmp_path: Path):
    run_dir, experiment = trained
    sharded = tmp_path / "sharded"
    train_run(sharded, epochs=3)  # the same seeded run, then its commits rewritten as shards
    assert [folder.name for folder in shard_commits(sharded, names=NAMES)] == ["state-000003", "state-000002"]
    output = tmp_path / "model.pt"
    result = _invoke("export", str(sharded), "-o", str(output))
    assert result.exit_code == 0, result.output
    assert "the weights of epoch 3" in result.output
    _assert_equal(_loaded(output), experiment.network.state_dict())


def test_cli_export_refuses_an_existing_output_unless_forced(trained, tmp_path: Path):
    run_dir, experiment = trained
    output = tmp_path / "model.pt"
    output.write_text("mine")
    result = _invoke("export", str(run_dir), "-o", str(output))
    assert result.exit_code == 1
    assert f"output: {output} exists already; expected a new file. Nothing was written." in result.output
    assert "(exp export --force)" in result.output
    assert output.read_text() == "mine"
    forced = _invoke("export", str(run_dir), "-o", str(output), "--force")
    assert forced.exit_code == 0, forced.output
    _assert_equal(_loaded(output), experiment.network.state_dict())


def test_cli_export_refuses_a_run_without_the_weights_asked(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "fake")  # experiment.json and log.tsv, no checkpoint
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    output = tmp_path / "model.pt"
    result = _invoke("export", str(run_dir), "-o", str(output))
    assert result.exit_code == 1
    assert "holds no checkpoint yet; train first" in result.output, result.output
    assert not output.exists()


def test_export_weights_refuses_what_it_cannot_write(trained, tmp_path: Path):
    run_dir, _ = trained
    with pytest.raises(
        ConfigurationError, match=r"output: received .*, which is a folder; expected the path"
    ):
        export_weights(run_dir, tmp_path)
    with pytest.raises(ConfigurationError, match=r"output: the folder of .* does not exist"):
        export_weights(run_dir, tmp_path / "missing" / "model.pt")
    with pytest.raises(ConfigurationError, match=r"checkpoint: received 7; expected 'best', 'last'"):
        export_weights(run_dir, tmp_path / "model.pt", checkpoint=7)
    assert not (tmp_path / "model.pt").exists()


def test_export_weights_refuses_a_folder_that_is_not_a_run(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirectoryError, match=r"experiment\.json"):
        export_weights(tmp_path / "empty", tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
