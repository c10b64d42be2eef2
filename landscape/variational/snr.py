"""Signal-to-noise ratio of the weights, :math:`\\mathrm{SNR} = \\mu^2 / \\sigma^2 = 1/\\alpha`.

Weights with a high SNR are nearly deterministic; a variance network's weights all have
SNR 0. :func:`landscape.plot.plot_snr` draws one histogram of :math:`\\log_{10} \\mathrm{SNR}`
per layer from what :func:`snr` returns.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layers import MULTIPLICATIVE, variational_layers

__all__ = ["snr"]


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
