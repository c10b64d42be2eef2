"""Eigenvalue maps over a surface: :math:`\\lambda_{\\max}`, :math:`\\lambda_{\\min}` and
:math:`|\\lambda_{\\min}/\\lambda_{\\max}|` at every grid point (Li et al. 2018, Figure 7; seed 004).

A line or plane written by :func:`landscape.surface.compute_surface` stores its basis and
coefficients, so the weights of every cell are known without the checkpoints. For each cell
the extreme eigenvalues of the loss Hessian are computed by Lanczos with full
reorthogonalization (:func:`~landscape.hessian.lanczos_batched`), many cells per pass: the
Hessian-vector products of a chunk of cells go through one ``vmap`` pass
(:class:`~landscape.hessian.BatchedHVP`) and their Lanczos bookkeeping is one batched step.
The maps are written into the same HDF5 file as metrics of the grid's shape
(``lambda_max``, ``lambda_min``, ``eig_ratio``, ``eig_residual_max``, ``eig_residual_min``,
``eig_hvps``), chunk by chunk, so a killed run resumes at the first missing cell; under
``torchrun`` the ranks take disjoint chunks and rank 0 writes, as for surfaces.

BatchNorm is in eval mode with each point's running statistics (the combined statistics of
the surface's basis, as ``bn="running"`` evaluates them): the Hessian of the loss the point
computes at test time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import as_source
from ..weights import Layout, Weights
from .hvp import _loss_name, parameter_selection

__all__ = ["MAP_METRICS", "HessianMap", "eigen_map", "surface_points"]

MAP_METRICS = ("lambda_max", "lambda_min", "eig_ratio", "eig_residual_max", "eig_residual_min", "eig_hvps")
_SETTINGS_ATTR = "hessian-map"
_WRITE_ORDER = (*(m for m in MAP_METRICS if m != "lambda_max"), "lambda_max")


@dataclass
class HessianMap:
    """The eigenvalue maps of a surface file (grid-shaped arrays, NaN where not computed)."""

    path: str
    shape: tuple[int, ...]
    metrics: dict[str, np.ndarray]
    computed: int  # cells computed by this call
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]


def surface_points(model: nn.Module, path: str | os.PathLike):
    """The :class:`~landscape.pointset.PointSet` of every cell of a line or plane file (C order).

    The basis and coefficients come from the file; entries that are not combined
    (``num_batches_tracked``) from ``model``. Raises ``ValueError`` when the file's basis
    does not fit ``model``.
    """
    from ..io import open_result
    from ..pointset import PointSet

    with open_result(path) as rf:
        if rf.kind not in ("line", "plane"):
            raise ValueError(f"{os.fspath(path)} is a {rf.kind!r} result; eigenvalue maps need a line or plane file")
        names = rf.array_names()
        if "basis" not in names or "coefficients" not in names:
            raise ValueError(f"{os.fspath(path)} has no basis/coefficients arrays to rebuild its points")
        basis = torch.from_numpy(np.ascontiguousarray(rf.read_array("basis")))
        coeffs = rf.read_array("coefficients")
        basis_names = rf.attrs.get("basis-names")
        shape = rf.shape
    layout = Layout.from_module(model)
    if basis.shape[1] != layout.size:
        raise ValueError(
            f"{os.fspath(path)} holds weight vectors of {basis.shape[1]} values but this model has {layout.size}; "
            "pass the model the surface was computed with"
        )
    template = Weights.from_module(model)
    extras = {e.name: template[e.name] for e in layout if not e.flat and not getattr(e, "tied_to", None)}
    pts = PointSet(basis, coeffs, layout, extras=extras, names=basis_names)
    if pts.K != int(np.prod(shape)):
        raise ValueError(f"{os.fspath(path)}: {pts.K} coefficient rows for a grid of {shape}")
    return pts, shape


def eigen_map(
    model: nn.Module,
    path: str | os.PathLike,
    data,
    *,
    tol: float = 1e-3,
    max_iter: int = 50,
    relative_to: str = "spectrum",
    seed: int = 0,
    points_per_pass: int = 8,
    params: Iterable[str] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    method: str = "auto",
    loss=None,
    forward: Callable | None = None,
    step: Callable | None = None,
    data_spec: Any = None,
    force: bool = False,
    progress: bool = True,
) -> HessianMap:
    """Fill the eigenvalue maps of a line or plane file, resuming where they stop.

    Parameters
    ----------
    model : nn.Module
        The architecture the surface was computed with (its weights are not used).
    path : str or path-like
        A ``line`` or ``plane`` result file; the maps are added to it.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        The samples whose mean loss is differentiated (usually a fixed subset of the train
        split: every Hessian-vector product is a pass over them); read once into a
        :class:`~landscape.batches.DataSource` shared by all chunks (in-memory data is moved
        to the device once, loaders are streamed).
    tol, max_iter, relative_to, seed
        Lanczos: residual tolerance of both extreme Ritz values, relative to the spectral
        radius by default (see :func:`~landscape.hessian.lanczos_batched`), step cap, and
        the seed of the start vector (shared by all cells, so a cell's values do not depend
        on the chunk it was computed in).
    points_per_pass : int
        Cells per Lanczos batch (and per ``vmap`` pass of the HVPs).
    params, batch_size, device, dtype, method, loss, forward
        As for :class:`~landscape.hessian.HVP` (by default the parameters with
        ``requires_grad=True``). The selection's rule, names (or their count and digest)
        and the loss's name are recorded in the file's ``hessian-map`` attribute.
    step : callable, optional
        The Lanczos bookkeeping step (default: the compiled ``landscape.ops.lanczos_step``
        where it pays, see :func:`~landscape.hessian.lanczos_batched`).
    data_spec : any, optional
        How ``data`` was made (recorded; a resumed map must use the same).
    force : bool
        Recompute maps written with other settings (otherwise refused).

    Returns
    -------
    HessianMap
    """
    from .. import distributed as distlib
    from ..io import open_result
    from ..ops import lanczos_step  # the compiled step (falls back to the reference without the extension)

    if int(points_per_pass) != points_per_pass or points_per_pass < 1:
        raise ValueError(f"points_per_pass should be a positive integer, got {points_per_pass!r}")
    t0 = time.perf_counter()
    rank, world = distlib.rank_and_world()
    pts, shape = surface_points(model, path)
    source = as_source(data)
    params = [params] if isinstance(params, str) else (list(params) if params is not None else None)
    settings = {
        "tol": float(tol),
        "relative-to": relative_to,
        "max-iter": int(max_iter),
        "seed": int(seed),
        "params": sorted(params) if params is not None else None,
        "selection": parameter_selection(model, params),
        "loss": _loss_name(loss),
        "dtype": {"fp64": "float64", "fp32": "float32"}.get(str(dtype), str(dtype).replace("torch.", "")),
        "data": data_spec,
        "samples": _samples(source),
    }
    pending = _open_maps(path, pts.K, settings, force) if rank == 0 else None
    pending = distlib.broadcast_object(pending)
    chunks = [pending[i : i + points_per_pass] for i in range(0, len(pending), points_per_pass)]
    lanczos_opts = dict(tol=tol, relative_to=relative_to, max_iter=max_iter, seed=seed, step=step or lanczos_step)
    bar = None
    if progress and rank == 0 and len(pending):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="Hessian map", unit="pt")
    try:
        for first in range(0, len(chunks), world):
            mine = chunks[first + rank] if first + rank < len(chunks) else np.zeros(0, dtype=np.int64)
            where = (params, batch_size, device, dtype, method)
            values = _chunk_values(model, pts, mine, source, *where, lanczos_opts, dict(loss=loss, forward=forward))
            gathered = distlib.gather_to_root((mine, values))
            if rank == 0:
                with open_result(path, "r+") as rf:
                    for idx, vals in gathered:
                        if len(idx):
                            for name in _WRITE_ORDER:  # lambda_max last: it marks the cell done
                                rf.set_metric_cells(name, idx, vals[name])
                            if bar is not None:
                                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    metrics = {}
    if rank == 0:
        with open_result(path) as rf:
            metrics = {m: rf.read_metric(m) for m in MAP_METRICS}
    metrics = distlib.broadcast_object(metrics)
    return HessianMap(os.fspath(path), tuple(shape), metrics, int(len(pending)), time.perf_counter() - t0, settings)


def _open_maps(path, cells: int, settings: dict[str, Any], force: bool) -> np.ndarray:
    """Add the map metrics to the surface file (or check those there); the cells left to do.

    The resume rule of every result file: the settings that define the maps (the
    ``hessian-map`` attribute) must be those of the file (:func:`landscape.io.first_difference`),
    else ``force`` starts over. A cell is done when its ``lambda_max`` is written (written
    after the cell's other maps; the surface's ``done`` flags are its own metrics')."""
    from ..io import first_difference, open_result

    with open_result(path, "r+") as rf:
        old = rf.attrs.get(_SETTINGS_ATTR)
        have = [m for m in MAP_METRICS if m in rf.metrics]
        diff = first_difference(old, settings) if old is not None else None
        if diff is not None and have:
            if not force:
                k = diff[0]
                raise ValueError(
                    f"{os.fspath(path)} holds eigenvalue maps with {k} = {old.get(k)!r}, not {settings.get(k)!r}; "
                    "pass force=True (--force) to recompute them"
                )
            for m in have:  # start over
                rf.set_metric_cells(m, np.arange(cells), np.full(cells, np.nan))
        missing = [m for m in MAP_METRICS if m not in rf.metrics]
        if missing:
            rf.add_metrics(missing)
        if old is None or diff is not None:
            rf.update_attrs({_SETTINGS_ATTR: settings})
        return np.flatnonzero(np.isnan(rf.read_metric("lambda_max").reshape(-1)))


def _samples(source) -> int | None:
    """Samples in the data, where known without a pass (a loader's data set length)."""
    if source.n is not None:
        return int(source.n)
    try:
        return int(len(source.data.dataset))
    except (AttributeError, TypeError):
        return None


def _chunk_values(model, pts, cells, data, params, batch_size, device, dtype, method, lanczos_opts, hvp_opts=None):
    """Lanczos over the cells ``cells`` (one batch; ``lanczos_opts`` go to
    :func:`~landscape.hessian.lanczos_batched`); the map metrics of each."""
    from .eig import lanczos_batched
    from .hvp import BatchedHVP

    out = {m: np.zeros(len(cells)) for m in MAP_METRICS}
    if len(cells) == 0:
        return out
    op = BatchedHVP(
        model,
        pts,
        data,
        indices=[int(c) for c in cells],
        params=params,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        method=method,
        **(hvp_opts or {}),
    )
    runs = lanczos_batched(op, **lanczos_opts)
    for i, r in enumerate(runs):
        out["lambda_max"][i] = r.lambda_max
        out["lambda_min"][i] = r.lambda_min
        out["eig_ratio"][i] = abs(r.lambda_min / r.lambda_max) if r.lambda_max != 0 else np.nan
        out["eig_residual_max"][i], out["eig_residual_min"][i] = r.residuals
        out["eig_hvps"][i] = r.hvps
    return out
