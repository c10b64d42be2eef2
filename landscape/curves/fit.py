"""Training curves between checkpoints: minimise the loss averaged along the curve.

.. math::

    \\ell(\\theta) = \\mathbb{E}_{t \\sim U(0,1)} L(\\phi_\\theta(t))

by SGD on the bends (and on the endpoints when they are not fixed), one fresh t per
minibatch (or several t, evaluated as a batch of points). The optional arc-length ("fair") loss weights each t by the curve's speed:
:math:`\\mathbb{E}_t [L(\\phi(t))\\, w(t)]`, :math:`w(t) = \\lVert\\phi'(t)\\rVert / \\overline{\\lVert\\phi'\\rVert}`
with the mean over a fixed quadrature grid, gradients flowing through both L and w;
``||phi'(t)||`` comes from the J x J Gram matrix of the control points.

BatchNorm uses batch statistics during training (the model is in train mode); evaluate
trained curves with ``bn="recompute"``.

Any data :class:`landscape.train.TrainBatches` reads trains a curve (in memory: a seeded
shuffle per epoch; a DataLoader: its own batches), with any batch and model output of
:mod:`landscape.batches`, a ``loss`` (cross-entropy by default, ``"token_loss"`` for causal
language models) and a user ``forward(model, batch)``.

Reference: Garipov et al., NeurIPS 2018 (seeds 000-002).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from ..batches import Batch, call_model
from ..budget import check_training
from ..train import TrainBatches, resolve_loss, sgd
from .curve import Curve
from .files import load_curve

__all__ = [
    "FitResult",
    "LR_UPDATES",
    "SCHEDULES",
    "WEIGHT_DECAY_ON",
    "curve_loss",
    "curve_weight_decay",
    "fit_curve",
    "learning_rate_factor",
]

SCHEDULES = ("garipov", "cosine", "constant")
LR_UPDATES = ("epoch", "batch")
WEIGHT_DECAY_ON = ("point", "bends")


def learning_rate_factor(schedule: str, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of training.

    ``garipov``: 1 for the first half, then linear down to 0.01 at 90%, then 0.01 (the
    schedule of the mode-connectivity code, its ``learning_rate_schedule``); ``cosine``;
    ``constant``. Which ``progress`` an epoch or a batch gets is :func:`fit_curve`'s
    ``lr_update``.
    """
    if schedule == "garipov":
        if progress <= 0.5:
            return 1.0
        if progress <= 0.9:
            return 1.0 - (progress - 0.5) / 0.4 * 0.99
        return 0.01
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule should be one of {SCHEDULES}, got {schedule!r}")


def curve_loss(
    model: nn.Module,
    curve: Curve,
    x: torch.Tensor | Batch,
    y: torch.Tensor | None,
    t: torch.Tensor,
    *,
    fair: bool = False,
    quadrature: torch.Tensor | None = None,
    loss_fn=F.cross_entropy,
    forward: Callable | None = None,
) -> torch.Tensor:
    """The curve loss on one batch at the points ``t`` (differentiable w.r.t. ``curve.trainable()``).

    Parameters
    ----------
    model : nn.Module
        Evaluated with ``functional_call`` in its current mode (train mode for fitting).
    curve : Curve
    x, y : Tensor, or a Batch and None
        A batch: inputs and targets, or a :class:`landscape.batches.Batch` (``y`` None).
    t : Tensor[T]
        Positions; T > 1 evaluates them as a batch of points (vmap).
    fair : bool
        Weight each t by ``||phi'(t)||`` over its mean on ``quadrature``.
    quadrature : Tensor[Q], optional
        The fixed grid of the fair loss (default 64 midpoints).
    loss_fn : callable, str or Metric
        ``fn(output, target)`` averaging over the batch (default cross-entropy), or a metric
        name / Metric (:func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Returns
    -------
    Tensor
        Scalar: ``mean_t L(phi(t)) [w(t)]``.
    """
    dtype = next((v.dtype for v in curve.start.values() if v.is_floating_point()), torch.float32)
    tensors = curve.tensors_at(t, dtype)
    for e in curve.layout:
        # buffers take no gradient, and BatchNorm updates them (num_batches_tracked included)
        # in place: give it real copies, never views of the endpoints' tensors
        if not e.is_parameter:
            tensors[e.name] = tensors[e.name].detach().clone()
    if isinstance(x, Batch):
        if y is not None:
            raise ValueError("curve_loss takes a Batch with y=None (the targets are the batch's)")
        batch = x
    else:
        batch = Batch((x,), {}, y, int(x.shape[0]), (x, y))
    lossfn = resolve_loss(loss_fn)
    if t.numel() == 1:
        out = call_model(model, {n: v[0] for n, v in tensors.items()}, batch, forward)[None]
    else:
        out = vmap(lambda p: call_model(model, p, batch, forward), randomness="different")(tensors)
    losses = torch.stack([lossfn(o, batch) for o in out])
    if not fair:
        return losses.mean()
    gram = curve.gram()
    if quadrature is None:
        quadrature = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
    w = curve.speed(t, gram) / curve.speed(quadrature.to(t.device), gram).mean()
    return (losses * w.to(losses.dtype)).mean()


def curve_weight_decay(curve: Curve, t: torch.Tensor, weight_decay: float, on: str = "point") -> torch.Tensor:
    """The L2 penalty of curve training (differentiable w.r.t. the trained control points).

    .. math::

        \\text{point:}\\quad \\frac{\\lambda}{2}\\, \\frac{1}{T} \\sum_{t} \\lVert \\phi_p(t) \\rVert^2
        \\qquad
        \\text{bends:}\\quad \\frac{\\lambda}{2} \\sum_{j \\text{ trained}} \\lVert w_{j,p} \\rVert^2

    ``"point"`` is dnn-mode-connectivity's ``l2_regularizer``: the squared norm of the
    curve's point at the sampled ``t`` (averaged over the ``T`` values of ``t`` like the
    loss), over the parameters (weights and biases of every layer, BatchNorm's scale and
    shift included; running statistics not). Its gradient reaches every control point
    ``w_j`` with weight ``c_j(t)``. ``"bends"`` penalises the trained control points
    themselves (the bends, and the endpoints when they are trained), independently of
    ``t``.

    Parameters
    ----------
    curve : Curve
    t : Tensor[T]
        The positions sampled for this minibatch.
    weight_decay : float
        ``lambda``.
    on : {"point", "bends"}

    Returns
    -------
    Tensor
        Scalar, in the dtype of the curve's weights.
    """
    if on not in WEIGHT_DECAY_ON:
        raise ValueError(f"weight_decay_on should be one of {WEIGHT_DECAY_ON}, got {on!r}")
    mask = curve.param_mask.to(curve.bends.device)
    if on == "bends":
        return 0.5 * weight_decay * sum(w[..., mask].pow(2).sum() for w in curve.trainable())
    B = curve.basis()
    c = curve.coefficients(t.to(torch.float64)).to(B.dtype)
    return 0.5 * weight_decay * (c @ B)[:, mask].pow(2).sum(1).mean()


@dataclass
class FitResult:
    """Outcome of :func:`fit_curve`: the trained curve and the per-epoch history."""

    curve: Curve
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def fit_curve(
    model: nn.Module,
    curve: Curve,
    data,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    weight_decay_on: str = "point",
    schedule: str = "garipov",
    lr_update: str = "epoch",
    t_per_batch: int = 1,
    fair: bool = False,
    fix_start: bool = True,
    fix_end: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, list[dict]], None] | None = None,
    loss=None,
    forward: Callable | None = None,
) -> FitResult:
    """Train the bends of ``curve`` so that the loss stays low all along it.

    Parameters
    ----------
    model : nn.Module
        Structure of the network (a private copy is trained in train mode; the user's
        module is not modified).
    curve : Curve
        Its ``bends`` (and endpoints not fixed) are updated in place. ``curve.n_bends`` is
        dnn-mode-connectivity's ``num_bends`` minus 2 (its default 3 is one bend).
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Training set: in memory (and a Dataset) shuffled every epoch with ``seed``; a
        loader's own batches in its order (:class:`landscape.train.TrainBatches`). Resuming
        is exact when the data's order is (in memory always; a loader that shuffles draws
        its own order).
    epochs, batch_size, lr, momentum : SGD settings.
    weight_decay : float
        ``lambda`` of the L2 penalty (:func:`curve_weight_decay`).
    weight_decay_on : {"point", "bends"}
        ``"point"`` (default, dnn-mode-connectivity's ``l2_regularizer``):
        :math:`\\frac{\\lambda}{2}\\lVert\\phi(t)\\rVert^2` at the sampled ``t``;
        ``"bends"``: :math:`\\frac{\\lambda}{2}\\lVert\\theta\\rVert^2` on the trained control points.
    schedule : {"garipov", "cosine", "constant"}
        Learning-rate schedule over the epochs (:func:`learning_rate_factor` ``f``).
    lr_update : {"epoch", "batch"}
        When the schedule is read. ``"epoch"`` (default, as dnn-mode-connectivity's
        ``train.py`` does): epoch ``e = 1..E`` runs at ``lr * f(e / E)``, fixed for the
        epoch, so the first epoch already runs at ``f(1 / E)``. ``"batch"``: batch ``i`` of
        ``n`` in epoch ``e`` runs at ``lr * f((e - 1 + i / n) / E)``, a ramp that starts at
        ``f(0)`` and lags the epoch rule by one epoch.
    t_per_batch : int
        Positions sampled per minibatch (1 as in the paper; more are evaluated as a batch).
    fair : bool
        Arc-length weighted loss (see module docs).
    fix_start, fix_end : bool
        Keep the endpoint fixed (default, as dnn-mode-connectivity's usage with
        ``--fix_start --fix_end``), or train it with the bends
        (:meth:`Curve.release_endpoints`; the trained endpoint is written back into
        ``curve.start`` / ``curve.end`` at the end). Running statistics are never trained.
    checkpoint : path, optional
        The curve, optimizer state and history are saved there after every epoch;
        ``resume=True`` continues from it when it was made with the same settings, curve
        kind, bends and endpoints (else :class:`~landscape.io.ResultFileError`).
    force : bool
        Overwrite an existing checkpoint when not resuming.
    on_epoch : callable, optional
        ``on_epoch(epoch, history)`` after every epoch (after the checkpoint is saved).
    loss : callable, str or Metric, optional
        The loss along the curve: default cross-entropy; a callable ``fn(output, target)``
        averaging over its batch, or a metric name / Metric such as ``"token_loss"``
        (:func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Returns
    -------
    FitResult
    """
    _check_fit_arguments(curve, schedule, weight_decay_on, lr_update, t_per_batch, epochs, batch_size)
    t0 = time.perf_counter()
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_fit_memory(model, data, curve, fix_start, fix_end, t_per_batch, device)
    lossfn = resolve_loss(loss)
    dtype = next((v.dtype for v in curve.start.values() if v.is_floating_point()), torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    batches = TrainBatches(data, batch_size, generator=gen, device=device, dtype=dtype)
    work, mask, opt = _training_state(model, curve, device, fix_start, fix_end, lr, momentum)
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
    settings["weight_decay_on"] = weight_decay_on
    settings.update(schedule=schedule, lr_update=lr_update, t_per_batch=t_per_batch, fair=fair, seed=seed)
    settings.update(fix_start=bool(fix_start), fix_end=bool(fix_end))
    history, first_epoch = _resume_fit(checkpoint, model, curve, opt, settings, resume=resume, force=force)
    saved = {"history": history, "settings": settings}  # with every checkpoint
    _replay_epochs(batches, gen, first_epoch, t_per_batch)
    bar = _bar(epochs, first_epoch, progress)
    try:
        for epoch in range(first_epoch, epochs):
            mean, factor = _train_epoch(
                work, curve, batches, opt, mask, gen, epoch, settings, loss_fn=lossfn, forward=forward
            )
            history.append({"epoch": epoch + 1, "loss": mean, "lr": lr * factor})
            if checkpoint is not None:
                curve.save(checkpoint, force=True, epoch=epoch + 1, optimizer=opt.state_dict(), **saved)
            bar.set_postfix(loss=f"{mean:.4f}")
            bar.update(1)
            if on_epoch is not None:
                on_epoch(epoch + 1, history)
    finally:
        bar.close()
        curve.fix_endpoints()
    curve.bends.grad = None
    return FitResult(curve=curve, history=history, seconds=time.perf_counter() - t0, resumed_from=first_epoch)


def _check_fit_arguments(
    curve: Curve, schedule: str, weight_decay_on: str, lr_update: str, t_per_batch: int, epochs, batch_size
) -> None:
    """One ``ValueError`` line for each setting of :func:`fit_curve` outside its range."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule should be one of {SCHEDULES}, got {schedule!r}")
    if weight_decay_on not in WEIGHT_DECAY_ON:
        raise ValueError(f"weight_decay_on should be one of {WEIGHT_DECAY_ON}, got {weight_decay_on!r}")
    if lr_update not in LR_UPDATES:
        raise ValueError(f"lr_update should be one of {LR_UPDATES}, got {lr_update!r}")
    if t_per_batch < 1:
        raise ValueError(f"t_per_batch should be at least 1, got {t_per_batch}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} should be a positive integer, got {value!r} (a curve needs training to be fitted)"
            )
    if curve.n_bends == 0:
        raise ValueError("a curve with no bends has nothing to train")


def _check_fit_memory(model, data, curve: Curve, fix_start: bool, fix_end: bool, t_per_batch: int, device) -> None:
    """The up-front memory check of :func:`fit_curve` (:func:`landscape.budget.check_training`)."""
    # The user's model (held) and its private training copy, the n_bends + 2 control points,
    # the gradients and momentum of the trained ones (bends and released endpoints), and the
    # t_per_batch points phi(t) of a step.
    trained = curve.n_bends + (not fix_start) + (not fix_end)
    copies = 2 + (curve.n_bends + 2) + 2 * trained + t_per_batch
    check_training(model, data, "curve fit", copies=copies, device=device)


def _training_state(
    model: nn.Module, curve: Curve, device: torch.device, fix_start: bool, fix_end: bool, lr: float, momentum: float
) -> tuple[nn.Module, torch.Tensor, torch.optim.Optimizer]:
    """``(work, mask, opt)`` of a fit: a private copy of ``model`` in train mode with frozen
    parameters, the mask of ``curve``'s trained entries (running statistics are not) and SGD
    on ``curve.trainable()``; ``curve`` moves to ``device`` with its trained endpoints released."""
    work = copy.deepcopy(model).to(device).train()
    for p in work.parameters():
        p.requires_grad_(False)
    curve.to(device)
    curve.release_endpoints(start=not fix_start, end=not fix_end)
    mask = curve.param_mask.to(device)
    opt = sgd(curve.trainable(), lr, momentum)  # lr and momentum checked in one line
    return work, mask, opt


def _replay_epochs(batches: TrainBatches, gen: torch.Generator, epochs: int, t_per_batch: int) -> None:
    """Draw the random stream of ``epochs`` finished epochs (their shuffles and their ``t``), so
    that a resumed fit continues as the uninterrupted one would."""
    steps_per_epoch = batches.steps_per_epoch()
    for _ in range(epochs):
        batches.skip_epoch()
        for _ in range(steps_per_epoch):
            torch.rand(t_per_batch, generator=gen, dtype=torch.float64)


def _train_epoch(
    work: nn.Module,
    curve: Curve,
    batches: TrainBatches,
    opt: torch.optim.Optimizer,
    mask: torch.Tensor,
    gen: torch.Generator,
    epoch: int,
    settings: dict,
    *,
    loss_fn: Callable,
    forward: Callable | None,
) -> tuple[float, float]:
    """One epoch of :func:`fit_curve` (``epoch`` counts from 0; ``settings`` as the fit records
    them): a step per minibatch at ``t_per_batch`` fresh ``t`` drawn from ``gen``. Returns the
    epoch's mean loss (weighted by batch size) and the learning-rate factor of its last step."""
    epochs, lr, schedule, lr_update = (settings[k] for k in ("epochs", "lr", "schedule", "lr_update"))
    weight_decay, weight_decay_on = settings["weight_decay"], settings["weight_decay_on"]
    device = mask.device
    total, count = 0.0, 0
    steps_per_epoch = batches.steps_per_epoch()
    for step, batch in zip(range(steps_per_epoch), batches.epoch()):
        if lr_update == "epoch":  # epoch index e = epoch + 1 in 1..E
            factor = learning_rate_factor(schedule, (epoch + 1) / epochs)
        else:
            factor = learning_rate_factor(schedule, (epoch + step / steps_per_epoch) / epochs)
        for g in opt.param_groups:
            g["lr"] = lr * factor
        t = torch.rand(settings["t_per_batch"], generator=gen, dtype=torch.float64).to(device)
        value = curve_loss(work, curve, batch, None, t, fair=settings["fair"], loss_fn=loss_fn, forward=forward)
        penalty = curve_weight_decay(curve, t, weight_decay, weight_decay_on) if weight_decay else 0.0
        opt.zero_grad(set_to_none=True)
        (value + penalty).backward()
        for w in curve.trainable():  # running statistics are not trained
            w.grad.mul_(mask.to(w.dtype))
        opt.step()
        total += float(value.detach()) * batch.count
        count += batch.count
    return total / count, factor


def _resume_fit(checkpoint, model, curve: Curve, opt, settings: dict, *, resume: bool, force: bool):
    """``(history, first epoch)`` of a fit: an earlier run's, loaded into ``curve`` and ``opt``
    from ``checkpoint`` with ``resume``, after checking that it was made with the same
    ``settings``, curve kind, bends and endpoints (the resume rule of every landscape file:
    what defines the run must be equal, :func:`landscape.io.check_compatible`)."""
    if checkpoint is None or not os.path.exists(checkpoint):
        return [], 0
    if not resume:
        if force:
            return [], 0
        raise FileExistsError(
            f"'{os.fspath(checkpoint)}' already exists; pass resume=True (CLI: --resume) to continue it "
            "or force=True (--force)"
        )
    from ..io import check_compatible

    saved, state = load_curve(checkpoint, model)

    def defining(c: Curve, s: dict) -> dict:
        ends = {"start-sha256": c.origin_sha256["start"], "end-sha256": c.origin_sha256["end"]}
        return {**s, "curve-kind": c.kind, "n-bends": c.n_bends, **ends}

    old_settings = state.get("settings")
    if old_settings is not None:  # files of an interrupted fit always have them
        check_compatible(defining(saved, old_settings), defining(curve, settings), (), path=checkpoint)
    with torch.no_grad():
        curve.bends.copy_(saved.bends.to(curve.bends.device))
        for name, w in curve.free_ends.items():  # endpoints trained by the interrupted run
            w.copy_((saved.start if name == "start" else saved.end).flatten().to(w.device, w.dtype))
    opt.load_state_dict(state["optimizer"])
    return list(state.get("history", [])), int(state.get("epoch", 0))


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="fit curve", unit="epoch", leave=False)
