"""Hessian figures: the eigenvalue maps of a surface (Li et al., 2018, Fig. 7) and the SLQ
spectral density."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from ._base import (
    Source,
    _figure_and_axes,
    _figure_of,
    _metric_label,
    _read,
    _require_plane,
    _title,
)
from .surfaces import plot_heatmap

_MAP_PANELS = ("lambda_max", "lambda_min", "eig_ratio")
_DIAGNOSTICS = ("eig_residual_max", "eig_residual_min", "eig_hvps")


def plot_hessian_maps(src: Source, ax: Sequence[Axes] | None = None) -> Figure:
    """The eigenvalue maps of a plane side by side: :math:`\\lambda_{\\max}`,
    :math:`\\lambda_{\\min}` and :math:`|\\lambda_{\\min}/\\lambda_{\\max}|` (Li et al. 2018,
    Figure 7), with the checkpoints marked.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A plane with the metrics written by :func:`landscape.hessian.eigen_map`.
    ax : three Axes, optional
    """
    surface = _read(src)
    _require_plane(surface, "plot_hessian_maps")
    missing = [m for m in _MAP_PANELS if m not in surface.metrics]
    if missing:
        raise ValueError(f"{surface.name} has no eigenvalue maps ({missing}); run `landscape hessian map` first")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(16.0, 4.6), layout="constrained")
        ax = fig.subplots(1, 3)
    else:
        fig = _figure_of(ax[0])
    for a, name in zip(ax, _MAP_PANELS):
        plot_heatmap(surface, name, ax=a, log=False)
        a.set_title(_metric_label(name) if name != "eig_ratio" else r"$|\lambda_{\min} / \lambda_{\max}|$")
    fig.suptitle(_title(surface, "Hessian eigenvalues"))
    return fig


def plot_density(
    result: Any,
    ax: Axes | None = None,
    *,
    sigma: float | None = None,
    num: int = 1000,
    log: bool = True,
) -> Figure:
    """Draw a smoothed spectral density (eigenvalue against density, log scale by default).

    Parameters
    ----------
    result : SpectralDensity
        From :func:`landscape.hessian.slq`, or any object with its ``density(sigma=, num=)``,
        ``default_sigma()``, ``probes`` and ``nodes``.
    ax : matplotlib Axes, optional
        Where to draw; a new :class:`~matplotlib.figure.Figure` (no pyplot state, renders
        headless) when omitted.
    sigma, num
        As for :meth:`SpectralDensity.density <landscape.hessian.SpectralDensity.density>`.
    log : bool
        Logarithmic density axis (the bulk near 0 and the outliers differ by orders of
        magnitude), floored at 1e-8 of the peak.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _figure_and_axes(ax, figsize=(5.0, 3.5))
    sigma = float(sigma) if sigma is not None else float(result.default_sigma())
    grid, dens = result.density(sigma=sigma, num=num)
    ax.plot(grid, dens, color="C0", lw=1.2)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(max(dens.max(), 1e-300) * 1e-8, dens.max() * 2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"SLQ: {result.probes} probes, {result.nodes.shape[1]} steps, sigma = {sigma:.3g}", fontsize=9)
    return fig
