"""Curve profiles: loss and error along a curve and along the line segment (Garipov et al.,
2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from ._base import (
    _ANCHOR_STYLE,
    Source,
    _cells_note,
    _figure_and_axes,
    _is_accuracy,
    _is_curve_profile,
    _is_loss,
    _mark_nonfinite_points,
    _read,
    _Surface,
)

_CURVE_KINDS = {"bezier": "Bezier curve", "polychain": "polygonal chain"}

_CURVE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:olive")  # the curve, one per split
_LINE_COLORS = ("0.25", "tab:brown", "tab:pink", "tab:cyan")  # the line segment, one per split
_ERROR_SUFFIXES = ("_acc", "_accuracy")


def _split_of(metric: str) -> str | None:
    """``train_loss`` -> ``train``; None for a metric without a split prefix."""
    for suffix in ("_loss", *_ERROR_SUFFIXES):
        if metric.endswith(suffix) and len(metric) > len(suffix):
            return metric[: -len(suffix)]
    return None


def _curve_name(attrs: dict[str, Any]) -> str:
    """``Bezier curve, 1 bend`` / ``polygonal chain, 3 bends`` from ``curve-kind`` and ``n-bends``."""
    kind = attrs.get("curve-kind")
    name = _CURVE_KINDS.get(str(kind), f"{kind} curve") if kind is not None else "curve"
    bends = attrs.get("n-bends")
    if bends is not None:
        bends = int(bends)
        name += f", {bends} bend{'' if bends == 1 else 's'}"
    return name


def _curve_rows(surface: _Surface) -> dict[str, int]:
    """Row index of the curve and of the line (root attribute ``rows``, default curve 0, line 1)."""
    rows = surface.attrs.get("rows")
    if isinstance(rows, list) and "curve" in rows and "line" in rows:
        return {"curve": rows.index("curve"), "line": rows.index("line")}
    return {"curve": 0, "line": 1}


def _curve_t(surface: _Surface) -> np.ndarray:
    steps = surface.shape[1]
    if "t" not in surface.arrays:  # evaluate_curve always writes t; older files: evenly spaced
        return np.linspace(0.0, 1.0, steps)
    t = np.asarray(surface.arrays["t"], dtype=np.float64).reshape(-1)
    if t.size != steps:
        raise ValueError(f"{surface.name}: array 't' has {t.size} entries but the grid has {steps} points along t")
    return t


def _barrier(surface: _Surface, row: str, split: str) -> float | None:
    value = surface.attrs.get(f"barrier-{row}-{split}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _accuracy_metric(surface: _Surface, split: str) -> str | None:
    return next((split + s for s in _ERROR_SUFFIXES if split + s in surface.metrics), None)


def _profile_panels(surface: _Surface, splits: Sequence[str] | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[("loss", [(split, metric), ...]), ("error", [...])]``, panels without a metric left out."""
    loss_splits = [s for m in surface.metrics if _is_loss(m) and (s := _split_of(m)) is not None]
    acc_splits = [s for m in surface.metrics if _is_accuracy(m) and (s := _split_of(m)) is not None]
    if splits is None:  # Garipov et al.: train loss and test error
        loss = ["train"] if "train" in loss_splits else loss_splits[:1]
        error = ["test"] if "test" in acc_splits else acc_splits[-1:]
    else:
        if isinstance(splits, str):
            splits = [splits]
        unknown = [s for s in splits if s not in loss_splits and s not in acc_splits]
        if unknown:
            raise ValueError(
                f"{surface.name} has no loss or accuracy of split(s) {unknown}; its metrics are {list(surface.metrics)}"
            )
        loss = [s for s in splits if s in loss_splits]
        error = [s for s in splits if s in acc_splits]
    panels = []
    if loss:
        panels.append(("loss", [(s, f"{s}_loss") for s in loss]))
    if error:
        panels.append(("error", [(s, _accuracy_metric(surface, s)) for s in error]))
    if not panels:
        raise ValueError(
            f"plot_curve_profile: {surface.name} has no <split>_loss or <split>_acc metric; "
            f"it has {list(surface.metrics)}"
        )
    return panels


def _draw_profile_panel(
    ax: Axes, surface: _Surface, t: np.ndarray, what: str, chosen: list[tuple[str, str]], rows: dict[str, int]
) -> list[str]:
    """One panel: each split's loss (or error in %) along t, curve solid, line dashed.

    Returns the metrics drawn.
    """
    curve_name = _curve_name(surface.attrs)
    several = len(chosen) > 1
    nonfinite = np.zeros(t.shape, dtype=bool)
    for k, (split, metric) in enumerate(chosen):
        values = surface.metric(metric)
        bad = surface.cells(metric)[1]
        nonfinite |= bad[rows["curve"]] | bad[rows["line"]]
        if what == "error":
            values = 100.0 * (1.0 - values)
        for row, style, colors, width in (
            ("curve", "-", _CURVE_COLORS, 2.4),
            ("line", "--", _LINE_COLORS, 1.9),
        ):
            label = curve_name if row == "curve" else "line segment"
            if several:
                label += f", {split}"
            height = _barrier(surface, row, split) if what == "loss" else None
            if height is not None:
                label += f" (barrier {height:.3g} nats)"
            ax.plot(
                t,
                values[rows[row]],
                style,
                color=colors[k % len(colors)],
                linewidth=width,
                label=label,
                gid=f"{row}-{split}_{what}",
                zorder=3 if row == "curve" else 2,
            )
        # the endpoints (t = 0 and t = 1): the two trained networks, shared by curve and line
        ends = []
        for i in (0, -1):
            column = values[[rows["curve"], rows["line"]], i]
            finite = column[np.isfinite(column)]
            ends.append(finite[0] if finite.size else np.nan)
        ax.plot(
            t[[0, -1]],
            ends,
            gid=f"endpoints-{split}_{what}",
            label="endpoints" if k == 0 else "_nolegend_",
            clip_on=False,
            **_ANCHOR_STYLE,
        )
    _mark_nonfinite_points(ax, t, nonfinite, gid=f"nonfinite-{what}")  # gaps in the lines, crosses below
    prefix = "" if several else f"{chosen[0][0]} "
    ax.set_ylabel(f"{prefix}loss" if what == "loss" else f"{prefix}error (%)")
    ax.set_xlabel(str(surface.attrs.get("x-label", "t")))
    span = float(t.max() - t.min()) or 1.0
    ax.set_xlim(float(t.min()) - 0.02 * span, float(t.max()) + 0.02 * span)
    ax.grid(True, alpha=0.3)
    # below the axes, as in plot_line: the legend never covers the barrier of the line
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "endpoints")  # endpoints last
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=1 if several else min(2, len(handles)),
        fontsize=9,
        frameon=False,
    )
    return [metric for _, metric in chosen]


def plot_curve_profile(
    src: Source, *, ax: Axes | Sequence[Axes] | None = None, splits: Sequence[str] | None = None
) -> Figure:
    """Loss and error along a curve and along the line segment (Garipov et al., 2018).

    Reads a curve profile (kind ``"curve"``, written by
    :func:`landscape.curves.profile.evaluate_curve`): grid ``(2, T)`` with row 0 the
    trained curve and row 1 the straight line between the same endpoints (root
    attribute ``rows``), array ``t`` float[T].  Two panels side by side:

    * left, the loss along t (default: ``train_loss``): the curve solid, the line
      dashed; the legend gives each one's barrier height from the root attributes
      ``barrier-curve-<split>`` and ``barrier-line-<split>`` (max loss along the path
      minus the mean of the endpoint losses, e.g. ``barrier 0.45 nats``) once the run
      has written them;
    * right, the error in percent, ``100 * (1 - acc)`` (default: ``test_acc``).

    The legend names the curve from ``curve-kind`` and ``n-bends`` (``Bezier curve, 1
    bend``, ``polygonal chain, 3 bends``) and the ``line segment``; the endpoints
    (t = 0 and t = 1, the two trained networks) are white circles.  Points not computed
    yet leave gaps and are counted in the title; computed points whose value is NaN or Inf
    leave gaps too, are marked by red crosses along the bottom and counted apart.  A panel whose metric the file
    lacks is left out (a file with only losses gives the loss panel alone).

    Parameters
    ----------
    src : str, path-like or ResultFile
        A curve profile result.
    ax : matplotlib Axes or sequence of Axes, optional
        Where to draw.  None: a new figure with both panels.  One Axes: the loss panel
        only (the error panel when the file has no loss).  A sequence of Axes: one per
        panel, loss then error.
    splits : sequence of str, optional
        Splits to draw, e.g. ``["train", "test"]``: the loss panel then shows the loss
        of each listed split and the error panel the error of each, in one colour per
        split.  Default: train loss on the left and test error on the right (the
        splits the file has when it lacks those).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        The file is not a curve profile, has no loss or accuracy metric, or a given
        split is not in it, or ``ax`` holds another number of axes than there are
        panels.
    """
    surface = _read(src)
    if not _is_curve_profile(surface):
        raise ValueError(
            f"plot_curve_profile needs a curve profile (kind 'curve', written by evaluate_curve) but "
            f"{surface.name} is a {surface.kind!r} result with surface-type {surface.surface_type!r}"
        )
    if len(surface.shape) != 2 or surface.shape[0] != 2:
        raise ValueError(
            f"{surface.name}: a curve profile has a (2, T) grid (curve, line); this one has {surface.shape}"
        )
    t = _curve_t(surface)
    rows = _curve_rows(surface)
    panels = _profile_panels(surface, splits)

    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.0 * len(panels), 4.6), layout="constrained")
        axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    elif isinstance(ax, (Sequence, np.ndarray)):
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(panels):
            raise ValueError(
                f"plot_curve_profile: {len(axes)} axes given for {len(panels)} panel(s) "
                f"({', '.join(what for what, _ in panels)}) of {surface.name}"
            )
        fig, _ = _figure_and_axes(axes[0])
    else:
        fig, ax = _figure_and_axes(ax)
        axes, panels = [ax], panels[:1]

    drawn = []
    for axis, (what, chosen) in zip(axes, panels, strict=True):
        drawn += _draw_profile_panel(axis, surface, t, what, chosen, rows)
        if len(chosen) > 1:
            axis.set_title(f"{what}: {', '.join(s for s, _ in chosen)}")

    note = _cells_note(surface, drawn, "points").strip()
    title = f"{_curve_name(surface.attrs)} vs line segment between the same endpoints"
    if ax is None:
        fig.suptitle(title + (f"\n{note}" if note else ""))
    elif note:
        axes[0].set_title((axes[0].get_title() + "\n" if axes[0].get_title() else "") + note)
    return fig
