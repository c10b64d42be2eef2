"""Snapshot ensembles (Huang et al. 2017; seed 004) and independent ensembles.

Snapshot ensembles train one network with cosine learning-rate restarts
(:func:`~landscape.ensembles.schedules.sse_lr`, ``M`` cycles over ``T`` iterations) and keep
the weights at the end of every cycle, where the rate is smallest. Independent ensembles
train ``n`` networks from different seeds; a budget is counted in epochs of training, as in
the seeds' Table 1 (``1B, 2B, 3B``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..budget import check_training
from ..pointset import PointSet
from ..train import TrainBatches, loss_of, resolve_loss, sgd, train_classifier
from ..weights import Weights
from .schedules import sse_lr

__all__ = ["Snapshots", "independent", "sse"]


@dataclass
class Snapshots:
    """Ensemble members and the training that produced them."""

    members: list[Weights]
    iterations: list[int]
    epochs: float  # the training budget spent, in epochs
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def points(self) -> PointSet:
        return PointSet.explicit(self.members)


def sse(
    model: nn.Module,
    data,
    *,
    epochs: int,
    cycles: int,
    lr: float,
    start: Weights | None = None,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    loss=None,
    forward=None,
    progress: bool = False,
) -> Snapshots:
    """Train with ``cycles`` cosine restarts over ``epochs`` and keep a snapshot per cycle.

    ``T = epochs * ceil(N / batch_size)`` iterations (a loader: ``epochs * len(loader)``);
    cycle length ``ceil(T / cycles)``; snapshots after iterations ``period, 2 period, ...``
    and ``T``. Starts from ``start`` (default: the module's current weights); the module
    itself is not modified. ``data`` is anything :class:`landscape.train.TrainBatches` reads;
    ``loss`` (default cross-entropy) and ``forward(model, batch)`` as for
    :func:`landscape.train.loss_of`.
    """
    if int(cycles) != cycles or cycles < 1 or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs and cycles should be positive integers, got {epochs!r}, {cycles!r}")
    check_training(model, data, f"SSE of {cycles} snapshots", copies=4 + int(cycles))
    lossfn = resolve_loss(loss)
    net = copy.deepcopy(model)
    if start is not None:
        net.load_state_dict(start.state_dict())
    net.train()
    opt = sgd(net.parameters(), lr, momentum, weight_decay)
    g = torch.Generator().manual_seed(seed)
    batches = TrainBatches.for_module(net, data, batch_size, g)
    per_epoch = batches.steps_per_epoch()
    T = int(epochs) * per_epoch
    if T < cycles:
        raise ValueError(f"{T} iterations cannot hold {cycles} cycles")
    period = math.ceil(T / cycles)
    lrs = np.zeros(T)
    members, iterations = [], []
    i = 0
    bar = _bar(T, "SSE", progress)
    for _ in range(int(epochs)):
        for _, batch in zip(range(per_epoch), batches.epoch()):
            i += 1
            rate = sse_lr(i, lr, T, cycles)
            for group in opt.param_groups:
                group["lr"] = rate
            lrs[i - 1] = rate
            opt.zero_grad(set_to_none=True)
            loss_of(net, None, batch, lossfn, forward).backward()
            opt.step()
            if i % period == 0 or i == T:
                net.eval()
                members.append(Weights.from_module(net))
                net.train()
                iterations.append(i)
            bar.update(1)
    bar.close()
    return Snapshots(members, iterations, float(epochs), lrs)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` iterations, or one that does nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it")


def independent(
    model: nn.Module,
    data,
    *,
    members: int,
    epochs: int,
    seeds=None,
    lr: float = 0.05,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    loss=None,
    forward=None,
) -> Snapshots:
    """``members`` networks trained from different seeds, ``epochs`` each (cosine schedule,
    :func:`landscape.train.train_classifier`); the budget is ``members * epochs`` epochs."""
    from ..train import fresh_copy

    if int(members) != members or members < 1:
        raise ValueError(f"members should be a positive integer, got {members!r}")
    seeds = list(range(int(members))) if seeds is None else list(seeds)
    if len(seeds) != members:
        raise ValueError(f"{len(seeds)} seeds for {members} members")
    out = []
    for s in seeds:
        net = fresh_copy(model, s)
        train_classifier(
            net,
            data,
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=s,
            loss=loss,
            forward=forward,
        )
        out.append(Weights.from_module(net))
    return Snapshots(out, [], float(members * epochs))
