"""Signal-to-noise ratio of the weights, :math:`\\mathrm{SNR} = \\mu^2 / \\sigma^2 = 1/\\alpha`.

Weights with a high SNR are nearly deterministic; a variance network's weights all have
SNR 0. The figure is one histogram of :math:`\\log_{10} \\mathrm{SNR}` per layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .layers import MULTIPLICATIVE, variational_layers

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_snr", "snr"]


def snr(vmodel: nn.Module) -> dict[str, np.ndarray]:
    """:math:`\\mu^2/\\sigma^2` of every weight, per variational layer (float64, shaped like
    the weight), keyed by module name. Multiplicative layers give :math:`1/\\alpha` (also
    where :math:`\\mu = 0`), variance layers 0."""
    out = {}
    with torch.no_grad():
        for name, layer in variational_layers(vmodel):
            if layer.parameterization in MULTIPLICATIVE:
                value = torch.exp(-layer.log_alpha_full().double())
            else:
                mu = layer.mean_weight().double()
                value = mu * mu / torch.exp(layer.log_sigma2.double())
            out[name or "(root)"] = value.cpu().numpy()
    return out


def plot_snr(
    source: nn.Module | Mapping[str, np.ndarray], ax: Axes | None = None, *, bins: int = 50, title: str | None = None
) -> Figure:
    """Histograms of :math:`\\log_{10} \\mathrm{SNR}` per layer on one axis.

    Parameters
    ----------
    source : nn.Module or mapping of str to ndarray
        A variational network, or the output of :func:`snr`.
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
    values = snr(source) if isinstance(source, nn.Module) else {k: np.asarray(v) for k, v in source.items()}
    if not values:
        raise ValueError("nothing to plot: the network has no variational layers")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        try:
            fig = ax.get_figure(root=True)
        except TypeError:  # matplotlib < 3.10
            fig = ax.figure
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
