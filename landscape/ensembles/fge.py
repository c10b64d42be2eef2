"""Fast Geometric Ensembling (Garipov et al. 2018; seeds 000, 001, 004).

From a trained checkpoint, SGD runs with FGE's triangular cyclic learning rate
(:func:`~landscape.ensembles.schedules.fge_lr`, :math:`\\alpha_1 > \\alpha_2`, even cycle
length ``c``) and the weights are collected in the middle of every cycle,
:math:`\\operatorname{mod}(i, c) = c/2`, where the rate is at its minimum :math:`\\alpha_2`.
The snapshots are ensemble members (:class:`~landscape.pointset.PointSet` with identity
coefficients); their distance from the start is recorded as in the seeds' FGE figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..budget import check_training
from ..pointset import PointSet
from ..train import TrainBatches, loss_of, resolve_loss, sgd
from ..weights import Weights
from .schedules import fge_lr

__all__ = ["FGEResult", "fge"]


@dataclass
class FGEResult:
    """Snapshots of an FGE run.

    Attributes
    ----------
    snapshots : list of Weights
        The weights after iteration ``iterations[k]`` (mid-cycle).
    iterations : list of int
        1-based iteration of every snapshot: ``c/2, 3c/2, ...``.
    distance : list of float
        L2 distance of every snapshot's parameters from the start.
    lr : ndarray[n]
        The learning rate used at every iteration.
    loss : ndarray[n]
        The minibatch training loss at every iteration.
    """

    snapshots: list[Weights]
    iterations: list[int]
    distance: list[float]
    lr: np.ndarray
    loss: np.ndarray
    attrs: dict = field(default_factory=dict)

    def points(self) -> PointSet:
        """The snapshots as ensemble members (identity coefficients)."""
        return PointSet.explicit(self.snapshots, names=[f"iter{i}" for i in self.iterations])


def fge(
    model: nn.Module,
    start: Weights,
    data,
    *,
    cycles: int,
    cycle_length: int,
    alpha1: float,
    alpha2: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    loss=None,
    forward=None,
    progress: bool = False,
) -> FGEResult:
    """Run FGE from ``start`` and collect one snapshot per cycle.

    Parameters
    ----------
    model : nn.Module
        The architecture; a private copy is trained (the module is not modified).
    start : Weights
        The trained checkpoint FGE starts from.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Training data. In memory (and for a Dataset) minibatches are drawn from a seeded
        shuffle, epoch after epoch, a new one when fewer than ``batch_size`` samples are left;
        a loader's own batches are used in its order, pass after pass
        (:class:`landscape.train.TrainBatches`).
    cycles : int
        Number of cycles (= snapshots).
    cycle_length : int
        ``c``, in iterations (minibatches); even.
    alpha1, alpha2 : float
        Largest and smallest learning rate (``alpha1 > alpha2``).
    batch_size, momentum, weight_decay, seed
        SGD settings.
    loss : callable, str or Metric, optional
        The training loss (default cross-entropy; see :func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Returns
    -------
    FGEResult
    """
    import copy

    if int(cycles) != cycles or cycles < 1:
        raise ValueError(f"cycles should be a positive integer, got {cycles!r}")
    if int(cycle_length) != cycle_length or cycle_length < 2 or cycle_length % 2:
        raise ValueError(f"cycle_length should be an even integer >= 2, got {cycle_length!r}")
    if not alpha1 > alpha2 > 0:
        raise ValueError(f"FGE needs alpha1 > alpha2 > 0, got alpha1={alpha1}, alpha2={alpha2}")
    check_training(model, data, f"FGE of {cycles} snapshots", copies=4 + int(cycles))
    lossfn = resolve_loss(loss)
    net = copy.deepcopy(model)
    net.load_state_dict(start.state_dict())
    net.train()
    opt = sgd(net.parameters(), alpha1, momentum, weight_decay, what="alpha1")
    g = torch.Generator().manual_seed(seed)
    batches = TrainBatches.for_module(net, data, batch_size, g).stream()
    mask = start.layout.parameter_mask()
    w0 = start.flatten(torch.float64)[mask]
    n_iter = int(cycles) * int(cycle_length)
    lrs, losses = np.zeros(n_iter), np.zeros(n_iter)
    snapshots, iterations, distance = [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iter, desc="FGE", unit="it")
    for i in range(1, n_iter + 1):
        batch = next(batches)
        lr = fge_lr(i, alpha1, alpha2, cycle_length)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        value = loss_of(net, None, batch, lossfn, forward)
        value.backward()
        opt.step()
        lrs[i - 1], losses[i - 1] = lr, float(value.detach())
        if i % cycle_length == cycle_length // 2:
            w = Weights.from_module(net)
            snapshots.append(w)
            iterations.append(i)
            distance.append(float((w.flatten(torch.float64)[mask] - w0).norm()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    attrs = {
        "cycles": int(cycles),
        "cycle_length": int(cycle_length),
        "alpha1": float(alpha1),
        "alpha2": float(alpha2),
        "batch_size": int(batch_size),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "seed": int(seed),
    }
    return FGEResult(snapshots, iterations, distance, lrs, losses, attrs)
