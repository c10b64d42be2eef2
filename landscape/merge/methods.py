"""Merges that are not linear per coordinate: TIES, DARE and SLERP.

Each works tensor by tensor (:mod:`landscape.merge.vectors`) and returns either the merged
task vector (a delta, so that the scale :math:`\\lambda` stays linear and a grid over it is one
:class:`~landscape.pointset.PointSet`, see :mod:`landscape.merge.grids`) or the merged
:class:`~landscape.weights.Weights`.

TIES-merging (Yadav et al., 2023, "TIES-Merging: Resolving Interference When Merging Models"),
as the authors' ``ties_merging`` code does it:

1. *trim*: each task vector keeps the entries whose magnitude is at least its
   :math:`(d - \\lfloor d\\,k \\rfloor)`-th smallest magnitude (the top ``density`` k of its d
   entries, ties at the threshold kept), over the whole model (``scope="model"``, the paper)
   or per tensor (``scope="tensor"``, as mergekit);
2. *elect*: the sign of every coordinate is the sign of the sum of the trimmed values; a
   coordinate whose sum is exactly zero takes the majority sign (the sign of the sum of the
   elected signs over the scope);
3. *disjoint mean*: the mean of the trimmed values that are non-zero and agree with the
   elected sign (0 where none does); the merge is :math:`\\theta_{base} + \\lambda\\,\\tau_m`.

DARE (Yu et al., 2024, "Language Models are Super Mario"): every entry of every task vector is
dropped with probability ``p`` and the kept ones rescaled by :math:`1/(1-p)`, so the expected
task vector is unchanged; a seeded :class:`torch.Generator` (on the CPU, entries in layout
order, task vectors in order within each entry) makes a merge reproducible. The dropped
vectors are summed (``combine="sum"``: task arithmetic, the paper) or merged by TIES' sign
election and disjoint mean (``combine="ties"``: mergekit's ``dare_ties``).

Both sparsify the model's *parameters*; floating-point buffers (BatchNorm running statistics)
are not sparsified: their merged task vector is the mean of the task vectors (the fine-tunes'
mean statistics at :math:`\\lambda = 1`). Evaluate with ``bn="recompute"`` to recompute them
at every merge.

SLERP (spherical linear interpolation, Shoemake 1985; the per-tensor form of mergekit) between
two checkpoints ``a`` and ``b``, for every floating-point tensor flattened:

.. math::

    \\mathrm{slerp}(a, b; t) = \\frac{\\sin((1-t)\\Omega)}{\\sin\\Omega}\\,a
                             + \\frac{\\sin(t\\Omega)}{\\sin\\Omega}\\,b,
    \\qquad \\cos\\Omega = \\frac{a \\cdot b}{\\|a\\|\\,\\|b\\|},

with the angle taken from normalized copies in float64 and the coefficients applied to the
tensors themselves; when :math:`|\\cos\\Omega|` exceeds ``threshold`` (default 0.9995, mergekit's
``DOT_THRESHOLD``: angles under about 1.8 degrees, or nearly opposite tensors) or a tensor is
zero, the linear interpolation :math:`(1-t)a + tb` is used.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..weights import Weights
from .vectors import check_same_layout, entry_deltas, from_entries, is_merged_parameter, merged_entries, work_dtype

__all__ = [
    "SLERP_THRESHOLD",
    "dare_delta",
    "dare_merge",
    "slerp_coefficients",
    "slerp_merge",
    "ties_delta",
    "ties_merge",
]

SLERP_THRESHOLD = 0.9995
"""|cos angle| above which SLERP falls back to linear interpolation (mergekit's value)."""

_SCOPES = ("model", "tensor")
_COMBINES = ("sum", "ties")


def _check_density(density: float) -> float:
    d = float(density)
    if not (0.0 < d <= 1.0) or math.isnan(d):
        raise ValueError(f"TIES density {density!r} should be in (0, 1]: the fraction of each task vector kept")
    return d


def _check_drop(p: float) -> float:
    q = float(p)
    if not (0.0 <= q < 1.0) or math.isnan(q):
        raise ValueError(f"DARE drop probability {p!r} should be in [0, 1)")
    return q


def _check_fine_tunes(base: Weights, finetuned: Sequence[Weights]) -> list[Weights]:
    finetuned = list(finetuned)
    if not finetuned:
        raise ValueError("a merge needs at least one fine-tuned checkpoint, got none")
    check_same_layout(base, finetuned)
    return finetuned


def _threshold(magnitudes: torch.Tensor, density: float) -> float:
    """The smallest magnitude kept: the ``(d - floor(d * density))``-th smallest (all kept
    when that rank is 0)."""
    d = magnitudes.numel()
    k = d - int(d * density)
    if k < 1:
        return 0.0
    return float(torch.kthvalue(magnitudes.reshape(-1).cpu(), k).values)


def _model_thresholds(base: Weights, finetuned: list[Weights], density: float) -> list[float]:
    """Per task vector, the magnitude threshold over all merged parameters (one concatenated
    magnitude vector in memory at a time)."""
    out = []
    for w in finetuned:
        mags = [
            (w[e.name].to(work_dtype(e.dtype)) - base[e.name].to(work_dtype(e.dtype))).abs().reshape(-1).cpu()
            for e in base.layout.flat_entries()
            if is_merged_parameter(e)
        ]
        out.append(_threshold(torch.cat(mags), density) if mags else 0.0)
    return out


def _elect(values: list[torch.Tensor]) -> torch.Tensor:
    """Sign per coordinate of the sum of ``values`` (0 where it is exactly 0)."""
    return torch.sign(torch.stack(values).sum(0))


def _disjoint_mean(values: list[torch.Tensor], sign: torch.Tensor) -> torch.Tensor:
    """Mean of the non-zero values that agree with ``sign`` (0 where none does)."""
    stack = torch.stack(values)
    agree = torch.where(sign > 0, stack > 0, stack < 0)
    count = agree.sum(0).clamp(min=1).to(stack.dtype)
    return (stack * agree).sum(0) / count


def _majority(signs: list[torch.Tensor]) -> float:
    total = sum(float(s.sum()) for s in signs)
    return 1.0 if total >= 0 else -1.0


def _sign_merge(trimmed: OrderedDict, scope: str) -> OrderedDict:
    """TIES steps 2 and 3 over ``{name: [values of each task]}``: elect, fill zero signs with
    the majority sign of the scope, disjoint mean."""
    signs = {n: _elect(v) for n, v in trimmed.items()}
    out = OrderedDict()
    whole = _majority(list(signs.values())) if scope == "model" else None
    for n, v in trimmed.items():
        s = signs[n]
        majority = whole if whole is not None else _majority([s])
        s = torch.where(s == 0, torch.full_like(s, majority), s)
        out[n] = _disjoint_mean(v, s)
    return out


def ties_delta(
    base: Weights, finetuned: Sequence[Weights], density: float, *, scope: str = "model"
) -> OrderedDict[str, torch.Tensor]:
    """The TIES-merged task vector :math:`\\tau_m` (see the module docstring).

    Parameters
    ----------
    base : Weights
        The pre-trained model the fine-tunes started from.
    finetuned : sequence of Weights
        n fine-tuned checkpoints of the base's layout.
    density : float in (0, 1]
        Fraction k of each task vector's entries kept by magnitude (the paper's top-k%).
    scope : {"model", "tensor"}
        Magnitude threshold over the whole task vector (the paper) or per tensor (mergekit).

    Returns
    -------
    OrderedDict of str to Tensor
        The merged delta of every floating-point entry (:func:`~landscape.merge.vectors.work_dtype`).
    """
    density = _check_density(density)
    if scope not in _SCOPES:
        raise ValueError(f"TIES scope {scope!r}; expected one of {list(_SCOPES)}")
    finetuned = _check_fine_tunes(base, finetuned)
    thresholds = _model_thresholds(base, finetuned, density) if scope == "model" else None
    trimmed: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
    buffers: dict[str, torch.Tensor] = {}
    for e, taus in entry_deltas(base, finetuned):
        if not is_merged_parameter(e):
            buffers[e.name] = torch.stack(taus).mean(0)
            continue
        ths = thresholds if thresholds is not None else [_threshold(t.abs(), density) for t in taus]
        trimmed[e.name] = [t * (t.abs() >= th) for t, th in zip(taus, ths, strict=True)]
    merged = _sign_merge(trimmed, scope)
    return OrderedDict((e.name, merged.get(e.name, buffers.get(e.name))) for e in base.layout.flat_entries())


def ties_merge(
    base: Weights, finetuned: Sequence[Weights], density: float, scale: float = 1.0, *, scope: str = "model"
) -> Weights:
    """:math:`\\theta_{base} + \\lambda\\,\\tau_m` with the TIES task vector of
    :func:`ties_delta` (``scale`` is :math:`\\lambda`), in the base's dtype.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.merge import ties_merge
    >>> _ = torch.manual_seed(0)
    >>> nets = [ls.Weights.from_module(torch.nn.Linear(4, 3)) for _ in range(3)]
    >>> merged = ties_merge(nets[0], nets[1:], density=0.2)
    >>> merged["weight"].shape
    torch.Size([3, 4])
    """
    return merged_entries(base, ties_delta(base, finetuned, density, scope=scope), float(scale))


def dare_delta(
    base: Weights, finetuned: Sequence[Weights], p: float, seed: int, *, combine: str = "sum"
) -> OrderedDict[str, torch.Tensor]:
    """The DARE-merged task vector: each task vector's parameter entries dropped with
    probability ``p`` and rescaled by :math:`1/(1-p)`, then summed (``combine="sum"``) or merged
    by TIES' sign election and disjoint mean (``combine="ties"``).

    Parameters
    ----------
    base : Weights
    finetuned : sequence of Weights
    p : float in [0, 1)
        Drop probability (the paper's drop rate).
    seed : int
        Seed of the CPU generator drawing the masks (entries in layout order, tasks in order).
    combine : {"sum", "ties"}

    Returns
    -------
    OrderedDict of str to Tensor
    """
    p = _check_drop(p)
    if combine not in _COMBINES:
        raise ValueError(f"DARE combine {combine!r}; expected one of {list(_COMBINES)}")
    finetuned = _check_fine_tunes(base, finetuned)
    g = torch.Generator().manual_seed(int(seed))
    dropped: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
    buffers: dict[str, torch.Tensor] = {}
    for e, taus in entry_deltas(base, finetuned):
        if not is_merged_parameter(e):
            buffers[e.name] = torch.stack(taus).mean(0)
            continue
        out = []
        for t in taus:
            keep = torch.rand(t.shape, generator=g, dtype=torch.float64) >= p
            out.append(t * keep.to(t.device) / (1.0 - p))
        dropped[e.name] = out
    if combine == "sum":
        merged = OrderedDict((n, torch.stack(v).sum(0)) for n, v in dropped.items())
    else:
        merged = _sign_merge(dropped, "model")
    return OrderedDict((e.name, merged.get(e.name, buffers.get(e.name))) for e in base.layout.flat_entries())


def dare_merge(
    base: Weights, finetuned: Sequence[Weights], p: float, seed: int, scale: float = 1.0, *, combine: str = "sum"
) -> Weights:
    """:math:`\\theta_{base} + \\lambda\\,\\tau_{DARE}` (:func:`dare_delta`), in the base's dtype."""
    return merged_entries(base, dare_delta(base, finetuned, p, seed, combine=combine), float(scale))


def slerp_coefficients(a: torch.Tensor, b: torch.Tensor, t: float, threshold: float = SLERP_THRESHOLD):
    """``(c_a, c_b, spherical)``: SLERP of the flattened tensors ``a`` and ``b`` at ``t`` is
    ``c_a * a + c_b * b``; ``spherical`` is False where the linear fallback applies (a zero
    tensor or :math:`|\\cos\\Omega|` > ``threshold``). The angle is computed in float64."""
    a64, b64 = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = float(a64.norm()), float(b64.norm())
    t = float(t)
    if na == 0.0 or nb == 0.0:
        return 1.0 - t, t, False
    dot = max(-1.0, min(1.0, float((a64 / na) @ (b64 / nb))))
    if abs(dot) > threshold:
        return 1.0 - t, t, False
    omega = math.acos(dot)
    s = math.sin(omega)
    return math.sin((1.0 - t) * omega) / s, math.sin(t * omega) / s, True


def slerp_merge(a: Weights, b: Weights, t: float, *, threshold: float = SLERP_THRESHOLD) -> Weights:
    """SLERP between two checkpoints, tensor by tensor (every floating-point entry, BatchNorm
    statistics included), in ``a``'s dtype; ``t = 0`` gives ``a``, ``t = 1`` gives ``b``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.merge import slerp_merge
    >>> a = ls.Weights.from_module(torch.nn.Linear(2, 2))
    >>> torch.equal(slerp_merge(a, a, 0.0)["weight"], a["weight"])
    True
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"SLERP threshold {threshold!r} should be in (0, 1]")
    check_same_layout(a, [b], "second checkpoint")
    out = {}
    for e in a.layout.flat_entries():
        x, y = a[e.name], b[e.name]
        dt = work_dtype(x.dtype)
        ca, cb, _ = slerp_coefficients(x, y, t, threshold)
        out[e.name] = ca * x.to(dt) + cb * y.to(dt)
    return from_entries(a, out)
