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
from torch import nn

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
    progress: bool = False,
) -> EnsembleResult:
    """Evaluate an ensemble of weight points on ``data`` through the engine.

    Parameters
    ----------
    model : nn.Module
        The architecture (a classifier: outputs are logits).
    members : PointSet, or sequence of Weights
        The members; a sequence becomes a PointSet with identity coefficients.
    data : TensorData or (x, y)
    bn, bn_data, precision, device
        As for :func:`landscape.evaluate` (``bn="recompute"`` for snapshots whose BatchNorm
        statistics were not updated).
    bins : int
        Bins of the expected calibration error.

    Returns
    -------
    EnsembleResult
    """
    from ..data import as_xy
    from ..evaluate import Engine
    from ..pointset import PointSet

    pts = members if isinstance(members, PointSet) else PointSet.explicit(list(members))
    if pts.K < 1:
        raise ValueError("an ensemble needs at least one member")
    engine = Engine(model, pts, ("loss", "acc"), bn=bn, precision=precision, device=device)
    engine.keep_probabilities = True
    engine.run(data, bn_data=bn_data, progress=progress, desc="ensemble")
    P = engine.probabilities  # [K, N, C]
    y = as_xy(data)[1].cpu().numpy()
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
