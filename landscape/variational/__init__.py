"""Variational networks: Gaussian posteriors over weights, and how to predict with them.

The layers of Molchanov et al. (2017, *Variational dropout sparsifies deep neural networks*)
and Neklyudov et al. (2018, *Variance networks*): every weight of a
:class:`VariationalLinear`/:class:`VariationalConv2d` has a Gaussian posterior
:math:`q(w_{ij})`, the prior is log-uniform, :math:`p(w) \\propto 1/|w|`, and training
maximises the ELBO (:func:`fit_elbo`) with the local reparameterization trick.

Parameterizations of :math:`q` (:func:`convert`, ``parameterization=``)
    ``"layer"`` :math:`\\mathcal N(\\mu_{ij}, \\alpha \\mu_{ij}^2)`, one :math:`\\alpha` per layer
    (fixed, :math:`\\alpha = p/(1-p)`: Gaussian dropout); ``"neuron"`` one :math:`\\alpha_j`
    per output neuron or filter; ``"weight"`` one :math:`\\alpha_{ij}` per weight (sparse
    variational dropout); ``"additive"`` :math:`\\mathcal N(\\mu_{ij}, \\sigma_{ij}^2)` with
    :math:`\\log\\sigma^2` free; ``"variance"`` :math:`\\mathcal N(0, \\sigma_{ij}^2)`, a
    variance layer: no mean at all, its KL is a constant (0 here), so training maximises the
    expected log-likelihood alone.

Prediction schemes (:func:`predict`)
    ``"deterministic"`` :math:`p(t \\mid x, \\mathbb E w)` (the means: chance level for a
    variance network), ``"stochastic"`` :math:`p(t \\mid x, \\hat w)` with one sample
    :math:`\\hat w \\sim q`, ``"ensemble"`` :math:`\\frac1K \\sum_k p(t \\mid x, w^k)`. Each is a
    set of weight points of the network's :func:`deterministic_twin` (the same network with
    plain layers), evaluated by the batched engine (:func:`landscape.ensembles.evaluate_ensemble`).

:func:`snr` gives the weights' signal-to-noise ratios :math:`\\mu^2/\\sigma^2 = 1/\\alpha`
(drawn by :func:`landscape.plot.plot_snr`); :func:`save_variational`/:func:`load_variational`
store a network with the spec that rebuilds it.

Examples
--------
>>> import torch, landscape as ls
>>> from landscape import variational as vi
>>> vnet = vi.convert(ls.models.mlp(64, [16]), "weight", alpha=0.05)
>>> test = ls.load_data("digits", "test", max_samples=50)
>>> res = vi.predict(vnet, test, samples=4)
>>> sorted(res), res["ensemble"].member_acc.shape
(['deterministic', 'ensemble', 'stochastic'], (4,))
"""

from .io import FORMAT, load_variational, read_variational, save_predictions, save_variational
from .kl import neg_kl_log_uniform
from .layers import (
    MODES,
    PARAMETERIZATIONS,
    VariationalConv2d,
    VariationalLayer,
    VariationalLinear,
    kl_divergence,
    variational_layers,
    variational_mode,
)
from .networks import convert, deterministic_twin, mean_weights, sample_weights
from .predict import SCHEMES, predict
from .snr import snr
from .train import fit_elbo

__all__ = [
    "FORMAT",
    "MODES",
    "PARAMETERIZATIONS",
    "SCHEMES",
    "VariationalConv2d",
    "VariationalLayer",
    "VariationalLinear",
    "convert",
    "deterministic_twin",
    "fit_elbo",
    "kl_divergence",
    "load_variational",
    "mean_weights",
    "neg_kl_log_uniform",
    "predict",
    "read_variational",
    "sample_weights",
    "save_predictions",
    "save_variational",
    "snr",
    "variational_layers",
    "variational_mode",
]
