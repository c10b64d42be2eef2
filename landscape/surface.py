"""Loss surfaces: lines and planes evaluated on grids, written chunk by chunk, resumable,
sharded over ``torch.distributed`` ranks.

A surface is a :class:`~landscape.directions.Plane` (basis + coordinate map), a grid of
coordinates, and metrics on one or more data splits (``train_loss``, ``test_acc``...). Cells
are evaluated in chunks of points by the batched engine; each finished chunk is written to
the HDF5 file and flushed, so a killed run continues with ``resume=True`` and recomputes only
the missing cells.

When ``torch.distributed`` is initialised (``torchrun --nproc_per_node=N -m landscape
surface ...``), rank r takes chunks r, r + N, r + 2N, ... of the pending cells; finished
chunks are gathered to rank 0, the only writer, after every round. The file is the same as a
single-process run's, and a killed job loses at most the chunks of one round.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as distlib
from .budget import report_eta
from .directions import Plane
from .evaluate import Engine, _nonfinite_message, _progress, describe_data
from .metrics import Metric, NonFiniteWarning, resolve_metrics

__all__ = ["GridResult", "SurfaceResult", "auto_range", "compute_surface", "evaluate_grid", "parse_range"]


def parse_range(text: str) -> np.ndarray:
    """``"-1:1:51"`` -> 51 evenly spaced values from -1 to 1 (both included).

    Examples
    --------
    >>> parse_range("-1:1:5").tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    parts = str(text).split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"range {text!r} should be MIN:MAX:COUNT, e.g. -1:1:51") from None
    if n < 1 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range {text!r} needs finite bounds and COUNT >= 1")
    if n > 1 and hi <= lo:
        raise ValueError(f"range {text!r} needs MAX > MIN")
    return np.linspace(lo, hi, n)


@dataclass
class SurfaceResult:
    """Metrics on a grid.

    Attributes
    ----------
    metrics : dict of str to ndarray
        ``{f"{split}_{metric}": ndarray[nx] or ndarray[nx, ny]}``; NaN where not computed
        (on ranks other than 0 in a distributed run, only that rank's cells are filled).
    x, y : ndarray
        Grid coordinates (``y`` is None for lines).
    plane : Plane
    path : str
        Engine path used.
    seconds : float
    evaluated : int
        Cells computed by this call (all ranks).
    file : str or None
    info : dict
        ``points_per_pass``, ``world_size``, ``data_passes`` and ``compile_seconds`` (the
        compiled path's warm-up this call paid, once over all chunks and splits; 0 otherwise).
    """

    metrics: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray | None
    plane: Plane
    path: str
    seconds: float
    evaluated: int
    file: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]


def auto_range(values, count: int = 21, margin: float = 0.25) -> np.ndarray:
    """``count`` evenly spaced values covering ``values`` with ``margin`` of their span on
    each side (grids around anchors, trajectories and curves).

    Examples
    --------
    >>> auto_range([0.0, 1.0], count=3, margin=0.5).tolist()
    [-0.5, 0.5, 1.5]
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    span = max(hi - lo, 1e-3)
    return np.linspace(lo - margin * span, hi + margin * span, count)


def compute_surface(
    model: nn.Module,
    plane: Plane,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray | None = None,
    *,
    splits: Mapping[str, Any],
    metrics: Sequence[str | Callable | Metric] = ("loss", "acc"),
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    max_memory: int | float | None = None,
    points_per_pass: int | None = None,
    path: str = "auto",
    forward: Callable | None = None,
    offload: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
    allow_large: bool = False,
) -> SurfaceResult:
    """Evaluate metrics on a line or plane grid.

    Parameters
    ----------
    model : nn.Module
        Structure of the network (never modified).
    plane : Plane
        From :mod:`landscape.directions` (``line_through``, ``random_plane``,
        ``three_point_plane``, ``pca_plane``).
    x, y : array-like
        Grid coordinates; ``y=None`` for a 1D plane (a line). Cell (i, j) is at (x[i], y[j]).
    splits : mapping of str to data
        Named datasets, e.g. ``{"train": train, "test": test}``; metric ``m`` on split ``s``
        is stored as ``f"{s}_{m}"``.
    metrics, bn, bn_data, precision, device, batch_size, bn_batch_size, max_memory, points_per_pass, path, forward, offload
        As in :func:`landscape.evaluate` (``bn_data`` defaults to the ``train`` split when
        there is one); every split may be any data :func:`landscape.evaluate` takes.
    out : path, optional
        HDF5 file (``kind`` ``"line"`` or ``"plane"``, see ``docs/h5-format.md``).
    resume, force : bool
        Continue an existing file / replace it.
    attrs : mapping, optional
        Extra attributes (model spec, checkpoint paths and digests...).
    allow_large : bool
        Run even when the output file would exceed 2 GB or the run more memory than the
        machine has available; without it such a run raises
        :class:`landscape.budget.TooLargeError` before any point is built.

    Returns
    -------
    SurfaceResult

    Examples
    --------
    >>> import torch, landscape as ls
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = ls.build_model("mlp", {"in_features": 64, "widths": [16]})
    >>> plane = ls.directions.random_plane(ls.Weights.from_module(model), seed=1)
    >>> test = ls.load_data("digits", "test")
    >>> res = ls.compute_surface(model, plane, [-1, 0, 1], [-1, 0, 1], splits={"test": test}, progress=False)
    >>> res["test_loss"].shape
    (3, 3)
    """
    t0 = time.perf_counter()
    if not splits:
        raise ValueError("splits is empty; expected at least one dataset, e.g. {'test': test}")
    xs, ys, shape = _grid_coordinates(plane, x, y)
    metric_objs = resolve_metrics(metrics)
    _check_budget(model, plane, shape, splits, metric_objs, precision, device, out, bn_data, allow_large)
    points = plane.grid(xs, ys)
    if bn_data is None and bn != "running":
        bn_data = splits.get("train", next(iter(splits.values())))
    grid = evaluate_grid(
        model,
        points,
        shape,
        kind="line" if ys is None else "plane",
        splits=splits,
        metrics=metric_objs,
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
        offload=offload,
        out=out,
        resume=resume,
        force=force,
        progress=progress,
        desc=f"surface {plane.kind}",
        attrs=_surface_attrs(plane, splits, metric_objs, bn, bn_data, precision, attrs) if out is not None else None,
        arrays=_surface_arrays(plane, points, xs, ys) if out is not None else None,
        allow_large=allow_large,
    )
    return SurfaceResult(
        metrics=grid.metrics,
        x=xs,
        y=ys,
        plane=plane,
        path=grid.path,
        seconds=time.perf_counter() - t0,
        evaluated=grid.evaluated,
        file=grid.file,
        info=grid.info,
    )


@dataclass
class GridResult:
    """Metrics of a point set laid out on a grid (see :func:`evaluate_grid`)."""

    metrics: dict[str, np.ndarray]
    path: str
    evaluated: int
    file: str | None
    info: dict[str, Any]


def evaluate_grid(
    model: nn.Module,
    points,
    shape: tuple[int, ...],
    *,
    kind: str,
    splits: Mapping[str, Any],
    metrics: Sequence[str | Callable | Metric] = ("loss", "acc"),
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    max_memory: int | float | None = None,
    points_per_pass: int | None = None,
    path: str = "auto",
    forward: Callable | None = None,
    offload: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    ignore: Sequence[str] | None = None,
    allow_large: bool = False,
) -> GridResult:
    """Metrics of the K points of ``points`` (C order over ``shape``) on every split, written
    chunk by chunk to ``out`` (file ``kind``, ``attrs``, ``arrays``), resumable, and sharded
    over ``torch.distributed`` ranks when a process group is active. The machinery under
    :func:`compute_surface` and the curve profiles. ``ignore``: attributes a resumed file may
    differ in (default: :data:`landscape.io.RUN_ATTRS` and what the registered ``kind`` declares
    not compared, :attr:`landscape.io.ResultKind.not_compared`). ``allow_large``: create an
    ``out`` above 2 GB (:func:`landscape.io.create_result`). A run whose first round says it
    will take more than a minute prints its estimate in one line (with ``progress``)."""
    if not splits:
        raise ValueError("splits is empty; expected at least one dataset, e.g. {'test': test}")
    if int(np.prod(shape)) != points.K:
        raise ValueError(f"grid shape {tuple(shape)} holds {int(np.prod(shape))} cells but there are {points.K} points")
    metric_objs = resolve_metrics(metrics)
    names = [f"{s}_{m.name}" for s in splits for m in metric_objs]
    rank, world = distlib.rank_and_world()
    engine = Engine(
        model,
        points,
        metric_objs,
        bn=bn,
        precision=precision,
        device=device,
        batch_size=batch_size,
        bn_batch_size=bn_batch_size,
        max_memory=max_memory,
        points_per_pass=points_per_pass,
        path=path,
        forward=forward,
        offload=offload,
    )
    f = None
    pending = np.arange(points.K, dtype=np.int64)
    if out is not None and rank == 0:
        f = _grid_file(out, kind, shape, names, attrs, arrays, resume, force, ignore, allow_large)
        pending = f.pending()
    try:
        pending = distlib.broadcast_object(pending)
        chunk = distlib.broadcast_object(engine.prepare(next(iter(splits.values())), len(pending)))
        chunks = [pending[i : i + chunk] for i in range(0, len(pending), chunk)]
        flat = {n: np.full(points.K, np.nan) for n in names}
        bar = _progress(len(pending), desc, progress and rank == 0)
        started = time.perf_counter()
        try:
            for start in range(0, len(chunks), world):
                if start == world and progress and rank == 0:
                    done = sum(len(c) for c in chunks[:world])
                    report_eta(desc, done, len(pending), time.perf_counter() - started)
                mine = chunks[start + rank] if start + rank < len(chunks) else np.zeros(0, dtype=np.int64)
                vals = {}
                for split, data in splits.items():
                    res = engine.run(data, mine, bn_data=bn_data, progress=False, bar=bar)
                    for m in metric_objs:
                        vals[f"{split}_{m.name}"] = res[m.name][mine]
                gathered = distlib.gather_to_root((mine, vals))
                for idx, v in gathered if rank == 0 else [(mine, vals)]:
                    if len(idx) == 0:
                        continue
                    for n in names:
                        flat[n][idx] = v[n]
                    if f is not None:
                        f.write_cells(idx, v)
                    bar.update(len(idx) if rank == 0 else 0)
        finally:
            bar.close()
        if f is not None:
            flat = {n: f.read_metric(n).reshape(-1) for n in names}
        elif rank == 0 and (message := _nonfinite_message(flat, pending, what=desc)):
            warnings.warn(message, NonFiniteWarning, stacklevel=3)  # a file warns when it closes
    finally:
        if f is not None:
            f.close()
    return GridResult(
        metrics={n: v.reshape(shape) for n, v in flat.items()},
        path=engine.path or path,
        evaluated=int(len(pending)),
        file=os.fspath(out) if out is not None else None,
        info={
            "points_per_pass": engine.points_per_pass,
            "world_size": world,
            "data_passes": engine.data_passes,
            "compile_seconds": engine.compile_seconds,
        },
    )


def _grid_file(out, kind: str, shape, names, attrs, arrays, resume: bool, force: bool, ignore, allow_large: bool):
    """The result file of :func:`evaluate_grid`, created or opened to resume (rank 0 only)."""
    from . import io

    return io.open_or_create(
        out,
        kind=kind,
        shape=tuple(shape),
        metrics=names,
        attrs=dict(attrs or {}),
        arrays=arrays,
        resume=resume,
        force=force,
        ignore=None if ignore is None else tuple(ignore),
        allow_large=allow_large,
    )


def _grid_coordinates(plane: Plane, x, y) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """``(xs, ys, shape)`` of a grid over ``plane``: finite float64 coordinates, y only for planes."""
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = None if y is None else np.asarray(y, dtype=np.float64).reshape(-1)
    for label, coords in (("x", xs), ("y", ys)):
        if coords is not None and (coords.size == 0 or not np.isfinite(coords).all()):
            raise ValueError(f"grid coordinates {label} = {coords.tolist()[:8]} should be finite numbers, at least one")
    if (ys is None) != (plane.dim == 1):
        raise ValueError(
            f"a {plane.dim}D {plane.kind} plane needs {'only x' if plane.dim == 1 else 'x and y'} coordinates"
        )
    return xs, ys, ((len(xs),) if ys is None else (len(xs), len(ys)))


def _check_budget(model, plane: Plane, shape, splits, metric_objs, precision, device, out, bn_data, allow_large):
    """Output file and memory of a surface, checked before its points are built
    (:func:`landscape.budget.check_grid`)."""
    from . import budget

    J, P = len(plane.basis), plane.basis[0].layout.size
    cells = int(np.prod(shape))
    file_itemsize = 8 if any(t.dtype == torch.float64 for t in plane.basis[0].tensors.values()) else 4
    arrays = {"x": 8 * shape[0], "basis": J * P * file_itemsize, "coefficients": cells * J * 8}
    if len(shape) > 1:
        arrays["y"] = 8 * shape[1]
    arrays.update({k: np.asarray(v).nbytes for k, v in plane.arrays.items()})
    held = {
        "basis": budget.tensor_bytes(plane.basis),
        "model": budget.tensor_bytes(model),
        "data": budget.tensor_bytes(list({id(d): d for d in (*splits.values(), bn_data)}.values())),
    }
    metrics = [f"{s}_{m.name}" for s in splits for m in metric_objs]
    if out is not None:
        from .io import check_output_size

        check_output_size(shape, metrics, arrays, f"result file '{os.fspath(out)}'", allow_large=allow_large)
    budget.check_grid(
        f"a {' x '.join(map(str, shape))} {plane.kind} surface",
        shape=shape,
        metrics=metrics,
        basis=(J, P),
        itemsize=8 if precision == "fp64" else 4,
        held=held,
        device=device,
        out=out,
        allow_large=allow_large,
    )


def _surface_attrs(plane: Plane, splits, metric_objs, bn, bn_data, precision, extra) -> dict[str, Any]:
    from ._version import __version__

    a: dict[str, Any] = {
        "library-version": __version__,
        "surface-type": plane.kind,
        "basis-names": list(plane.names),
        "anchor-names": list(plane.anchor_names),
        "splits": {s: describe_data(d) for s, d in splits.items()},
        "metrics-per-split": [m.name for m in metric_objs],
        "bn": bn,
        "bn-data": describe_data(bn_data) if bn != "running" else None,
        "precision": precision,
    }
    a.update(plane.attrs)
    a.update(dict(extra or {}))
    return a


def _surface_arrays(plane: Plane, points, xs, ys) -> dict[str, np.ndarray]:
    arrays = {
        "x": xs,
        "basis": points.basis.float().numpy() if points.basis.dtype != torch.float64 else points.basis.numpy(),
        "coefficients": points.coeffs.numpy(),
        "anchors": np.asarray(plane.anchors, dtype=np.float64),
    }
    if ys is not None:
        arrays["y"] = ys
    for k, v in plane.arrays.items():
        arrays[k] = np.asarray(v)
    return arrays
