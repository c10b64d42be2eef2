"""Fast ensembles (Garipov et al., 2018, FGE): error against the training budget, and the FGE
figure of the cyclic learning rate and the snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import read_ensembles
from ._base import _fields, _figure_and_axes, _figure_of

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_ensembles(comparison: Any, ax: Axes | None = None) -> Figure:
    """Test error of the ensemble of the members so far against the epochs spent: one line
    per run (markers at every member; independent networks dashed), like the FGE paper's
    budget figure.

    Parameters
    ----------
    comparison : path, ResultFile, dict or EnsembleComparison
        A file of kind ``"ensembles"`` (written by ``EnsembleComparison.save``, read with
        :func:`landscape.io.read_ensembles`), the dict that function returns, or a
        :class:`~landscape.ensembles.EnsembleComparison` (its ``labels`` and
        ``per_member["budget"]``, ``per_member["cumulative_acc"]`` are read).
    ax : matplotlib Axes, optional
        Draw there (default: a new :class:`~matplotlib.figure.Figure`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    c = _fields(comparison, read_ensembles)
    fig, ax = _figure_and_axes(ax, figsize=(6.5, 4.5))
    budget = np.asarray(c.per_member["budget"], dtype=np.float64)
    acc = np.asarray(c.per_member["cumulative_acc"], dtype=np.float64)
    for i, label in enumerate(c.labels):
        b, a = budget[i], acc[i]
        ok = np.isfinite(b) & np.isfinite(a)
        style = "--" if label.lower().startswith("ind") else "-"
        ax.plot(b[ok], 100 * (1 - a[ok]), marker="o", ms=4, ls=style, label=label)
    ax.set_xlabel("training budget (epochs)")
    ax.set_ylabel("ensemble test error (%)")
    ax.set_title("Ensembles against the training budget")
    ax.legend(fontsize="small")
    if not np.isfinite(acc).any():  # pragma: no cover - nothing computed
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
    return fig


def plot_fge(result: Any, member_error: Sequence[float] | None = None, ax: Sequence[Axes] | None = None) -> Figure:
    """The seeds' FGE figure: the cyclic learning rate over the iterations (top) and, at every
    snapshot, its distance from the start and its test error (``member_error``, in %) (bottom).

    Parameters
    ----------
    result : FGEResult
        From :func:`landscape.ensembles.fge`, or any object with its ``lr`` (the rate of every
        iteration), ``iterations`` (of the snapshots) and ``distance`` (of each snapshot).
    member_error : sequence of float, optional
        Test error (%) of every snapshot, e.g.
        ``100 * (1 - comparison.per_member["member_acc"][0])``.
    ax : pair of Axes, optional
        The top and bottom panels (default: a new :class:`~matplotlib.figure.Figure`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 5.0), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    else:
        top, bottom = ax
        fig = _figure_of(top)
    it = np.arange(1, len(result.lr) + 1)
    top.plot(it, result.lr, color="0.3")
    for i in result.iterations:
        top.axvline(i, color="tab:green", ls=":", lw=1)
    top.set_ylabel("learning rate")
    top.set_title(f"FGE: {len(result.iterations)} snapshots at the middle of each cycle (rate alpha2)")
    (dline,) = bottom.plot(result.iterations, result.distance, "o-", color="tab:blue", label="distance from start")
    bottom.set_ylabel("L2 distance from the start", color="tab:blue")
    bottom.set_xlabel("iteration")
    handles = [dline]
    if member_error is not None:
        right = bottom.twinx()
        err = np.asarray(member_error, dtype=float)[: len(result.iterations)]
        (eline,) = right.plot(result.iterations, err, "s--", color="tab:red", label="snapshot test error")
        right.set_ylabel("test error (%)", color="tab:red")
        handles.append(eline)
    bottom.legend(handles=handles, fontsize="small", loc="lower right")
    return fig
