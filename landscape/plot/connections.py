"""Connections between two networks (Anokhin & Yarotsky, 2020): the accuracy along every
path, and WA-ensembles against the number of members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import connection_labels, read_connections, read_wa_ensemble
from ._base import _fields, _figure_and_axes

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def swap_points(stage: Any) -> np.ndarray:
    """bool[K]: the points of a connection path that lie on a swap stage (the sequence of
    single-neuron swaps of an OT path, Anokhin & Yarotsky 2020, hundreds of points where the
    other stages have the grid's ``points``): a stage with more than twice the points of the
    path's smallest stage. All False for a path without stages (``stage`` all 0).

    Examples
    --------
    >>> swap_points([1, 1, 1, 2, 2, 2, 2, 2, 2, 2]).tolist()
    [False, False, False, True, True, True, True, True, True, True]
    >>> swap_points([0, 0, 0]).any()
    np.False_
    """
    stage = np.asarray(stage).reshape(-1)
    stages, counts = np.unique(stage[stage > 0], return_counts=True)
    if stages.size < 2:
        return np.zeros(stage.shape, dtype=bool)
    dense = stages[counts > 2 * counts.min()]
    return np.isin(stage, dense)


def plot_connections(report: Any, ax: Axes | None = None, *, split: str | None = None) -> Figure:
    """Accuracy along ``t`` of every connection method, one line each, with the endpoints'
    accuracies as labelled grey lines (A dotted, B dash-dotted).

    The swap stage of an OT path (:func:`swap_points`: hundreds of single-neuron swaps whose
    accuracy zig-zags) is drawn thin and faint behind the other methods, so that it does not
    hide them; the legend says so.

    Parameters
    ----------
    report : path, ResultFile, dict or ConnectionReport
        A file of kind ``"connections"`` (written by ``ConnectionReport.save``, read with
        :func:`landscape.io.read_connections`), the dict that function returns, or a
        :class:`~landscape.connect.ConnectionReport` (its ``methods``, ``skipped``,
        ``splits``, ``t``, ``acc``, ``endpoints`` and ``labels`` are read). Each line is
        named by the row label the file holds (``"Linear + WA (paper)"``; without labels, as
        :func:`landscape.io.connection_labels` names the rows of older files).
    ax : matplotlib Axes, optional
        Draw there (default: a new :class:`~matplotlib.figure.Figure`).
    split : str, optional
        The split to draw (default: the last one, usually ``"test"``).

    Points of a method whose accuracy is NaN or Inf (computed, not skipped) leave gaps,
    are marked by red crosses along the bottom and counted in the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rep = _fields(report, read_connections)
    splits = list(rep.splits)
    split = splits[-1] if split is None else split
    if split not in splits:
        raise ValueError(f"split {split!r} is not in the report (it has {splits})")
    fig, ax = _figure_and_axes(ax, figsize=(9.0, 4.5))
    notes = []
    labels = getattr(rep, "labels", None) or connection_labels(rep.methods, getattr(rep, "attrs", None) or {})
    faint = []
    for m in (m for m in rep.methods if m not in rep.skipped):
        t = np.asarray(rep.t[m], dtype=np.float64)
        acc = 100.0 * np.asarray(rep.acc[m][split], dtype=np.float64)
        swaps = swap_points(rep.stage[m]) if m in getattr(rep, "stage", {}) else np.zeros(t.shape, bool)
        # the swap stage's points left out of the method's line, the whole path thin and faint behind
        (line,) = ax.plot(t, np.where(swaps, np.nan, acc), marker=".", ms=3, zorder=3, label=labels.get(m, m))
        if swaps.any():  # drawn after every method's line (the lines keep the methods' order)
            faint.append((t, acc, line.get_color()))
        bad = ~np.isfinite(acc)
        if bad.any():  # computed points whose accuracy is NaN/Inf: gaps, and said in the title
            notes.append(f"{labels.get(m, m)}: {int(bad.sum())} of {bad.size} points not finite (NaN/Inf)")
            ax.plot(
                t[bad],
                np.full(int(bad.sum()), 0.03),
                "x",
                color="tab:red",
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                gid="nonfinite",
                label="_nolegend_",
            )
    for t, acc, color in faint:
        ax.plot(t, acc, color=color, lw=0.7, alpha=0.35, zorder=1, label="_nolegend_", gid="swaps")
    e = rep.endpoints[split]
    ax.axhline(100.0 * e["A_acc"], color="0.45", ls=":", lw=1.2, zorder=2, label=f"A (t = 0): {100 * e['A_acc']:.2f}%")
    ax.axhline(100.0 * e["B_acc"], color="0.45", ls="-.", lw=1.2, zorder=2, label=f"B (t = 1): {100 * e['B_acc']:.2f}%")
    if faint:
        ax.plot([], [], color="0.3", lw=0.7, alpha=0.35, label="OT swap stage (faint)")
    ax.set_xlabel("t")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_xlim(0.0, 1.0)
    ax.set_title("Connections between A and B" + "".join(f"\n{n}" for n in notes))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_wa_ensemble(curve: Any, ax: Axes | None = None) -> Figure:
    """Ensemble accuracy against the number of members: one line per head size (``Ind``, the
    ordinary ensemble, dashed), each named with its parameters relative to ``Ind``.

    Parameters
    ----------
    curve : path, ResultFile, dict or WAEnsembleCurve
        A file of kind ``"wa-ensemble"`` (written by ``WAEnsembleCurve.save``, read with
        :func:`landscape.io.read_wa_ensemble`), the dict that function returns, or a
        :class:`~landscape.connect.WAEnsembleCurve` (its ``head_layers``, ``n_layers``,
        ``sizes``, ``acc`` and ``cost`` are read).
    ax : matplotlib Axes, optional
        Draw there (default: a new :class:`~matplotlib.figure.Figure`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    curve = _fields(curve, read_wa_ensemble)
    acc = np.asarray(curve.acc, dtype=np.float64)
    fig, ax = _figure_and_axes(ax, figsize=(6.5, 4.5))
    for i, n in enumerate(curve.head_layers):
        ind = n == curve.n_layers
        c = curve.cost[i]
        label = "Ind" if ind else f"WA({n})"
        label += f", {c['params'] / c['params_ordinary']:.2f}x params"
        ax.plot(curve.sizes, 100 * acc[i], marker="o", ls="--" if ind else "-", label=label)
    ax.set_xlabel("number of networks m")
    ax.set_ylabel("ensemble accuracy (%)")
    ax.set_xticks(list(curve.sizes))
    ax.set_title("WA-ensembles: shared backbone vs independent networks")
    ax.legend(fontsize="small")
    if not np.isfinite(acc).any():  # pragma: no cover - nothing computed
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
    return fig
