"""Grids of merges as point sets.

A :class:`MergeGrid` is the point set of one merge method over a grid of its parameters,
with the axes that label its cells. Merges that are linear in the checkpoints are written as
coefficients over the basis of the checkpoints themselves, so the engine evaluates many of
them per pass:

=====================  ===============================  ========================================
method                 basis                            coefficients of a cell
=====================  ===============================  ========================================
task arithmetic line   base, ft_1..ft_n                 (1 - n lambda, lambda, ..., lambda)
task arithmetic plane  base, ft_1, ft_2                 (1 - l1 - l2, l1, l2)
WiSE-FT                zero-shot, fine-tuned            (1 - alpha, alpha)
soups                  ingredients                      1/|S| on the members of soup S
TIES, DARE             base, tau_m of each density/p/   (1, 0, .., lambda, .., 0): lambda stays
                       seed (merged task vectors)       linear, the trimming/dropping is not
SLERP                  the merged points themselves     identity rows (explicit points)
=====================  ===============================  ========================================

Task arithmetic (Ilharco et al., 2023): :math:`\\theta = \\theta_{base} + \\lambda \\sum_i \\tau_i`;
WiSE-FT (Wortsman et al., 2022): :math:`\\theta_\\alpha = (1-\\alpha)\\theta_{zs} + \\alpha\\theta_{ft}`;
a uniform soup (Wortsman et al., 2022) is the mean of its ingredients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pointset import PointSet
from ..weights import Weights
from .methods import SLERP_THRESHOLD, dare_delta, slerp_merge, ties_delta
from .vectors import check_same_layout, from_entries

__all__ = [
    "METHODS",
    "MergeGrid",
    "dare_grid",
    "slerp_grid",
    "soup_grid",
    "task_arithmetic_grid",
    "task_arithmetic_plane",
    "ties_grid",
    "wise_ft_grid",
]

METHODS = ("task-arithmetic", "ties", "dare", "slerp", "soup", "greedy-soup", "wise-ft")
"""The merge methods, as the ``method`` attribute of a ``merge`` file names them."""


@dataclass
class MergeGrid:
    """The points of one merge method over a grid of its parameters.

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    points : PointSet
        K points, C order over the axes.
    axes : list of (str, ndarray)
        The grid's axes in order (``"lambda"``, ``"density"``, ``"p"``, ``"seed"``, ``"t"``,
        ``"alpha"``; ``"row"`` for soups, labelled by ``rows``).
    options : dict
        The method's settings (``scope``, ``combine``, ``threshold``...).
    rows : list of str, optional
        Labels of the cells of a ``"row"`` axis (soups: the ingredients, then the soups).
    members : dict of str to list of int, optional
        Soups: the ingredients (indices) of each soup row.
    """

    method: str
    points: PointSet
    axes: list[tuple[str, np.ndarray]]
    options: dict[str, Any] = field(default_factory=dict)
    rows: list[str] | None = None
    members: dict[str, list[int]] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.axes)

    def __post_init__(self) -> None:
        if int(np.prod(self.shape)) != self.points.K:
            raise ValueError(f"a merge grid of shape {self.shape} holds {self.points.K} points")


def _values(name: str, values, *, low: float | None = None, high: float | None = None) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"{name} values {v.tolist()[:8]} should be finite numbers, at least one")
    if low is not None and (v < low).any():
        raise ValueError(f"{name} values {v.tolist()[:8]} should be >= {low}")
    if high is not None and (v > high).any():
        raise ValueError(f"{name} values {v.tolist()[:8]} should be <= {high}")
    return v


def _fine_tunes(base: Weights, finetuned: Sequence[Weights]) -> list[Weights]:
    finetuned = list(finetuned)
    if not finetuned:
        raise ValueError("a merge needs at least one fine-tuned checkpoint, got none")
    check_same_layout(base, finetuned)
    return finetuned


def task_arithmetic_grid(base: Weights, finetuned: Sequence[Weights], lambdas) -> MergeGrid:
    """Task arithmetic along the scale: :math:`\\theta_{base} + \\lambda\\sum_i\\tau_i` at every
    ``lambdas`` value, as coefficients ``(1 - n lambda, lambda, ..., lambda)`` over
    ``[base, ft_1..ft_n]`` (``lambda = 0`` is the base, bit for bit).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.merge import task_arithmetic_grid
    >>> w = [ls.Weights.from_module(torch.nn.Linear(2, 2)) for _ in range(3)]
    >>> task_arithmetic_grid(w[0], w[1:], [0.0, 0.5]).points.coeffs.tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    """
    finetuned = _fine_tunes(base, finetuned)
    lam = _values("lambda", lambdas)
    n = len(finetuned)
    C = np.zeros((len(lam), n + 1))
    C[:, 0] = 1.0 - n * lam
    C[:, 1:] = lam[:, None]
    names = ["base", *[f"ft{i}" for i in range(n)]]
    return MergeGrid("task-arithmetic", PointSet.from_weights([base, *finetuned], C, names=names), [("lambda", lam)])


def task_arithmetic_plane(base: Weights, finetuned: Sequence[Weights], lambdas_a, lambdas_b) -> MergeGrid:
    """The lambda-plane of two task vectors: cell (i, j) is
    :math:`\\theta_{base} + a_i\\tau_1 + b_j\\tau_2`, coefficients ``(1 - a - b, a, b)``."""
    finetuned = _fine_tunes(base, finetuned)
    if len(finetuned) != 2:
        raise ValueError(f"a lambda-plane needs exactly 2 fine-tuned checkpoints, got {len(finetuned)}")
    a, b = _values("lambda_a", lambdas_a), _values("lambda_b", lambdas_b)
    A, B = np.meshgrid(a, b, indexing="ij")
    C = np.stack([1.0 - A.ravel() - B.ravel(), A.ravel(), B.ravel()], axis=1)
    points = PointSet.from_weights([base, *finetuned], C, names=["base", "ft0", "ft1"])
    return MergeGrid("task-arithmetic", points, [("lambda_a", a), ("lambda_b", b)])


def wise_ft_grid(zero_shot: Weights, finetuned: Weights, alphas) -> MergeGrid:
    """WiSE-FT's alpha line :math:`(1-\\alpha)\\theta_{zs} + \\alpha\\theta_{ft}` (``alpha = 0``
    the zero-shot model, 1 the fine-tune, bit for bit)."""
    check_same_layout(zero_shot, [finetuned])
    al = _values("alpha", alphas)
    C = np.stack([1.0 - al, al], axis=1)
    return MergeGrid(
        "wise-ft", PointSet.from_weights([zero_shot, finetuned], C, names=["zero-shot", "ft"]), [("alpha", al)]
    )


def _delta_weights(base: Weights, delta) -> Weights:
    return from_entries(base, delta)


def _delta_grid(base: Weights, deltas: list[Weights], lam: np.ndarray, names: list[str]) -> PointSet:
    """Points ``base + lambda * delta_m`` for every delta (outer) and lambda (inner)."""
    C = np.zeros((len(deltas) * len(lam), len(deltas) + 1))
    C[:, 0] = 1.0
    for m in range(len(deltas)):
        C[m * len(lam) : (m + 1) * len(lam), m + 1] = lam
    return PointSet.from_weights([base, *deltas], C, names=["base", *names])


def ties_grid(base: Weights, finetuned: Sequence[Weights], densities, lambdas, *, scope: str = "model") -> MergeGrid:
    """TIES-merging over densities (outer axis) and scales (inner axis); one merged task vector
    per density (:func:`~landscape.merge.methods.ties_delta`), held in the base's dtype."""
    finetuned = _fine_tunes(base, finetuned)
    dens = _values("density", densities, low=0.0, high=1.0)
    lam = _values("lambda", lambdas)
    deltas = [_delta_weights(base, ties_delta(base, finetuned, float(d), scope=scope)) for d in dens]
    points = _delta_grid(base, deltas, lam, [f"ties(d={d:g})" for d in dens])
    return MergeGrid("ties", points, [("density", dens), ("lambda", lam)], options={"scope": scope})


def dare_grid(
    base: Weights, finetuned: Sequence[Weights], ps, seeds: Sequence[int], lambdas, *, combine: str = "sum"
) -> MergeGrid:
    """DARE over drop probabilities, seeds and scales (axes in that order); one merged task
    vector per (p, seed) (:func:`~landscape.merge.methods.dare_delta`)."""
    finetuned = _fine_tunes(base, finetuned)
    pv = _values("p", ps, low=0.0, high=1.0)
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("DARE needs at least one seed, got none")
    lam = _values("lambda", lambdas)
    deltas, names = [], []
    for p in pv:
        for s in seed_list:
            deltas.append(_delta_weights(base, dare_delta(base, finetuned, float(p), s, combine=combine)))
            names.append(f"dare(p={p:g},seed={s})")
    points = _delta_grid(base, deltas, lam, names)
    axes = [("p", pv), ("seed", np.asarray(seed_list, dtype=np.float64)), ("lambda", lam)]
    return MergeGrid("dare", points, axes, options={"combine": combine})


def slerp_grid(a: Weights, b: Weights, ts, *, threshold: float = SLERP_THRESHOLD) -> MergeGrid:
    """SLERP between two checkpoints at every ``ts`` value: explicit points (identity rows),
    each built tensor by tensor in ``a``'s dtype (:func:`~landscape.merge.methods.slerp_merge`)."""
    tv = _values("t", ts)
    points = [slerp_merge(a, b, float(t), threshold=threshold) for t in tv]
    ps = PointSet.from_weights(points, np.eye(len(points)), names=[f"slerp(t={t:g})" for t in tv])
    return MergeGrid("slerp", ps, [("t", tv)], options={"threshold": float(threshold)})


def soup_grid(
    ingredients: Sequence[Weights],
    soups: dict[str, Sequence[int]] | None = None,
    *,
    names: Sequence[str] | None = None,
    method: str = "soup",
) -> MergeGrid:
    """Every ingredient alone, then each soup (uniform mean of its members), as rows over the
    basis of the ingredients; ``soups`` defaults to ``{"uniform": all}``."""
    ingredients = list(ingredients)
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient, got none")
    check_same_layout(ingredients[0], ingredients[1:], "ingredient")
    n = len(ingredients)
    names = list(names) if names is not None else [f"ingredient{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} ingredients")
    soups = dict(soups) if soups is not None else {"uniform": list(range(n))}
    rows = list(names)
    C = [np.eye(n)[i] for i in range(n)]
    for label, members in soups.items():
        members = sorted({int(m) for m in members})
        if not members or members[0] < 0 or members[-1] >= n:
            raise ValueError(f"soup {label!r} has members {members}; expected indices in 0..{n - 1}, at least one")
        row = np.zeros(n)
        row[members] = 1.0 / len(members)
        C.append(row)
        rows.append(label)
    points = PointSet.from_weights(ingredients, np.stack(C), names=names)
    members_of = {label: sorted({int(m) for m in v}) for label, v in soups.items()}
    return MergeGrid(method, points, [("row", np.arange(len(rows), dtype=np.float64))], rows=rows, members=members_of)
