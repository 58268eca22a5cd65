"""train_model: deep_pipe's functional way to train, on the library's one loop and commit protocol.

``train_model(directory, network, batch_iter, n_epochs=..., lr=..., validate=..., **policies)``
builds an :class:`~experiment.Experiment` on ``directory`` and trains it with a
:class:`~experiment.callbacks.policy_runner.PolicyRunner`. So a rerun of the same call continues
where an interrupted one stopped, exactly; ``directory`` holds what deep_pipe splits between
``log_path`` (here ``tensorboard/`` and ``log.tsv``) and ``checkpoints_path`` (``checkpoints/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from experiment.callbacks.base import overrides
from experiment.callbacks.policy_runner import PolicyRunner
from experiment.errors import ConfigurationError
from experiment.run.experiment import Experiment
from experiment.schedules.value_policies import ValuePolicy, as_policy
from experiment.training.loop import TrainingLoop
from experiment.training.step import WholeStepFunction

#: ``train_step(trainer, x, y, **values) -> loss`` or ``(loss, y_pred)``.
TrainModelStep = Callable[..., Any]


def default_train_step(trainer: TrainingLoop, x: Any, y: Any, **values: Any) -> tuple[torch.Tensor, Any]:
    """One ordinary step (zero_grad, forward, loss, backward, optimizer step); ``values`` are unused.

    A custom step can do its own work and then call this one, as deep_pipe's ``WeightedModel``
    calls ``super().do_train_step``.
    """
    trainer.optimizer.zero_grad(set_to_none=True)
    y_pred = trainer.network(*x) if isinstance(x, (tuple, list)) else trainer.network(x)
    loss = trainer.loss_function(y_pred, y)
    loss.backward()
    trainer.optimizer.step()
    return loss, y_pred


def train_model(
    directory: str | os.PathLike[str],
    network: nn.Module,
    batch_iter: Any,
    *,
    n_epochs: int,
    loss_function: Any,
    optimizer: Any = "sgd",
    lr: Any = None,
    validate: Callable[[], Mapping[str, Any]] | None = None,
    train_step: TrainModelStep | None = None,
    callbacks: Sequence[Any] = (),
    steps_per_epoch: int | None = None,
    batch_size: int = 32,
    seed: int = 42,
    checkpoint_every: int | None = None,
    device: Any = None,
    config: dict[str, Any] | None = None,
    tensorboard: bool = True,
    progress: bool | dict[str, Any] = True,
    monitor_metric: str = "loss",
    monitor_mode: str | None = None,
    **policies: Any,
) -> list[dict[str, Any]]:
    """Train ``network`` for ``n_epochs`` epochs in ``directory``; a rerun resumes where it stopped.

    Args:
        directory: the run directory (created if needed, resumed if it holds a run).
        network: the module to train.
        batch_iter: the training data: a DataLoader, a Dataset, ``(x, y)`` tensors, or any iterable
            of ``(x, y)`` batches (give ``steps_per_epoch`` for an endless one).
        n_epochs: the total number of epochs of the run.
        loss_function: a name ("cross_entropy", "mse", ...) or a callable ``(y_pred, y) -> tensor``.
        optimizer: a name, an optimizer instance, or a callable taking the parameters.
        lr: the learning rate: a number or a value policy (``Exponential(1e-3, 0.5)``), set on
            every parameter group at each epoch's start; None leaves the optimizer's own.
        validate: called after each epoch with the network in eval mode and without gradients; it
            returns a dict of metrics, logged with a ``val_`` prefix (unless a name has one).
        train_step: ``train_step(trainer, x, y, **values)`` replaces the whole step (zero_grad,
            forward, loss, backward, optimizer step) and returns the loss, or ``(loss, y_pred)``.
            ``values`` holds the current value of every value policy (``lr`` included when given).
            See :func:`default_train_step`.
        callbacks: more Callback instances (stateful ones are saved with the run).
        steps_per_epoch: batches per epoch; by default one pass over ``batch_iter``.
        batch_size: for Datasets and tuples.
        seed: seeds Python, NumPy and torch when the run starts (not on resume).
        checkpoint_every: also commit a checkpoint every this many training steps.
        device: where to train; by default where the network is.
        config: hyperparameters to record in experiment.json.
        tensorboard: whether to write TensorBoard scalars.
        progress: show progress (a dict: ProgressionCallback options); False shows nothing.
        monitor_metric: the logged key that picks the best epoch, e.g. a ``validate`` metric
            (``"val_accuracy"``); checked at the first epoch end.
        monitor_mode: "min" or "max"; by default inferred from ``monitor_metric``'s name
            (``val_accuracy`` → "max", ``loss`` → "min"), as :class:`Experiment` does.
        **policies: policies by name: value policies (their values reach ``train_step`` as keyword
            arguments and are logged), plain values (taken as ``Constant``), or other
            :class:`~experiment.schedules.value_policies.Policy` objects such as an early stop.

    Returns:
        The history: one dict per completed epoch, resumed epochs included.

    Raises:
        ConfigurationError: value policies without a ``train_step`` to receive them, callbacks that
            need ``on_backward_end`` with a custom ``train_step``, or an invalid argument.

    Example:
        >>> def weighted_step(trainer, x, y, *, lr, weights):
        ...     trainer.optimizer.zero_grad()
        ...     loss = (weights * trainer.loss_function(trainer.network(x), y)).mean()
        ...     loss.backward()
        ...     trainer.optimizer.step()
        ...     return loss
        >>> train_model("runs/weighted", net, (x, y), n_epochs=10, lr=1e-3, optimizer="adam",
        ...             loss_function=nn.CrossEntropyLoss(reduction="none"), train_step=weighted_step,
        ...             weights=Exponential(initial=10, multiplier=0.5))
    """
    named = {name: as_policy(name, value) for name, value in policies.items()}
    if lr is not None:
        named = {"lr": as_policy("lr", lr), **named}
    _check_step(train_step, named, callbacks)
    experiment = Experiment(
        directory,
        network,
        optimizer=optimizer,
        loss_function=loss_function,
        device=device,
        config=config,
        tensorboard=tensorboard,
        monitor_metric=monitor_metric,
        monitor_mode=monitor_mode,
    )
    runner = PolicyRunner(named, validate=validate)
    if train_step is not None:
        experiment.loop.use_train_step(_adapted_step(train_step, experiment.loop, runner))
    return experiment.train(
        batch_iter,
        None,
        epochs=n_epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        callbacks=[runner, *callbacks],
        seed=seed,
        checkpoint_every=checkpoint_every,
        progress=progress,
    )


def _check_step(
    train_step: TrainModelStep | None, policies: dict[str, Any], callbacks: Sequence[Any]
) -> None:
    if train_step is None:
        unused = sorted(n for n, p in policies.items() if isinstance(p, ValuePolicy) and n != "lr")
        if unused:
            raise ConfigurationError(
                f"Value policies {unused} have no training step to receive them: the default step "
                "only uses lr. Pass train_step=f with f(trainer, x, y, *, "
                + ", ".join(f"{n}" for n in unused)
                + ", **values)."
            )
        return
    if not callable(train_step):
        raise ConfigurationError(f"train_step: received {type(train_step).__name__}; expected a callable.")
    skipped = [type(cb).__name__ for cb in callbacks if overrides(cb, "on_backward_end")]
    if skipped:
        raise ConfigurationError(
            f"Callbacks {skipped} act in on_backward_end, which a custom train_step replaces (it "
            "owns backward and the optimizer step). Do their work inside train_step (for example "
            "torch.nn.utils.clip_grad_norm_ before optimizer.step()), or drop train_step."
        )


def _adapted_step(train_step: TrainModelStep, loop: TrainingLoop, runner: PolicyRunner) -> WholeStepFunction:
    """The loop's ``train_step(x, y) -> (loss, y_pred)`` around the user's step and current values."""

    def step(x: Any, y: Any) -> tuple[torch.Tensor, Any]:
        result = train_step(loop, x, y, **runner.values)
        loss, y_pred = result if isinstance(result, (tuple, list)) else (result, None)
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss), device=loop.device)
        return loss, y_pred

    return step
