"""Variational networks: the weights' signal-to-noise ratios."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._base import _figure_and_axes

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_snr(
    values: Mapping[str, np.ndarray], ax: Axes | None = None, *, bins: int = 50, title: str | None = None
) -> Figure:
    """Histograms of :math:`\\log_{10} \\mathrm{SNR}` per layer on one axis.

    Parameters
    ----------
    values : mapping of str to ndarray
        The SNR :math:`\\mu^2/\\sigma^2` of every weight per layer: what
        :func:`landscape.variational.snr` returns for a variational network.
    ax : matplotlib Axes, optional
        Draw here; a new :class:`~matplotlib.figure.Figure` (no pyplot) when omitted.
    bins : int
        Shared bin edges over the finite values of all layers.
    title : str, optional

    Returns
    -------
    Figure
        Weights with SNR exactly 0 (variance layers) have no logarithm: their number is given
        in the legend instead of a bar.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_snr({"fc1": np.array([1e-3, 1e-2, 1e-2]), "fc2": np.zeros(4)})
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ['fc1 (3 weights)', 'fc2 (4 weights, all SNR = 0)']
    """
    if not isinstance(values, Mapping):
        raise TypeError(
            "plot_snr draws the SNRs per layer (a mapping of layer name to array), e.g. "
            f"landscape.variational.snr(model); got {type(values).__name__}"
        )
    values = {k: np.asarray(v) for k, v in values.items()}
    if not values:
        raise ValueError("nothing to plot: the network has no variational layers")
    fig, ax = _figure_and_axes(ax, figsize=(6.5, 4.2))
    logs = {k: np.log10(v[v > 0].ravel()) for k, v in values.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()] + [np.zeros(0)])
    edges = np.histogram_bin_edges(finite if finite.size else np.zeros(1), bins=bins)
    for name, v in values.items():
        zero = int((v.ravel() == 0).sum())
        label = f"{name} ({v.size} weights" + (
            ", all SNR = 0)" if zero == v.size else (f", {zero} with SNR = 0)" if zero else ")")
        )
        data = logs[name][np.isfinite(logs[name])]
        ax.hist(data, bins=edges, histtype="step", linewidth=1.5, label=label)
    if not finite.size:  # variance layers only: nothing has a logarithm
        ax.text(
            0.5,
            0.5,
            "every weight has SNR = 0\n(zero means: a variance network)",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
        ax.set_yticks([])
    ax.set_xlabel("log10 SNR  (mu^2 / sigma^2)")
    ax.set_ylabel("weights")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig
