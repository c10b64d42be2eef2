"""Model merging and soups (a ``merge`` file of :func:`landscape.merge.evaluate_merges`): the
metric against the method's parameter (lambda, density, p, t, alpha), the lambda-plane of two
task vectors as a contour, and soups as bars."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._base import (
    Source,
    _display_values,
    _figure_and_axes,
    _fmt_level,
    _is_accuracy,
    _metric_label,
    _read,
    _Surface,
)

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_AXIS_LABELS = {
    "lambda": r"scale $\lambda$",
    "lambda_a": r"$\lambda_1$ (task vector 1)",
    "lambda_b": r"$\lambda_2$ (task vector 2)",
    "density": "TIES density k",
    "p": "DARE drop probability p",
    "seed": "seed",
    "t": "SLERP t",
    "alpha": r"WiSE-FT $\alpha$",
}


def _merge_file(src: Source | _Surface) -> tuple[_Surface, list[str], dict[str, np.ndarray]]:
    surface = _read(src)
    if surface.kind != "merge":
        raise ValueError(
            f"plot_merge needs a 'merge' file (landscape merge), got kind {surface.kind!r} in {surface.name}"
        )
    axes = [str(a) for a in surface.attrs["axes"]]
    params = {a: np.asarray(surface.attrs["parameters"][a], dtype=np.float64) for a in axes}
    return surface, axes, params


def _pick_metric(surface: _Surface, metric: str | None) -> str:
    if metric is not None:
        surface.metric(metric)
        return metric
    accs = [m for m in surface.metrics if _is_accuracy(m)]
    return (accs or list(surface.metrics))[0]


def plot_merge(src: Source | _Surface, metric: str | None = None, ax: Axes | None = None) -> Figure:
    """The figure of a ``merge`` file for one metric (default: its first accuracy).

    * the lambda-plane of two task vectors (axes ``lambda_a``, ``lambda_b``): labelled
      contours, the base (0, 0) and each fine-tune ((1, 0), (0, 1)) marked;
    * soups (axis ``row``): one bar per ingredient (gray) and soup (orange);
    * every other grid: the metric against its last axis (lambda, t or alpha), one line per
      value of the other axes (TIES densities; DARE p and seed).

    Parameters
    ----------
    src : path, ResultFile
        A file of kind ``merge``.
    metric : str, optional
        E.g. ``"test_acc"``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    surface, axes, params = _merge_file(src)
    metric = _pick_metric(surface, metric)
    values = _display_values(metric, surface.metric(metric))
    method = surface.attrs.get("method", "merge")
    if axes == ["lambda_a", "lambda_b"]:
        return _plane(values, params, metric, method, ax)
    if axes == ["row"]:
        soups = set(surface.attrs.get("members") or {})
        return _bars(values, surface.attrs.get("rows") or [], soups, metric, method, ax)
    fig, ax = _figure_and_axes(ax, figsize=(6.5, 4.5))
    x = params[axes[-1]]
    others = axes[:-1]
    for idx in np.ndindex(*values.shape[:-1]):
        label = ", ".join(f"{a}={params[a][i]:g}" for a, i in zip(others, idx, strict=True)) or None
        ax.plot(x, values[idx], marker="o", ms=3, label=label)
    ax.set_xlabel(_AXIS_LABELS.get(axes[-1], axes[-1]))
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"{method}: {_metric_label(metric)}")
    if others:
        ax.legend(fontsize="small")
    return fig


def _plane(values: np.ndarray, params, metric: str, method: str, ax) -> Figure:
    fig, ax = _figure_and_axes(ax, figsize=(6.0, 5.0))
    a, b = params["lambda_a"], params["lambda_b"]
    X, Y = np.meshgrid(a, b, indexing="ij")
    masked = np.ma.masked_invalid(values)
    filled = ax.contourf(X, Y, masked, levels=20, cmap="viridis")
    lines = ax.contour(X, Y, masked, levels=10, colors="k", linewidths=0.6)
    ax.clabel(lines, fontsize=7, fmt=_fmt_level)
    fig.colorbar(filled, ax=ax, label=_metric_label(metric))
    for (x, y), name in (((0, 0), "base"), ((1, 0), "ft 1"), ((0, 1), "ft 2")):
        ax.plot([x], [y], "o", mfc="white", mec="black")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(_AXIS_LABELS["lambda_a"])
    ax.set_ylabel(_AXIS_LABELS["lambda_b"])
    ax.set_title(f"{method}: {_metric_label(metric)} on the $\\lambda$-plane")
    return fig


def _bars(values: np.ndarray, rows, soups: set, metric: str, method: str, ax) -> Figure:
    fig, ax = _figure_and_axes(ax, figsize=(max(4.0, 0.6 * len(values) + 2), 4.5))
    labels = [str(r) for r in rows] if len(rows) == len(values) else [str(i) for i in range(len(values))]
    colors = ["tab:orange" if label in soups else "tab:gray" for label in labels]  # soups orange, ingredients gray
    ax.bar(np.arange(len(values)), np.nan_to_num(values), color=colors)
    ax.set_xticks(np.arange(len(values)), labels, rotation=45, ha="right", fontsize=8)
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"{method}: {_metric_label(metric)}")
    return fig
