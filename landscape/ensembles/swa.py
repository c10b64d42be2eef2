"""Stochastic Weight Averaging (Izmailov et al. 2018; seed 002) on ``torch.optim.swa_utils``.

From a trained checkpoint :math:`\\hat w`, SGD runs with a constant learning rate (through
``SWALR``) or the cyclical schedule of :func:`~landscape.ensembles.schedules.swa_lr` (which
``SWALR`` lacks), and ``AveragedModel`` averages the weights collected at the end of every
cycle (cyclical, :math:`\\operatorname{mod}(i, c) = 0`) or of every epoch (constant). The
seed's variant counts the starting weights in the average (:math:`w_{SWA} \\leftarrow \\hat
w`, :math:`n_{models} \\leftarrow 1`; ``include_start=True``). BatchNorm statistics of the
average are recomputed in one pass over the training batches
(:func:`landscape.bn.update_bn`: each batch weighted by its sample count, as the SWA
repository's ``bn_update``; or equally, as ``torch.optim.swa_utils.update_bn``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel

from ..bn import update_bn
from ..train import TrainBatches, loss_of, resolve_loss
from ..weights import Weights
from .schedules import swa_lr
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
    lr_min: float | None = None,
    cycle_length: int | None = None,
    include_start: bool = False,
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
        The "good enough" checkpoint :math:`\\hat w`.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Training data (also used for :func:`update_bn`); see
        :class:`landscape.train.TrainBatches`.
    epochs : int
        Passes over the data.
    lr : float
        The constant rate, or :math:`\\alpha_1` of the cyclical schedule.
    lr_min, cycle_length : float, int, optional
        Both given: the cyclical schedule from ``lr`` down to ``lr_min`` in cycles of
        ``cycle_length`` iterations, averaging at the end of every cycle. Neither: the
        constant schedule (``SWALR``), averaging at the end of every epoch.
    include_start : bool
        The seed's variant: the starting weights are the first model of the average.
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
    """
    if (lr_min is None) != (cycle_length is None):
        raise ValueError("give both lr_min and cycle_length (cyclical schedule) or neither (constant)")
    if cycle_length is not None and (int(cycle_length) != cycle_length or cycle_length < 1):
        raise ValueError(f"cycle_length should be a positive integer, got {cycle_length!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs should be a positive integer, got {epochs!r}")
    lossfn = resolve_loss(loss)
    net = copy.deepcopy(model)
    net.load_state_dict(start.state_dict())
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    averaged = AveragedModel(net)
    collected, snapshots = [], []
    if include_start:
        averaged.update_parameters(net)
        collected.append(0)
        if keep_snapshots:
            snapshots.append(Weights.from_module(net))
    cyclical = cycle_length is not None
    scheduler = None if cyclical else SWALR(opt, swa_lr=lr, anneal_epochs=1, anneal_strategy="linear")
    g = torch.Generator().manual_seed(seed)
    batches = TrainBatches.for_module(net, data, batch_size, g)
    lrs = []
    i = 0
    bar = _bar(int(epochs) * batches.steps_per_epoch() if batches.indexed else None, "SWA", progress)
    for _ in range(int(epochs)):
        for batch in batches.epoch():
            i += 1
            if cyclical:
                for group in opt.param_groups:
                    group["lr"] = swa_lr(i, lr, lr_min, cycle_length)
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad(set_to_none=True)
            loss_of(net, None, batch, lossfn, forward).backward()
            opt.step()
            if cyclical and i % cycle_length == 0:
                averaged.update_parameters(net)
                collected.append(i)
                if keep_snapshots:
                    snapshots.append(Weights.from_module(net))
            bar.update(1)
        if not cyclical:
            averaged.update_parameters(net)
            collected.append(i)
            if keep_snapshots:
                snapshots.append(Weights.from_module(net))
            scheduler.step()
    bar.close()
    update_bn(averaged.module, batches.src, batch_size=batch_size, forward=forward, weighting=bn_weighting)
    averaged.module.eval()
    net.eval()
    return SWAResult(
        weights=Weights.from_module(averaged.module),
        sgd=Weights.from_module(net),
        collected=collected,
        snapshots=snapshots,
        lr=np.asarray(lrs, dtype=np.float64),
    )


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
