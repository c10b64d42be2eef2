"""Surface files of loss-landscape (Li et al., tomgoldstein/loss-landscape), in and out.

:mod:`landscape.io` reads and writes landscape's own result files; this module is its companion
for the one foreign layout users bring: the HDF5 surface files that loss-landscape's
``plot_surface.py`` writes and its ``plot_1D.py``, ``plot_2D.py`` and ``h52vtp.py`` read.

Their layout (read from ``plot_surface.py``'s ``setup_surface_file`` and ``crunch``)::

    /xcoordinates            float64 (nx,)
    /ycoordinates            float64 (ny,)       a plane only
    /dir_file                str                 path of the directions file (optional here)
    /train_loss, /train_acc  float64 (nx, ny)    (nx,) for a line; test_loss, test_acc likewise

``crunch`` creates each metric as ``-np.ones((nx, ny))`` and fills cell ``ind`` of
``values.ravel()``, where ``ind`` indexes the flattened ``np.meshgrid(x, y)`` (``indexing="xy"``:
arrays of shape ``(ny, nx)``). So the value at ``(x[i], y[j])`` is ``values.ravel()[j * nx + i]``:
the dataset holds ``(ny, nx)`` numbers in a ``(nx, ny)`` shape, ``values.reshape(ny, nx).T`` in
landscape's ``[i, j]`` order (the transpose for a square grid). A cell never computed holds
-1; accuracies are in percent.

Reading turns -1 into landscape's missing cells (done flag 0, NaN) and percent into fractions;
writing does the reverse, with the metric arrays shaped ``(ny, nx)`` (the shape ``plot_2D.py``'s
``meshgrid`` needs, so it also draws grids that are not square; the flat order is the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from .io import (
    FORMAT_NAME,
    ResultExistsError,
    ResultFileError,
    _fmt_path,
    atomic_write,
    create_result,
    open_hdf5,
    open_result,
)

__all__ = [
    "LL_MISSING",
    "LossLandscapeSurface",
    "export_loss_landscape",
    "import_loss_landscape",
    "read_loss_landscape",
]

LL_MISSING = -1.0
"""The value loss-landscape's ``crunch`` leaves in a cell it has not computed."""

_COORDS = ("xcoordinates", "ycoordinates")
_NOT_METRICS = (*_COORDS, "dir_file")
# plot_hessian_eigen.py's datasets: its missing cells hold -1 (max_eig) and +1 (min_eig)
_EIGENVALUES = ("max_eig", "min_eig")
_EXPECTED = (
    "a surface file written by loss-landscape's plot_surface.py (xcoordinates [, ycoordinates], train_loss, ...)"
)


def _is_percent(name: str) -> bool:
    """Accuracies: loss-landscape's ``*_acc`` datasets (percent); landscape's ``acc`` metrics
    (fractions)."""
    return name == "acc" or name.endswith("_acc")


def _metric_order(name: str) -> tuple:
    """train before other splits, then by split; a split's loss before its accuracy."""
    split, _, what = name.rpartition("_")
    return (split != "train", split, {"loss": 0, "acc": 1}.get(what, 2), what)


@dataclass
class LossLandscapeSurface:
    """A loss-landscape surface file, read into landscape's order and units.

    Attributes
    ----------
    x : ndarray (nx,)
    y : ndarray (ny,) or None
        None for a line.
    metrics : dict of str to ndarray (nx,) or (nx, ny)
        ``metrics[name][i, j]`` is the value at ``(x[i], y[j])``; accuracies as fractions;
        NaN where the cell is not done.
    done : ndarray of bool, (nx,) or (nx, ny)
        Cells where every metric was computed (no -1).
    left_out : dict of str to str
        Datasets not read as metrics, with the reason.
    partial : int
        Cells where some metrics were computed but not all (read as not done).
    dir_file : str or None
        The ``dir_file`` the file names.
    """

    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]
    done: np.ndarray
    left_out: dict[str, str] = field(default_factory=dict)
    partial: int = 0
    dir_file: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.size,) if self.y is None else (self.x.size, self.y.size)


def _coordinates(h5: h5py.File, name: str, shown: str) -> np.ndarray | None:
    dset = h5.get(name)
    if dset is None:
        return None
    values = np.asarray(dset[()]) if isinstance(dset, h5py.Dataset) else None
    if values is None or values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        got = "a group" if values is None else f"shape {values.shape}, dtype {values.dtype}"
        raise ResultFileError(f"{shown}: '{name}' should be a 1-D array of numbers, got {got}")
    if not np.isfinite(values).all():
        raise ResultFileError(f"{shown}: '{name}' holds non-finite coordinates; expected finite numbers")
    return values.astype(np.float64)


def _text(value: Any) -> str:
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_loss_landscape(path: str | os.PathLike) -> LossLandscapeSurface:
    """Read a surface file written by loss-landscape's ``plot_surface.py``.

    Every numeric dataset with the grid's number of dimensions is a metric (``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ...), except ``plot_hessian_eigen.py``'s
    ``max_eig`` and ``min_eig``; it is read in meshgrid order, ``values.ravel()[j * nx + i]``
    at ``(x[i], y[j])``, whether stored ``(nx, ny)`` (as ``plot_surface.py`` does) or
    ``(ny, nx)``. -1 marks a cell not computed; ``*_acc`` datasets are divided by 100.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    LossLandscapeSurface

    Raises
    ------
    ResultFileError
        The file is not HDF5, is a landscape result file, has no ``xcoordinates``, a metric
        whose shape does not fit the coordinates, or no metric at all.
    """
    path = os.fspath(path)
    shown = _fmt_path(path)
    with open_hdf5(path, expected=_EXPECTED) as h5:
        if "format" in h5.attrs and _text(h5.attrs["format"]) == FORMAT_NAME:
            kind = _text(h5.attrs.get("kind", "?"))
            raise ResultFileError(f"{shown} is already a landscape result file (kind {kind!r}); expected {_EXPECTED}")
        names = sorted(h5.keys())
        x = _coordinates(h5, "xcoordinates", shown)
        y = _coordinates(h5, "ycoordinates", shown)
        if x is None:
            if y is not None or any(n.endswith(("_loss", "_acc")) for n in names):
                raise ResultFileError(
                    f"{shown} has no dataset 'xcoordinates' (it holds {', '.join(names)}); a loss-landscape "
                    "surface file has 1-D xcoordinates, and ycoordinates for a plane"
                )
            raise ResultFileError(
                f"{shown} is neither a landscape result file nor a loss-landscape surface file "
                f"(it holds {', '.join(names) or 'nothing'}); expected {_EXPECTED}"
            )
        raw, left_out = {}, {}
        shapes = [(x.size,)] if y is None else [(x.size, y.size), (y.size, x.size)]
        grid = " x ".join(str(n) for n in shapes[0])
        coords = f"xcoordinates ({x.size})" + ("" if y is None else f" and ycoordinates ({y.size})")
        for name in names:
            dset = h5[name]
            if name in _NOT_METRICS:
                continue
            if name in _EIGENVALUES:
                left_out[name] = "plot_hessian_eigen.py's eigenvalues (missing cells hold -1 and +1): not read"
                continue
            if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "iuf" or dset.ndim not in (1, 2):
                what = "a group" if not isinstance(dset, h5py.Dataset) else f"shape {dset.shape}, dtype {dset.dtype}"
                left_out[name] = f"not a metric of the {grid} grid ({what})"
                continue
            if y is None and dset.ndim == 2:
                raise ResultFileError(
                    f"{shown}: '{name}' has shape {dset.shape} but the file has no 'ycoordinates'; "
                    "a plane needs both coordinate arrays"
                )
            if dset.shape not in shapes:
                also = "" if y is None else f" (or {shapes[1]}, the same cells in meshgrid order)"
                raise ResultFileError(
                    f"{shown}: '{name}' has shape {dset.shape} but {coords} make a {grid} grid; "
                    f"expected {shapes[0]}{also}"
                )
            raw[name] = np.asarray(dset[()], dtype=np.float64).reshape(-1)  # meshgrid order
        dir_file = _text(h5["dir_file"][()]) if isinstance(h5.get("dir_file"), h5py.Dataset) else None
        if dir_file is None and "dir_file" in h5.attrs:
            dir_file = _text(h5.attrs["dir_file"])
    raw = dict(sorted(raw.items(), key=lambda item: _metric_order(item[0])))
    if not raw:
        raise ResultFileError(
            f"{shown} has coordinates but no metric dataset of the {grid} grid (it holds {', '.join(names)}); "
            "expected train_loss, train_acc, ..."
        )
    computed = {name: values != LL_MISSING for name, values in raw.items()}
    if any(c.any() for c in computed.values()):
        for name in [n for n, c in computed.items() if not c.any()]:
            left_out[name] = "never computed (every cell -1)"
            del raw[name], computed[name]
    flat_done = np.logical_and.reduce(list(computed.values()))
    partial = int((np.logical_or.reduce(list(computed.values())) & ~flat_done).sum())
    nx = x.size

    def ours(flat: np.ndarray) -> np.ndarray:
        # meshgrid order (j * nx + i) -> landscape's [i, j]
        return flat.copy() if y is None else flat.reshape(y.size, nx).T.copy()

    done = ours(flat_done)
    metrics = {}
    for name, flat in raw.items():
        values = np.where(flat_done, flat / 100.0 if _is_percent(name) else flat, np.nan)
        metrics[name] = ours(values)
    return LossLandscapeSurface(x, y, metrics, done, left_out, partial, dir_file)


def _find_dir_file(dir_file: str | None, src: str) -> str | None:
    """The directions file as recorded (relative to where plot_surface.py ran) or, failing
    that, beside the surface file."""
    if not dir_file:
        return None
    for candidate in (dir_file, os.path.join(os.path.dirname(os.path.abspath(src)), os.path.basename(dir_file))):
        if os.path.isfile(candidate):
            return candidate
    return None


def _explained_variance(path: str | None) -> np.ndarray | None:
    """``explained_variance_ratio_`` of a PCA directions file (plot_trajectory.py's)."""
    if path is None:
        return None
    try:
        with h5py.File(path, "r", locking=False) as h5:
            dset = h5.get("explained_variance_ratio_")
            return np.asarray(dset[()], dtype=np.float64).reshape(-1) if isinstance(dset, h5py.Dataset) else None
    except (OSError, ValueError, TypeError):
        return None


def import_loss_landscape(
    src: str | os.PathLike, out: str | os.PathLike, *, force: bool = False
) -> tuple[str, LossLandscapeSurface]:
    """Write a loss-landscape surface file as a landscape result file (kind ``loss-landscape``).

    ``landscape info``, ``plot`` and ``export`` then read it like a surface landscape
    computed. The cells (``[i, j]`` at ``(x[i], y[j])``), done flags and units follow
    :func:`read_loss_landscape`; the arrays are ``x`` (and ``y``), plus
    ``explained-variance-ratio`` when a PCA directions file is found (the figures label their
    axes with it). The attributes say where it came from: ``source`` (the path as given),
    ``source-sha256``, ``dir-file`` (as the file names it), ``dir-file-found`` and its
    ``dir-file-sha256`` (the directions are not read: they hold no parameter names),
    ``left-out`` (datasets not read, with the reason) and ``partial-cells``.

    Parameters
    ----------
    src : str or path-like
        The loss-landscape surface file.
    out : str or path-like
        The result file to write.
    force : bool
        Overwrite an existing ``out``.

    Returns
    -------
    (str, LossLandscapeSurface)
        ``out`` and what was read.

    Raises
    ------
    ResultFileError
        ``src`` is not such a file (see :func:`read_loss_landscape`), or ``out`` is ``src``.
    FileExistsError
        ``out`` exists and ``force`` is False.
    """
    from .weights import file_sha256

    src, out = os.fspath(src), os.fspath(out)
    if os.path.exists(out) and os.path.exists(src) and os.path.samefile(src, out):
        raise ResultFileError(f"--out {_fmt_path(out)} is the input file; expected a new file for the landscape result")
    if os.path.lexists(out) and not force:
        raise ResultExistsError(f"{_fmt_path(out)} already exists; pass force=True (CLI: --force) to overwrite it")
    surface = read_loss_landscape(src)
    found = _find_dir_file(surface.dir_file, src)
    attrs = {
        "surface-type": "loss-landscape",
        "source": src,
        "source-sha256": file_sha256(src),
        "source-format": "loss-landscape plot_surface.py: meshgrid order, -1 not computed, accuracy in percent",
        "dir-file": surface.dir_file,
        "dir-file-found": found,
        "dir-file-sha256": file_sha256(found) if found else None,
        "left-out": surface.left_out,
        "partial-cells": surface.partial,
    }
    arrays = {"x": surface.x} if surface.y is None else {"x": surface.x, "y": surface.y}
    ratio = _explained_variance(found)
    if ratio is not None and surface.y is not None:
        arrays["explained-variance-ratio"] = ratio
    names = list(surface.metrics)
    cells = np.flatnonzero(surface.done.ravel())

    with create_result(
        out, kind="loss-landscape", shape=surface.shape, metrics=names, attrs=attrs, arrays=arrays, force=force
    ) as rf:
        if cells.size:
            rf.write_cells(cells, {n: surface.metrics[n].ravel()[cells] for n in names})
    return out, surface


def export_loss_landscape(src: str | os.PathLike, out: str | os.PathLike, *, force: bool = False) -> str:
    """Write a line or plane as loss-landscape's surface file.

    The file holds what ``plot_1D.py``, ``plot_2D.py`` and ``h52vtp.py`` read:
    ``xcoordinates`` (nx,), ``ycoordinates`` (ny,) for a plane, and one dataset per metric
    under its own name (``train_loss``, ``train_acc``, ...): shape ``(nx,)`` for a line;
    for a plane ``(ny, nx)`` with the value at ``(x[i], y[j])`` at ``[j, i]``, the flat
    meshgrid order ``plot_surface.py`` fills (it creates the arrays ``(nx, ny)``; the numbers
    and their order are the same, and ``(ny, nx)`` is the shape ``plot_2D.py``'s ``meshgrid``
    draws for a grid that is not square). Accuracies (``acc``, ``*_acc``) are in percent; a
    cell not computed holds -1, as there (``plot_surface.py`` computes it when run on the
    file); a computed cell that is NaN stays NaN. Metrics added after the run (eigenvalue
    maps) are written with NaN where not computed. Root attributes name the source file, its
    sha256 and kind. ``plot_1D.py`` needs ``train_loss`` and ``train_acc``; ``h52vtp.py``
    needs a square grid.

    Parameters
    ----------
    src : str, path-like
        A landscape result file with a 1-D or 2-D grid and arrays ``x`` (and ``y``).
    out : str or path-like
        The file to write (whole or not at all).
    force : bool
        Overwrite an existing ``out``.

    Returns
    -------
    str
        ``out``.

    Raises
    ------
    ResultFileError
        ``src`` is not a landscape result file.
    ValueError
        ``src`` is not a line or plane with coordinates.
    FileExistsError
        ``out`` exists and ``force`` is False.
    """
    from .weights import file_sha256

    src, out = os.fspath(src), os.fspath(out)
    with open_result(src, "r") as rf:
        arrays = rf.array_names()
        needed = ["x"] if len(rf.shape) == 1 else ["x", "y"]
        if len(rf.shape) > 2 or any(a not in arrays for a in needed):
            raise ValueError(
                f"export to loss-landscape needs a line or plane with array(s) {', '.join(map(repr, needed))} "
                f"but {_fmt_path(src)} is a {rf.kind!r} result with grid {rf.shape} and arrays {arrays or 'none'}"
            )
        x = np.asarray(rf.read_array("x"), dtype=np.float64).reshape(-1)
        y = np.asarray(rf.read_array("y"), dtype=np.float64).reshape(-1) if len(rf.shape) == 2 else None
        if (x.size,) + (() if y is None else (y.size,)) != rf.shape:
            raise ValueError(
                f"{_fmt_path(src)}: arrays x ({x.size}) and y ({'-' if y is None else y.size}) do not fit its grid {rf.shape}"
            )
        done = np.asarray(rf.done, dtype=bool)
        values = {}
        for name in rf.metrics:
            v = np.asarray(rf.read_metric(name), dtype=np.float64)
            v = v * 100.0 if _is_percent(name) else v.copy()
            if name in rf.base_metrics:
                v[~done] = LL_MISSING
            values[name] = v if y is None else np.ascontiguousarray(v.T)  # [j, i]: meshgrid order
        kind = rf.kind
    if os.path.exists(out) and os.path.samefile(src, out):
        raise ValueError(f"--ll {_fmt_path(out)} is the input file; expected a new file")
    sha = file_sha256(src)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as h5:
            h5["xcoordinates"] = x
            if y is not None:
                h5["ycoordinates"] = y
            for name, v in values.items():
                h5[name] = v
            h5.attrs["landscape-source"] = src
            h5.attrs["landscape-source-sha256"] = sha
            h5.attrs["landscape-kind"] = kind
            h5.attrs["landscape-note"] = (
                "written by landscape export --ll: meshgrid order, -1 not computed, accuracy in percent"
            )

    return atomic_write(out, write, force=force)
