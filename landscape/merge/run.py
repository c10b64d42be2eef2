"""Merges through the engine into a resumable ``merge`` result file.

:func:`evaluate_merges` evaluates the points of a :class:`~landscape.merge.grids.MergeGrid` on
named data splits with :func:`landscape.surface.evaluate_grid` (many points per pass, chunks
written and flushed as they finish, ``resume=True`` computes only the cells not done), into a
file of kind ``merge`` (``docs/h5-format.md``): one metric ``<split>_<metric>`` per split, the
grid's axes as arrays, and the method, its parameters, seeds and options, the checkpoints
(path and sha256) and the data as attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..evaluate import describe_data
from ..metrics import resolve_metrics
from ..surface import evaluate_grid
from .grids import MergeGrid

__all__ = ["MergeResult", "check_merge_memory", "evaluate_merges", "merge_attrs"]


@dataclass
class MergeResult:
    """Metrics of a merge grid.

    Attributes
    ----------
    metrics : dict of str to ndarray
        ``{"<split>_<metric>": ndarray[grid shape]}``.
    grid : MergeGrid
    path : str
        Engine path used.
    evaluated : int
        Cells computed by this call.
    seconds : float
    file : str or None
    info : dict
    """

    metrics: dict[str, np.ndarray]
    grid: MergeGrid
    path: str
    evaluated: int
    seconds: float
    file: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]


def check_merge_memory(
    what: str, *, basis: int, weights: int, itemsize: int, device=None, allow_large: bool = False
) -> int:
    """Refuse (:class:`landscape.budget.TooLargeError`), before any merge is built, a merge
    whose basis of ``basis`` vectors of ``weights`` entries of ``itemsize`` bytes (the
    checkpoints, the merged task vectors or SLERP points) would not fit in the memory
    available; returns the estimate in bytes."""
    from .. import budget

    parts = {"merge basis": basis * weights * itemsize, "one merged tensor set": 4 * weights * max(itemsize, 4)}
    return budget.check_memory(parts, what, device=device, allow_large=allow_large)


def merge_attrs(
    grid: MergeGrid, splits: Mapping[str, Any], metric_names: Sequence[str], *, bn: str, bn_data, precision: str
) -> dict[str, Any]:
    """The attributes of a ``merge`` file that define the run (compared when resuming)."""
    from .._version import __version__

    params = {name: np.asarray(v).tolist() for name, v in grid.axes}
    return {
        "library-version": __version__,
        "method": grid.method,
        "axes": [name for name, _ in grid.axes],
        "parameters": params,
        "seeds": [int(s) for s in params.get("seed", [])],
        "options": dict(grid.options),
        "rows": list(grid.rows) if grid.rows is not None else None,
        "members": dict(grid.members) if grid.members is not None else None,
        "basis-names": list(grid.points.names),
        "splits": {s: describe_data(d) for s, d in splits.items()},
        "metrics-per-split": list(metric_names),
        "bn": bn,
        "bn-data": describe_data(bn_data) if bn != "running" else None,
        "precision": precision,
    }


def evaluate_merges(
    model: nn.Module,
    grid: MergeGrid,
    splits: Mapping[str, Any],
    *,
    metrics: Sequence[str] = ("loss", "acc"),
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    points_per_pass: int | None = None,
    max_memory: int | float | None = None,
    path: str = "auto",
    forward=None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
    allow_large: bool = False,
) -> MergeResult:
    """Evaluate every merge of ``grid`` on every split.

    Parameters
    ----------
    model : nn.Module
        Structure of the network (never modified).
    grid : MergeGrid
        From :mod:`landscape.merge.grids`.
    splits : mapping of str to data
        Named datasets (e.g. one per task and their union); metric ``m`` on split ``s`` is
        stored as ``f"{s}_{m}"``.
    metrics, bn, bn_data, precision, device, batch_size, points_per_pass, max_memory, path, forward
        As in :func:`landscape.evaluate`. BatchNorm: ``"running"`` evaluates with the
        merged running statistics (combined like any tensor: see each method); merges of
        fine-tunes usually need ``"recompute"`` (``bn_data`` defaults to the ``train`` split
        when there is one, else the first).
    out : path, optional
        The ``merge`` file; ``resume`` continues one, ``force`` replaces one.
    attrs : mapping, optional
        Extra attributes (model, checkpoints with their roles and sha256, data options...).

    Returns
    -------
    MergeResult

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.merge import evaluate_merges, task_arithmetic_grid
    >>> _ = torch.manual_seed(0)
    >>> model = ls.build_model("mlp", {"in_features": 64, "widths": [8]})
    >>> w = [ls.Weights.from_module(ls.build_model("mlp", {"in_features": 64, "widths": [8]})) for _ in range(3)]
    >>> res = evaluate_merges(model, task_arithmetic_grid(w[0], w[1:], [0, 0.5, 1]),
    ...                       {"test": ls.load_data("digits", "test")}, progress=False)
    >>> res["test_acc"].shape
    (3,)
    """
    t0 = time.perf_counter()
    if not splits:
        raise ValueError("splits is empty; expected at least one dataset, e.g. {'test': test}")
    metric_objs = resolve_metrics(metrics)
    if bn_data is None and bn != "running":
        bn_data = splits.get("train", next(iter(splits.values())))
    file_attrs = arrays = None
    if out is not None:
        file_attrs = merge_attrs(
            grid, splits, [m.name for m in metric_objs], bn=bn, bn_data=bn_data, precision=precision
        )
        file_attrs.update(dict(attrs or {}))
        arrays = {f"axis-{name}": np.asarray(v, dtype=np.float64) for name, v in grid.axes}
        arrays["coefficients"] = grid.points.coeffs.numpy()
    res = evaluate_grid(
        model,
        grid.points,
        grid.shape,
        kind="merge",
        splits=splits,
        metrics=metric_objs,
        bn=bn,
        bn_data=bn_data,
        precision=precision,
        device=device,
        batch_size=batch_size,
        points_per_pass=points_per_pass,
        max_memory=max_memory,
        path=path,
        forward=forward,
        out=out,
        resume=resume,
        force=force,
        attrs=file_attrs,
        arrays=arrays,
        progress=progress,
        desc=f"merge {grid.method}",
        allow_large=allow_large,
    )
    return MergeResult(
        metrics=res.metrics,
        grid=grid,
        path=res.path,
        evaluated=res.evaluated,
        seconds=time.perf_counter() - t0,
        file=res.file,
        info=res.info,
    )
