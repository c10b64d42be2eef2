"""Curves evaluated along t (against the straight line) and the plane through a curve."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..directions import Plane, _three_point_frame, three_point_plane
from ..evaluate import describe_data
from ..pointset import PointSet
from ..surface import evaluate_grid
from .curve import Curve

__all__ = ["CurveProfile", "barrier", "curve_plane", "evaluate_curve", "path_statistics", "segment_lengths"]


def barrier(loss: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``(max loss along the path - mean of the endpoint losses, t of the maximum)``.

    A path with a NaN loss has no maximum: ``(nan, nan)`` (an infinite loss gives an
    infinite barrier at its t).
    """
    loss = np.asarray(loss, dtype=np.float64)
    if np.isnan(loss).any():
        return float("nan"), float("nan")
    i = int(np.argmax(loss))
    return float(loss[i] - 0.5 * (loss[0] + loss[-1])), float(t[i])


def segment_lengths(curve: Curve, t, chunk: int = 1 << 20) -> np.ndarray:
    """Distances between consecutive evaluated points, as dnn-mode-connectivity's
    ``eval_curve.py`` measures them (its ``dl``).

    .. math::

        dl_i = \\lVert \\phi_p(t_i) - \\phi_p(t_{i-1}) \\rVert, \\qquad dl_0 = 0

    over the parameters (every layer's weights and biases, BatchNorm's scale and shift; no
    running statistics), in float64 from the Gram matrix of the control points (taken
    relative to the start, in chunks of ``chunk`` entries, so no ``T x P`` array is made).

    Parameters
    ----------
    curve : Curve
    t : array-like[T]
        Increasing positions.

    Returns
    -------
    ndarray[2, T]
        Row 0 the curve, row 1 the straight line. A row's sum is the length of the polygon
        through the evaluated points: the exact length of a polygonal chain whose bends are
        on the grid (``t = j / (n_bends + 1)``), and for a Bezier curve a lower bound of its
        arc length that converges as the grid is refined.
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    with torch.no_grad():
        B = curve.basis()
        mask = curve.param_mask.to(B.device)
        J = B.shape[0]
        G = torch.zeros(J, J, dtype=torch.float64)
        P = B.shape[1]
        for lo in range(0, P, chunk):
            part = B[:, lo : lo + chunk][:, mask[lo : lo + chunk]].double()
            part = part - part[:1]  # relative to the start: no cancellation of large norms
            G += (part @ part.T).cpu()
    out = np.zeros((2, len(t)))
    for row, C in enumerate((np.asarray(curve.coefficients(t)), _line_coefficients(t, J))):
        d = np.diff(C, axis=0)
        out[row, 1:] = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", d, G.numpy(), d), 0.0, None))
    return out


def _line_coefficients(t: np.ndarray, J: int) -> np.ndarray:
    C = np.zeros((len(t), J))
    C[:, 0], C[:, -1] = 1.0 - t, t
    return C


def path_statistics(values, dl, t) -> dict[str, float]:
    """Summary of one metric along a path, the columns of dnn-mode-connectivity's
    ``eval_curve.py`` table, and the plain integral over t.

    .. math::

        \\text{int} = \\frac{\\sum_i \\tfrac12 (v_{i-1} + v_i)\\, dl_i}{\\sum_i dl_i},
        \\qquad
        \\text{int\\_t} = \\sum_i \\tfrac12 (v_{i-1} + v_i)\\, (t_i - t_{i-1})

    Parameters
    ----------
    values : array-like[T]
        The metric at the positions ``t``.
    dl : array-like[T]
        :func:`segment_lengths` of the path (``dl[0]`` unused).
    t : array-like[T]

    Returns
    -------
    dict
        ``start``, ``end``, ``min``, ``max``, ``avg`` (mean over the grid), ``int``
        (trapezoid over arc length, divided by the length: DMC's ``int``) and ``int_t``
        (trapezoid over ``t`` in [0, 1]); NaN where a value is NaN.
    """
    v, dl, t = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (values, dl, t))
    mid = 0.5 * (v[:-1] + v[1:])
    length = dl[1:].sum()
    return {
        "start": float(v[0]),
        "end": float(v[-1]),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
        "avg": float(np.mean(v)),
        "int": float((mid * dl[1:]).sum() / length) if length > 0 else float("nan"),
        "int_t": float((mid * np.diff(t)).sum()),
    }


@dataclass
class CurveProfile:
    """Metrics along t for the curve (row 0) and the straight line (row 1).

    ``metrics[f"{split}_{m}"]`` is ``ndarray[2, T]``; ``barriers[row][split]`` is the
    height of the loss barrier and ``barriers[row + "-t"][split]`` where it is (both NaN
    when a loss along the row is NaN: :func:`barrier`); ``nonfinite[name]`` counts the
    computed values of each metric that are NaN or Inf (the summaries say so, never drop them).
    ``segment_lengths`` (``ndarray[2, T]``, :func:`segment_lengths`) and ``lengths``
    (``{"curve": ..., "line": ...}``, their sums) measure the paths in parameter space;
    ``stats[row][name]`` is :func:`path_statistics` of every metric and, for every
    ``{split}_acc``, of the error ``{split}_err = 1 - acc``.
    """

    t: np.ndarray
    metrics: dict[str, np.ndarray]
    barriers: dict[str, dict[str, float]]
    file: str | None
    path: str
    segment_lengths: np.ndarray | None = None
    lengths: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)

    def curve(self, name: str) -> np.ndarray:
        return self.metrics[name][0]

    def line(self, name: str) -> np.ndarray:
        return self.metrics[name][1]


def evaluate_curve(
    model: nn.Module,
    curve: Curve,
    splits: Mapping[str, Any],
    *,
    points: int = 61,
    metrics=("loss", "acc"),
    bn: str = "recompute",
    bn_data=None,
    precision: str = "fp32",
    device=None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    max_memory=None,
    points_per_pass: int | None = None,
    path: str = "auto",
    forward=None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> CurveProfile:
    """Loss and accuracy along the curve and along the straight line, at ``points`` values of t.

    BatchNorm statistics are recomputed at every t by default (``bn="recompute"`` on the
    ``train`` split), as in the paper. As dnn-mode-connectivity's ``eval_curve.py`` (61
    points by default there too), the profile reports the paths' lengths over the grid
    (:func:`segment_lengths`) and, per metric, start, end, min, max, mean and the
    length-weighted integral (:func:`path_statistics`). The file (kind ``"curve"``, grid ``[2, T]``: row 0 the
    curve, row 1 the line) records the barrier of each row and split in its attributes
    (``barrier-curve-train``, ``barrier-t-curve-train``...); a resumed profile may differ
    from the file in those (the kind declares ``barrier-*`` not compared). It also holds
    the array ``segment-length`` (``[2, T]``, :func:`segment_lengths`).
    """
    if points < 2:
        raise ValueError(f"points should be at least 2, got {points}")
    t = np.linspace(0.0, 1.0, int(points))
    ctrl = curve.control_points()
    C_curve = curve.coefficients(t)
    C_line = _line_coefficients(t, C_curve.shape[1])
    dl = segment_lengths(curve, t)
    pts = PointSet.from_weights(ctrl, np.concatenate([C_curve, C_line]), names=curve.names)
    if bn_data is None and bn != "running":
        bn_data = splits.get("train", next(iter(splits.values())))
    file_attrs = None
    arrays = None
    if out is not None:
        from .._version import __version__

        file_attrs = {
            "library-version": __version__,
            "surface-type": "curve",
            "curve-kind": curve.kind,
            "n-bends": curve.n_bends,
            "rows": ["curve", "line"],
            "basis-names": curve.names,
            "splits": {s: describe_data(d) for s, d in splits.items()},
            "bn": bn,
            "bn-data": describe_data(bn_data) if bn != "running" else None,
            "precision": precision,
            "x-label": "t",
            "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in (curve.start, curve.end)],
            **dict(attrs or {}),
        }
        arrays = {"t": t, "coefficients": pts.coeffs.numpy(), "basis": pts.basis.detach().float().numpy()}
        arrays["segment-length"] = dl
    grid = evaluate_grid(
        model,
        pts,
        (2, len(t)),
        kind="curve",
        splits=splits,
        metrics=metrics,
        bn=bn,
        bn_data=bn_data,
        precision=precision,
        device=device,
        batch_size=batch_size,
        bn_batch_size=bn_batch_size,
        max_memory=max_memory,
        points_per_pass=points_per_pass,
        path=path,
        forward=forward,
        out=out,
        resume=resume,
        force=force,
        attrs=file_attrs,
        arrays=arrays,
        progress=progress,
        desc=f"curve {curve.kind}",
    )
    barriers = _barriers(grid.metrics, t)
    if out is not None and barriers:
        _record_barriers(out, barriers)
    return CurveProfile(
        t=t,
        metrics=grid.metrics,
        barriers=barriers,
        file=grid.file,
        path=grid.path,
        segment_lengths=dl,
        lengths={"curve": float(dl[0].sum()), "line": float(dl[1].sum())},
        stats=_path_statistics(grid.metrics, dl, t),
        nonfinite={name: int((~np.isfinite(v)).sum()) for name, v in grid.metrics.items()},
    )


def _barriers(metrics: Mapping[str, np.ndarray], t: np.ndarray) -> dict[str, dict[str, float]]:
    """``{row: {split: barrier}, row-t: {split: t of the barrier}}`` for the rows ``curve`` and
    ``line`` of every ``<split>_loss`` metric (:func:`barrier`)."""
    barriers: dict[str, dict[str, float]] = {}
    for name, v in metrics.items():
        if not name.endswith("_loss"):
            continue
        split = name[: -len("_loss")]
        for r, row in enumerate(("curve", "line")):  # every cell is computed: a NaN is a result
            h, where = barrier(v[r], t)
            barriers.setdefault(row, {})[split] = h
            barriers.setdefault(f"{row}-t", {})[split] = where
    return barriers


def _record_barriers(out: str | os.PathLike, barriers: dict[str, dict[str, float]]) -> None:
    """Write ``barriers`` into the attributes of the profile file ``out``
    (``barrier-<row>-<split>``, ``barrier-t-<row>-<split>``)."""
    from .. import io

    with io.open_result(out, "r+") as f:
        f.update_attrs(
            {
                f"barrier-{row}-{split}": h
                for row, d in barriers.items()
                if not row.endswith("-t")
                for split, h in d.items()
            }
            | {
                f"barrier-t-{row[:-2]}-{split}": w
                for row, d in barriers.items()
                if row.endswith("-t")
                for split, w in d.items()
            }
        )


def _path_statistics(
    metrics: Mapping[str, np.ndarray], dl: np.ndarray, t: np.ndarray
) -> dict[str, dict[str, dict[str, float]]]:
    """``{row: {metric: path_statistics}}`` of the rows ``curve`` and ``line``; an ``*_acc``
    metric also gives its error ``*_err``."""
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for name, v in metrics.items():
        for r, row in enumerate(("curve", "line")):
            stats.setdefault(row, {})[name] = path_statistics(v[r], dl[r], t)
            if name.endswith("_acc"):
                stats[row][name[: -len("_acc")] + "_err"] = path_statistics(1.0 - v[r], dl[r], t)
    return stats


def curve_plane(curve: Curve, *, bend: int | None = None, samples: int = 101) -> Plane:
    """The plane through the two endpoints and the middle bend (Gram-Schmidt coordinates,
    :func:`~landscape.directions.three_point_plane` with x along ``end - start``), with the
    curve projected onto it (``arrays["trajectory"]``, ``samples`` values of t) — the figure
    of Garipov et al. (2018)."""
    if curve.n_bends == 0:
        raise ValueError("a curve with no bends is the straight line; it spans no plane")
    ctrl = curve.control_points()
    j = curve.n_bends // 2 + 1 if bend is None else int(bend)
    if not 1 <= j <= curve.n_bends:
        raise ValueError(f"bend should be in 1..{curve.n_bends}, got {bend}")
    plane = three_point_plane(curve.start, curve.end, ctrl[j])
    # the projection is linear and the coefficients sum to 1: the curve's coordinates are
    # those of its control points combined (in a fixed order, so bit-reproducible)
    *_, Q = _three_point_frame(curve.start, curve.end, ctrl[j], ctrl)
    ts = np.linspace(0.0, 1.0, samples)
    C = np.asarray(curve.coefficients(ts), dtype=np.float64)
    path = np.zeros((len(ts), 2))
    for i in range(len(ctrl)):
        path += C[:, i : i + 1] * Q[i]
    plane.arrays["trajectory"] = path
    plane.arrays["trajectory-t"] = ts
    plane.kind = "curve-plane"
    plane.anchor_names = [plane.anchor_names[0], plane.anchor_names[1], f"bend {j}"]
    plane.attrs.update(
        {
            "x-label": "x (along end - start)",
            "y-label": f"y (orthogonal, towards bend {j})",
            "trajectory-label": f"{'Bezier curve' if curve.kind == 'bezier' else 'polygonal chain'} ({curve.n_bends} bend{'s' if curve.n_bends > 1 else ''})",
            "curve-kind": curve.kind,
            "n-bends": curve.n_bends,
        }
    )
    return plane
