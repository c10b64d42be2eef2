"""Ensemble evaluation: members as points of the engine, averaged probabilities.

The members (any number of weight points: FGE or SSE snapshots, independent networks, the
samples of a variational network) are a :class:`~landscape.pointset.PointSet` with
identity coefficients, evaluated by :class:`landscape.evaluate.Engine` many members per
pass; the ensemble's prediction is the mean of the members' softmax probabilities. Reported:
accuracy, negative log-likelihood and expected calibration error of the ensemble, of every
member, and of the ensemble of the first ``m`` members for every ``m`` (accuracy as members
are added).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..metrics import Metric

__all__ = ["EnsembleResult", "expected_calibration_error", "evaluate_ensemble"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: :math:`\\sum_b \\frac{|B_b|}{N} \\lvert \\mathrm{acc}(B_b) - \\mathrm{conf}(B_b) \\rvert`
    over ``bins`` equal-width bins of the top-class confidence in ``(0, 1]``.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 1]), bins=2), 4)
    0.0667
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


@dataclass
class EnsembleResult:
    """Ensemble metrics (accuracy as a fraction, NLL in nats, ECE)."""

    acc: float
    nll: float
    ece: float
    member_acc: np.ndarray  # [K]
    member_nll: np.ndarray  # [K]
    cumulative_acc: np.ndarray  # [K]: ensemble of the first m members
    cumulative_nll: np.ndarray  # [K]
    probabilities: np.ndarray  # [N, C], the ensemble's


def _scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    acc = float((p.argmax(-1) == y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())
    return acc, nll


class _Targets(Metric):
    """Records the targets of every batch the engine evaluates, per pass over the data (the
    value it reports is 0); the ensemble's scores need them in the order of the probabilities."""

    name = "__targets__"

    def __init__(self, src):
        self.src = src
        self.by_pass: dict[int, list[torch.Tensor]] = {}

    def batch_stats(self, out, batch):
        if batch.target is None:
            raise ValueError(
                "ensemble evaluation needs class targets but a batch has none (a dict batch needs 'labels', a "
                "tuple batch a second element)"
            )
        y = batch.target
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"ensemble evaluation needs one integer class label per sample, got {y.dtype} targets {list(y.shape)}"
            )
        self.by_pass.setdefault(self.src.passes, []).append(y.detach().cpu())
        return torch.zeros(out.shape[0], dtype=torch.float64, device=out.device), batch.count

    def latest(self) -> torch.Tensor:
        return torch.cat(self.by_pass[max(self.by_pass)])


def evaluate_ensemble(
    model: nn.Module,
    members,
    data,
    *,
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device=None,
    bins: int = 15,
    forward=None,
    progress: bool = False,
) -> EnsembleResult:
    """Evaluate an ensemble of weight points on ``data`` through the engine.

    Parameters
    ----------
    model : nn.Module
        The architecture (a classifier: outputs are logits).
    members : PointSet, or sequence of Weights
        The members; a sequence becomes a PointSet with identity coefficients.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Streamed through the engine; the targets come from its batches (in a fixed order:
        a loader that shuffles differently on every pass is refused).
    bn, bn_data, precision, device
        As for :func:`landscape.evaluate` (``bn="recompute"`` for snapshots whose BatchNorm
        statistics were not updated).
    bins : int
        Bins of the expected calibration error.
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Returns
    -------
    EnsembleResult
    """
    from ..batches import as_source
    from ..evaluate import Engine
    from ..pointset import PointSet

    pts = members if isinstance(members, PointSet) else PointSet.explicit(list(members))
    if pts.K < 1:
        raise ValueError("an ensemble needs at least one member")
    src = as_source(data)
    targets = _Targets(src)
    engine = Engine(model, pts, ("loss", "acc", targets), bn=bn, precision=precision, device=device, forward=forward)
    engine.keep_probabilities = True
    labels: list[torch.Tensor] = []

    def on_chunk(idx, vals):  # the targets of the pass that gave this chunk's probabilities
        y_chunk = targets.latest()
        if labels and not torch.equal(y_chunk, labels[0]):
            raise ValueError(
                "the data gave its samples in a different order on another pass (a DataLoader with "
                "shuffle=True?); evaluate ensembles on data in a fixed order"
            )
        labels.append(y_chunk)
        targets.by_pass.clear()

    engine.run(src, bn_data=bn_data, progress=progress, desc="ensemble", on_chunk=on_chunk)
    P = engine.probabilities  # [K, N, C]
    y = labels[0].numpy()
    member = [_scores(P[k], y) for k in range(pts.K)]
    cum = np.cumsum(P, axis=0) / np.arange(1, pts.K + 1)[:, None, None]
    cumulative = [_scores(cum[k], y) for k in range(pts.K)]
    ens = cum[-1]
    acc, nll = _scores(ens, y)
    return EnsembleResult(
        acc=acc,
        nll=nll,
        ece=expected_calibration_error(ens, y, bins),
        member_acc=np.array([a for a, _ in member]),
        member_nll=np.array([n for _, n in member]),
        cumulative_acc=np.array([a for a, _ in cumulative]),
        cumulative_nll=np.array([n for _, n in cumulative]),
        probabilities=ens,
    )
