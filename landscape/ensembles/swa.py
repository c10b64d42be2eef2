"""Stochastic Weight Averaging (Izmailov et al. 2018; seed 002), as its repository trains.

By default :func:`swa` runs the SWA repository's procedure (``timgaripov/swa``, ``train.py``):
one SGD optimizer for the whole run, so the momentum buffers carry over from the pre-SWA
phase into the averaging phase; the rate of epoch :math:`e` follows the repository's
``schedule`` (:func:`~landscape.ensembles.schedules.swa_epoch_lr`: constant, a linear decay
to ``swa_lr`` between 50% and 90% of ``swa_start``, then ``swa_lr``), and the weights after
epochs ``swa_start``, ``swa_start + c``, ``swa_start + 2c``, ... (``c = swa_c_epochs``) are
averaged with equal weights (``AveragedModel``; the repository's ``moving_average`` with
:math:`1 / (n + 1)`). The first of them is the end of the pre-SWA phase (with
``swa_start=0``: the starting weights, :math:`w_{SWA} \\leftarrow \\hat w` as in the seed's
algorithm).

The library's earlier procedure stays as options: ``restart=True`` starts a fresh optimizer
for the averaging phase, ``lr_min`` and ``cycle_length`` give the paper's cyclical schedule
(:func:`~landscape.ensembles.schedules.swa_lr`, averaging at the end of every cycle), and
``include_start=False`` leaves the weights at ``swa_start`` out of the average.

BatchNorm statistics of the average are recomputed in one pass over the training batches
(:func:`landscape.bn.update_bn`: each batch weighted by its sample count, as the SWA
repository's ``bn_update``; or equally, as ``torch.optim.swa_utils.update_bn``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..bn import update_bn
from ..budget import check_training
from ..train import TrainBatches, loss_of, resolve_loss, sgd
from ..weights import Weights
from .schedules import swa_epoch_lr
from .schedules import swa_lr as swa_lr_cyclical
from .sse import _bar

__all__ = ["SWAResult", "swa", "update_bn"]


@dataclass
class SWAResult:
    """The SWA solution and what produced it.

    Attributes
    ----------
    weights : Weights
        The average (BatchNorm statistics updated when the model has BatchNorm).
    sgd : Weights
        The SGD weights at the end of the run.
    collected : list of int
        Iterations whose weights entered the average (0 = the start, with ``include_start``).
    snapshots : list of Weights
        The collected weights themselves (with ``keep_snapshots``).
    lr : ndarray[n]
        Learning rate at every iteration.
    """

    weights: Weights
    sgd: Weights
    collected: list[int]
    snapshots: list[Weights] = field(default_factory=list)
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))


def swa(
    model: nn.Module,
    start: Weights,
    data,
    *,
    epochs: int,
    lr: float,
    swa_lr: float | None = None,
    swa_start: int = 0,
    swa_c_epochs: int = 1,
    restart: bool = False,
    lr_min: float | None = None,
    cycle_length: int | None = None,
    include_start: bool | None = None,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    keep_snapshots: bool = False,
    loss=None,
    forward=None,
    bn_weighting: str = "samples",
    progress: bool = False,
) -> SWAResult:
    """Run SWA from ``start``.

    Parameters
    ----------
    model : nn.Module
        The architecture; a private copy is trained.
    start : Weights
        The weights the run starts from: an initialisation when ``swa_start`` epochs of
        pre-SWA training come first, or a trained checkpoint :math:`\\hat w` (``swa_start=0``).
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Training data (also used for :func:`~landscape.bn.update_bn`); see
        :class:`landscape.train.TrainBatches`.
    epochs : int
        Passes over the data in all (the repository's ``--epochs``), the pre-SWA phase
        included.
    lr : float
        The rate the pre-SWA phase starts at (the repository's ``--lr_init``).
    swa_lr : float, optional
        The constant rate of the averaging phase (the repository's ``--swa_lr``; with
        ``lr_min``, the cyclical schedule's highest rate). Default ``lr``.
    swa_start : int
        Epochs of pre-SWA training within this run (the repository's ``--swa_start``), with
        the repository's schedule from ``lr`` down to ``swa_lr``
        (:func:`~landscape.ensembles.schedules.swa_epoch_lr`). 0: ``start`` is already trained
        and every epoch runs at ``swa_lr``.
    swa_c_epochs : int
        Average the weights every ``swa_c_epochs`` epochs (the repository's
        ``--swa_c_epochs``): after epochs ``swa_start``, ``swa_start + c``, ...
    restart : bool
        The library's earlier procedure: a fresh SGD optimizer (momentum buffers zero) when
        averaging starts, instead of the repository's one optimizer throughout.
    lr_min, cycle_length : float, int, optional
        Both given: the averaging phase runs the paper's cyclical schedule from ``swa_lr``
        down to ``lr_min`` in cycles of ``cycle_length`` iterations, averaging at the end of
        every cycle (instead of every ``swa_c_epochs`` epochs).
    include_start : bool, optional
        Whether the weights at ``swa_start`` (the end of the pre-SWA phase; ``start`` itself
        when ``swa_start=0``) are the first model of the average. Default: yes, as the
        repository collects them, except with ``restart`` or the cyclical schedule (the
        library's earlier procedure, which averaged the iterates after them only).
    keep_snapshots : bool
        Also return the collected weights.
    loss : callable, str or Metric, optional
        The training loss (default cross-entropy; see :func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call (training and
        the BatchNorm update).
    bn_weighting : {"samples", "batches"}
        How :func:`~landscape.bn.update_bn` averages the batches' statistics: by their sample
        counts (``"samples"``, the SWA repository's ``bn_update``) or equally
        (``"batches"``, what ``torch.optim.swa_utils.update_bn`` computes).

    Returns
    -------
    SWAResult
        ``collected`` and ``lr`` count iterations from the start of the run (0: before the
        first step), the pre-SWA phase included.
    """
    _check_swa_arguments(epochs, swa_start, swa_c_epochs, lr_min, cycle_length)
    epochs, swa_start, c = int(epochs), int(swa_start), int(swa_c_epochs)
    swa_rate = float(lr if swa_lr is None else swa_lr)
    cyclical = cycle_length is not None
    if include_start is None:
        include_start = not (restart or cyclical)
    check_training(model, data, "SWA", copies=5)
    lossfn = resolve_loss(loss)
    net = copy.deepcopy(model)
    net.load_state_dict(start.state_dict())
    net.train()
    opt = sgd(net.parameters(), swa_epoch_lr(1, lr, swa_rate, swa_start), momentum, weight_decay)
    average = _Average(net, keep_snapshots)
    batches = TrainBatches.for_module(net, data, batch_size, torch.Generator().manual_seed(seed))
    lrs = []
    i = swa_start_iteration = 0  # iterations so far; the last one before averaging starts
    bar = _bar(epochs * batches.steps_per_epoch() if batches.indexed else None, "SWA", progress)
    for e in range(1, epochs + 1):  # epoch e; e - 1 epochs are done
        if e - 1 == swa_start:  # the averaging phase starts
            if restart and swa_start > 0:
                opt = sgd(net.parameters(), swa_rate, momentum, weight_decay)
            if include_start:
                average.collect(net, i)
        averaging = e > swa_start
        cycle = (swa_start_iteration, swa_rate, lr_min, cycle_length) if averaging and cyclical else None
        rate = swa_epoch_lr(e, lr, swa_rate, swa_start)
        i = _sgd_epoch(net, opt, batches, lossfn, forward, i, rate, cycle, average, lrs, bar)
        if e == swa_start:
            swa_start_iteration = i
        if averaging and not cyclical and (e - swa_start) % c == 0:
            average.collect(net, i)
    if epochs == swa_start and include_start:  # no averaging epoch: the end of the run alone
        average.collect(net, i)
    bar.close()
    if not average.collected:
        raise ValueError(_nothing_averaged(epochs - swa_start, c, cycle_length))
    update_bn(average.model.module, batches.src, batch_size=batch_size, forward=forward, weighting=bn_weighting)
    return average.result(net, lrs)


def _nothing_averaged(averaging_epochs: int, c: int, cycle_length: int | None) -> str:
    """The error of an SWA run that collected no weights: the settings that left none."""
    return (
        f"no weights were averaged: {averaging_epochs} averaging epoch(s) with swa_c_epochs={c}"
        + (f" and cycle_length={cycle_length} iterations" if cycle_length is not None else "")
        + " and include_start=False"
    )


def _check_swa_arguments(epochs, swa_start, swa_c_epochs, lr_min, cycle_length) -> None:
    """One ``ValueError`` line for each setting of :func:`swa` outside its range."""
    if (lr_min is None) != (cycle_length is None):
        raise ValueError("give both lr_min and cycle_length (cyclical schedule) or neither (constant)")
    if cycle_length is not None and (int(cycle_length) != cycle_length or cycle_length < 1):
        raise ValueError(f"cycle_length should be a positive integer, got {cycle_length!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs should be a positive integer, got {epochs!r}")
    if int(swa_start) != swa_start or not 0 <= swa_start <= epochs:
        raise ValueError(f"swa_start should be an integer number of epochs in [0, epochs={epochs}], got {swa_start!r}")
    if int(swa_c_epochs) != swa_c_epochs or swa_c_epochs < 1:
        raise ValueError(f"swa_c_epochs should be a positive integer, got {swa_c_epochs!r}")


class _Average:
    """The running average of the weights an SWA run collects (``torch.optim.swa_utils``'s
    :class:`AveragedModel`), the iterations they were collected at and, with ``keep``, the
    weights themselves."""

    def __init__(self, net: nn.Module, keep: bool):
        self.model = AveragedModel(net)
        self.keep = keep
        self.collected: list[int] = []
        self.snapshots: list[Weights] = []

    def collect(self, net: nn.Module, i: int) -> None:
        self.model.update_parameters(net)
        self.collected.append(i)
        if self.keep:
            self.snapshots.append(Weights.from_module(net))

    def result(self, net: nn.Module, lrs: list[float]) -> SWAResult:
        """The run's :class:`SWAResult` (both models left in eval mode); ``net`` holds the last
        SGD iterate, ``lrs`` the rate of every iteration."""
        self.model.module.eval()
        net.eval()
        return SWAResult(
            weights=Weights.from_module(self.model.module),
            sgd=Weights.from_module(net),
            collected=self.collected,
            snapshots=self.snapshots,
            lr=np.asarray(lrs, dtype=np.float64),
        )


def _sgd_epoch(net, opt, batches, loss_fn, forward, i: int, rate: float, cycle, average: _Average, lrs, bar) -> int:
    """One epoch of SWA's SGD from iteration ``i``; returns the iteration it ends at. Every step
    runs at ``rate``, or, with ``cycle = (first iteration, swa_lr, lr_min, cycle_length)`` of the
    averaging phase, at the cyclical rate of its iteration within that phase, the weights
    collected into ``average`` at the end of each cycle. Each step's rate is appended to ``lrs``."""
    for batch in batches.epoch():
        i += 1
        if cycle is not None:
            a = i - cycle[0]  # iterations of the averaging phase
            rate = swa_lr_cyclical(a, cycle[1], cycle[2], cycle[3])
        for group in opt.param_groups:
            group["lr"] = rate
        lrs.append(rate)
        opt.zero_grad(set_to_none=True)
        loss_of(net, None, batch, loss_fn, forward).backward()
        opt.step()
        if cycle is not None and a % cycle[3] == 0:
            average.collect(net, i)
        bar.update(1)
    return i


def swa_line(swa_weights: Weights, sgd_weights: Weights):
    """The line from :math:`w_{SWA}` toward :math:`w_{SGD}` in units of distance.

    ``point(x) = w_SWA + x (w_SGD - w_SWA) / ||w_SGD - w_SWA||`` (the norm over the
    parameters), so ``x = 0`` is the SWA solution and ``x = distance`` the SGD one: the
    axis of the "optima width" figure of seed 002. Evaluate it with
    :func:`landscape.surface.compute_surface` (:func:`swa_width` does).
    """
    from ..directions import Plane, target_direction

    d = target_direction(swa_weights, sgd_weights)
    mask = d.layout.parameter_mask()
    dist = float(d.flatten(torch.float64)[mask].norm())
    if dist == 0.0:
        raise ValueError("the SWA and SGD weights coincide; there is no line between them")
    unit = Weights({k: (v / dist if d.layout[k].flat else v) for k, v in d.tensors.items()}, d.layout)
    return Plane(
        basis=[swa_weights, unit],
        names=["w_swa", "unit_to_sgd"],
        kind="swa-width",
        to_coeffs=lambda x, y=None: np.stack([np.ones_like(x), x], 1),
        anchors=np.array([0.0, dist]),
        anchor_names=["SWA", "SGD"],
        attrs={"x-label": "distance from w_SWA toward w_SGD", "distance": dist},
    )


def swa_width(
    model: nn.Module,
    result: SWAResult,
    splits,
    *,
    weight_decay: float = 5e-4,
    points: int = 41,
    margin: float = 1.0,
    bn: str | None = None,
    bn_data=None,
    out=None,
    resume: bool = False,
    force: bool = False,
    attrs=None,
    progress: bool = False,
):
    """Loss and error along the line through the SWA and SGD solutions (seed 002's "width" figure).

    ``x`` runs from ``-margin * distance`` to ``(1 + margin) * distance``; metrics on every
    split: the L2-regularised cross-entropy (``loss+l2``, weight decay ``weight_decay``) and
    the error in %. BatchNorm is recomputed at every point when the model has it (``bn``
    overrides; ``bn_data`` defaults to the ``"train"`` split).

    Returns
    -------
    SurfaceResult
    """
    from ..bn import auto_mode
    from ..metrics import l2_regularized
    from ..surface import compute_surface

    line = swa_line(result.weights, result.sgd)
    dist = float(line.anchors[1])
    xs = np.linspace(-margin * dist, (1 + margin) * dist, int(points))
    xs = np.unique(np.concatenate([xs, line.anchors]))  # both solutions are grid points
    if bn is None:
        bn = auto_mode(model)
    if bn != "running" and bn_data is None:
        bn_data = dict(splits).get("train")
    return compute_surface(
        model,
        line,
        xs,
        splits=splits,
        metrics=[l2_regularized(weight_decay), "err"],
        bn=bn,
        bn_data=bn_data,
        out=out,
        resume=resume,
        force=force,
        attrs=attrs,
        progress=progress,
    )
