"""Testing, evaluating and predicting outside training: the network as it is in memory, or saved
weights loaded first. Testing locks the directory and appends to test_log.tsv
(:mod:`experiment.run.testing`); evaluating and predicting write nothing and, but to read saved
weights, do not lock it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from experiment.arguments import check_int
from experiment.callbacks.callback_list import CallbackList
from experiment.errors import ConfigurationError
from experiment.run.objects import load_optimizer_file
from experiment.run.ownership import callbacks_of_rank
from experiment.run.plan_making import evaluation_loader, with_progress
from experiment.run.testing import evaluate_saved_weights, load_saved_weights
from experiment.store.directory import RunDirectory
from experiment.training.batches import parameter_dtype
from experiment.training.data import BatchSource
from experiment.training.distributed import SINGLE
from experiment.training.loop import TrainingLoop
from experiment.training.prediction import concatenate, predict, prediction_inputs, step_output


class Inference:
    """The :class:`~experiment.Experiment` methods that use the network outside training:
    ``test``, ``evaluate``, ``predict`` and ``load_optimizer_state``."""

    directory: RunDirectory
    loop: TrainingLoop
    optimizer: torch.optim.Optimizer

    def test(
        self,
        test_data: Any,
        *,
        checkpoint: str | int = "best",
        batch_size: int = 32,
        callbacks: Sequence[Any] = (),
        progress: bool | dict[str, Any] = True,
    ) -> dict[str, Any]:
        """Evaluate saved weights on ``test_data`` and append a row to test_log.tsv.

        Args:
            test_data: a DataLoader, a Dataset or ``(x, y)``.
            checkpoint: "best", "last", or an epoch number (the best or the last epoch).
            batch_size: for Datasets and tuples.
            callbacks: receive the ``on_test_*`` hooks.
            progress: as in :meth:`train`.

        Returns:
            ``test_loss`` and the ``test_`` metrics. The network keeps the loaded weights.
        """
        return evaluate_saved_weights(
            self.directory,
            self.loop,
            test_data,
            checkpoint=checkpoint,
            batch_size=batch_size,
            callbacks=with_progress(callbacks, progress),
        )

    def evaluate(
        self,
        data: Any,
        *,
        batch_size: int = 32,
        return_pred: bool = False,
        callbacks: Sequence[Any] = (),
        progress: bool | dict[str, Any] = False,
    ) -> dict[str, Any] | tuple[dict[str, Any], Any]:
        """Loss and metrics of the network as it is in memory (Poutyne's ``Model.evaluate``).

        Nothing is written and the directory is not locked. Eval mode, no gradients, the run's
        precision; ``eval_step`` when given. The network's training mode is restored after.

        Args:
            data: a DataLoader, a Dataset or ``(x, y)``, as for :meth:`test`.
            batch_size: for Datasets and tuples.
            return_pred: also return the outputs, concatenated on the CPU (see :meth:`predict`).
            callbacks: receive the ``on_test_*`` hooks.
            progress: as in :meth:`train` (off by default).

        Returns:
            ``test_loss`` and the ``test_`` metrics, as :meth:`test` names them; with
            ``return_pred``, the pair ``(logs, predictions)``.
        """
        return evaluate_in_memory(
            self.loop,
            data,
            batch_size=batch_size,
            return_pred=return_pred,
            callbacks=with_progress(callbacks, progress),
        )

    def predict(
        self,
        data: Any,
        *,
        checkpoint: str | int | None = None,
        batch_size: int = 32,
        has_targets: bool | None = None,
    ) -> Any:
        """The network's outputs over ``data``, concatenated on the CPU: a tensor, or the same nested
        tuples, lists and dicts as the network returns, joined leaf by leaf.

        Eval mode, no gradients, the run's precision; the training mode is restored after. A tuple
        or list of inputs is passed as ``network(*x)``. Half-precision outputs (bfloat16, float16:
        those of a "bf16-mixed" or "16-mixed" run) come back as float32, which NumPy takes; other
        dtypes are kept.

        Args:
            data: inputs only as a tensor or NumPy array; ``(x, y)`` arrays (``x`` is used); or a
                Dataset, DataLoader or iterable whose batches are pairs ``(x, y)`` (``x`` is used) or
                anything else, taken as the inputs.
            checkpoint: None for the network as it is in memory; "best", "last" or an epoch loads
                the saved weights first, as :meth:`test` does (the network keeps them).
            batch_size: for tensors, arrays, Datasets and tuples.
            has_targets: False takes every batch whole as the inputs (a network of two inputs
                given ``(x1, x2)``); True requires ``(x, y)`` pairs; None guesses as above.
        """
        return predict_outputs(
            self.directory,
            self.loop,
            data,
            checkpoint=checkpoint,
            batch_size=batch_size,
            has_targets=has_targets,
        )

    def load_optimizer_state(self, filename: str | os.PathLike[str]) -> None:
        """Load an optimizer state saved by :class:`~experiment.callbacks.OptimizerCheckpoint`
        (Poutyne's ``Model.load_optimizer_state``), or the one of a run's commit (a file
        ``checkpoints/state-NNNNNN.pt`` or, written by FSDP2, a folder ``checkpoints/state-NNNNNN/``,
        whose shards one process reads whole), through the safe loader. Under
        ``strategy="fsdp"`` each rank takes its shards of it (every rank calls it).

        A resumed run's checkpoint still takes precedence over it when training starts.

        Raises:
            UnsafeCheckpointError: the file holds a pickle that would run code; nothing is loaded.
            CheckpointError: the file is missing or damaged.
            StateMismatchError: the state does not fit the optimizer; nothing is changed.
        """
        load_optimizer_file(
            filename, network=self.loop.network, optimizer=self.optimizer, strategy=self.loop.strategy
        )


def evaluate_in_memory(
    loop: TrainingLoop,
    data: Any,
    *,
    batch_size: int,
    return_pred: bool,
    callbacks: Sequence[Any],
) -> dict[str, Any] | tuple[dict[str, Any], Any]:
    """``test_loss`` and the ``test_`` metrics of ``loop.network`` on ``data`` (and the outputs,
    concatenated on the CPU, when ``return_pred``).

    Raises:
        ConfigurationError: no loss function and no ``eval_step``, or outputs asked of an
            ``eval_step`` that returns no ``y_pred``.
        DataError: the data cannot be batched or yields no batch.
    """
    check_int("batch_size", batch_size, minimum=1, expected="a positive integer")
    if loop.loss_function is None and loop.eval_step is None:
        raise ConfigurationError(
            "Evaluating needs a loss function: pass loss_function= (or eval_step=) to Experiment."
        )
    # Under torchrun each rank evaluates its share and the sums are combined; outputs asked for
    # are those of all the data, so then every rank evaluates all of it.
    world = loop.world if not return_pred else SINGLE
    loader = evaluation_loader(loop, data, role="data", batch_size=batch_size, world=world)
    source = BatchSource(loader, None, "data")
    callback_list = CallbackList(callbacks_of_rank(callbacks, loop.world))
    callback_list.setup({"steps": source.steps_per_epoch}, loop)
    predictions: list[Any] | None = [] if return_pred else None
    logs = loop.evaluate(source, "test", callback_list, predictions=predictions)
    if predictions is None:
        return logs
    if any(output is None for output in predictions):
        raise ConfigurationError(
            "evaluate(return_pred=True): eval_step returned no 'y_pred'. Return {'loss': loss, "
            "'y_pred': y_pred, ...} from it, or call evaluate without return_pred."
        )
    return logs, concatenate(predictions)


def predict_outputs(
    directory: RunDirectory,
    loop: TrainingLoop,
    data: Any,
    *,
    checkpoint: str | int | None,
    batch_size: int,
    has_targets: bool | None,
) -> Any:
    """The outputs of ``loop.network`` over the inputs of ``data``, concatenated on the CPU, after
    loading the weights ``checkpoint`` names (None: the network as it is).

    Raises:
        ConfigurationError: an invalid ``batch_size`` or ``checkpoint``.
        CheckpointError: no saved weights, or weights that do not fit the network.
        DataError: the data cannot be batched or yields no batch.
    """
    check_int("batch_size", batch_size, minimum=1, expected="a positive integer")
    if has_targets not in (None, True, False):
        raise ConfigurationError(f"has_targets: received {has_targets!r}; expected None, True or False.")
    step = loop.eval_step
    # A custom evaluation step takes each batch whole and decides what its inputs are.
    inputs = prediction_inputs(
        data,
        batch_size=batch_size,
        has_targets=False if step else has_targets,
        dtype=parameter_dtype(loop.network),
    )
    if checkpoint is not None:
        with directory.reading():  # a run on a read-only mount can be read too
            load_saved_weights(directory, loop.network, checkpoint, loop.strategy)
    output = None if step is None else step_output(step, loop)
    return predict(loop.network, inputs, loop.device, autocast=loop.precision.autocast, output=output)
