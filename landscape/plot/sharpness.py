"""The figure of a sharpness file: the loss increase of every perturbation (or batch) of every
measure, with the measure's mean."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..io import ResultFile, open_result
from ._base import Source, _figure_and_axes

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _read_cells(src: Source) -> tuple[list[str], list[np.ndarray], list[np.ndarray], str]:
    """``(labels, increases per measure, counts per measure, file name)`` of a sharpness file."""
    if isinstance(src, ResultFile):
        return _cells_of(src)
    with open_result(src, "r") as rf:
        return _cells_of(rf)


def _cells_of(rf: ResultFile) -> tuple[list[str], list[np.ndarray], list[np.ndarray], str]:
    if rf.kind != "sharpness":
        raise ValueError(f"plot_sharpness: {rf.path} is a {rf.kind!r} file; expected a 'sharpness' file")
    a = dict(rf.attrs)
    labels = list(a.get("labels") or [str(m) for m in a["measures"]])
    row = rf.read_array("row")
    increase = rf.read_metric("loss") - rf.read_metric("base_loss")
    count = rf.read_metric("count")
    incs = [increase[row == r] for r in range(1, len(labels) + 1)]
    counts = [count[row == r] for r in range(1, len(labels) + 1)]
    return labels, incs, counts, rf.path


def plot_sharpness(src: Source, ax: Axes | None = None) -> Figure:
    """The loss increase of every cell of every measure of a ``sharpness`` file (one column
    per measure, cells as dots, the mean as a bar: count-weighted over the batches of a worst
    case), on a symmetric-log axis. Cells not computed yet are left out.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A file written by :func:`landscape.sharpness.compute_sharpness` (``landscape sharpness --out``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels, incs, counts, path = _read_cells(src)
    fig, ax = _figure_and_axes(ax, figsize=(max(5.0, 1.3 * len(labels) + 2), 4.5))
    rng = np.random.default_rng(0)
    finite = np.concatenate([v[np.isfinite(v)] for v in incs] + [np.zeros(1)])
    for i, (v, c) in enumerate(zip(incs, counts)):
        ok = np.isfinite(v)
        if not ok.any():
            continue
        x = i + rng.uniform(-0.18, 0.18, ok.sum())
        ax.scatter(x, v[ok], s=10, alpha=0.6, color=f"C{i % 10}", lw=0)
        mean = float(np.sum(v[ok] * c[ok]) / np.sum(c[ok])) if np.all(np.isfinite(c[ok])) else float(np.mean(v[ok]))
        ax.hlines(mean, i - 0.3, i + 0.3, color="k", lw=2)
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    ax.set_yscale("symlog", linthresh=max(scale * 1e-3, 1e-12))
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("loss increase L(w + delta) - L(w)")
    ax.set_title(f"sharpness — {path.rsplit('/', 1)[-1]} (bars: means)", fontsize=9)
    return fig
