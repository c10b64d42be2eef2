"""Whole networks: conversion to variational layers, the deterministic twin, weight samples.

A variational network is any module whose ``nn.Linear``/``nn.Conv2d`` layers were replaced
by :class:`~landscape.variational.VariationalLinear`/:class:`~landscape.variational.VariationalConv2d`
(:func:`convert`). Its *deterministic twin* is the same network with plain layers again: the
architecture of which every weight sample :math:`w \\sim q` (and the means) is a point, as
:class:`~landscape.weights.Weights` for the evaluation engine.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from ..weights import Layout, Weights
from .layers import VariationalConv2d, VariationalLayer, VariationalLinear, check_parameterization, variational_layers

__all__ = ["convert", "deterministic_twin", "mean_weights", "sample_weights"]

_CONVERTIBLE = {nn.Linear: VariationalLinear, nn.Conv2d: VariationalConv2d}


def _replace(model: nn.Module, make) -> nn.Module:
    """Replace (in place) every module ``m`` of ``model`` for which ``make(name, m)`` returns
    a module; a module shared by several parents is replaced by one shared module. Returns
    the (possibly replaced) root."""
    memo: dict[int, nn.Module | None] = {}

    def new_for(name: str, mod: nn.Module) -> nn.Module | None:
        if id(mod) not in memo:
            memo[id(mod)] = make(name, mod)
        return memo[id(mod)]

    root = new_for("", model)
    if root is not None:
        return root
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):  # not named_children: it skips repeats
            if child is None:
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            new = new_for(full, child)
            if new is not None:
                setattr(parent, child_name, new)
    return model


def convert(
    model: nn.Module,
    parameterization: str = "weight",
    *,
    alpha: float = 0.01,
    log_sigma2: float | None = None,
    train_alpha: bool = True,
    variance_init: str = "weights",
    layers: Mapping[str, str | None] | None = None,
) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` and ``nn.Conv2d`` made variational.

    Parameters
    ----------
    model : nn.Module
        Any module; not modified. Only modules of exactly these types are converted
        (subclasses such as the output projection of ``nn.MultiheadAttention``, whose owner
        reads its ``weight`` directly, are left alone).
    parameterization : {"layer", "neuron", "weight", "additive", "variance"}
        Of every converted layer (see :mod:`landscape.variational.layers`).
    alpha : float
        Initial :math:`\\alpha` (multiplicative layers; additive layers start at
        :math:`\\sigma^2 = \\alpha \\mu^2`). With ``train_alpha=False`` it stays fixed:
        ``alpha = p / (1 - p)`` with ``"layer"`` is Gaussian dropout of rate ``p``.
    log_sigma2 : float, optional
        Initial :math:`\\log \\sigma^2` of additive and variance layers (all weights alike).
    train_alpha : bool
        Learn the noise parameters.
    variance_init : {"weights", "he"}
        Variance layers without ``log_sigma2``: :math:`\\sigma_{ij} = |w_{ij}|` of the model's
        weights (the default: the model's scale, and a different value for every weight, so
        the neurons are not symmetric from the start), or :math:`\\sigma^2 = 2/\\mathrm{fan\\_in}`
        (He). Both train alike on digits (64-1024-10, see ``tests/test_variational.py``).
    layers : mapping of str to str or None, optional
        Per-layer parameterizations by module name (``{"3": "weight"}``), overriding
        ``parameterization``; None keeps that layer deterministic.

    Notes
    -----
    A variance network needs an output layer with means (``layers={"<last>": None}`` or a
    multiplicative parameterization): if the logits are :math:`z = b + W^\\top h` with
    :math:`\\mathbb E_q W = 0`, then :math:`\\mathbb E_q z = b` for every input and, the
    cross-entropy being convex, :math:`\\mathbb E_q\\,\\mathrm{CE}(z) \\ge \\mathrm{CE}(b)`: no
    setting of the variances beats the constant prediction, and training drives them to 0.

    Returns
    -------
    nn.Module
        The variational network, in the training mode of ``model``; means (and biases) are
        copies of ``model``'s weights.

    Examples
    --------
    >>> import landscape as ls
    >>> net = convert(ls.models.mlp(64, [32]), "variance", layers={"3": "weight"})
    >>> [type(m).__name__ for m in net]
    ['Flatten', 'VariationalLinear', 'ReLU', 'VariationalLinear']
    >>> net[1].weight is None, net[3].parameterization
    (True, 'weight')
    """
    check_parameterization(parameterization)
    overrides = dict(layers or {})
    for p in overrides.values():
        if p is not None:
            check_parameterization(p)
    names = {n for n, m in model.named_modules() if type(m) in _CONVERTIBLE}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"layers names {unknown} that are not nn.Linear/nn.Conv2d modules of the model; "
            f"expected some of {sorted(names)}"
        )

    def make(name: str, mod: nn.Module) -> nn.Module | None:
        cls = _CONVERTIBLE.get(type(mod))
        p = overrides.get(name, parameterization)
        if cls is None or p is None:
            return None
        return cls.from_module(
            mod, p, alpha=alpha, log_sigma2=log_sigma2, train_alpha=train_alpha, variance_init=variance_init
        )

    return _replace(copy.deepcopy(model), make)


def deterministic_twin(vmodel: nn.Module) -> nn.Module:
    """A deep copy of ``vmodel`` with every variational layer replaced by a plain
    ``nn.Linear``/``nn.Conv2d`` of the same configuration holding the means (zeros for
    variance layers): the architecture whose weights are the samples of
    :func:`sample_weights`."""
    return _replace(
        copy.deepcopy(vmodel), lambda _, m: m.to_deterministic() if isinstance(m, VariationalLayer) else None
    )


class _Sampler:
    """The twin's layout and state, and the keys of every variational layer's weight."""

    def __init__(self, vmodel: nn.Module):
        self.twin = deterministic_twin(vmodel)
        self.layout = Layout.from_module(self.twin)
        self.base = OrderedDict((k, v.detach().clone()) for k, v in self.twin.state_dict().items())
        keys: dict[int, list[str]] = {}
        for name, mod in vmodel.named_modules(remove_duplicate=False):
            if isinstance(mod, VariationalLayer):
                keys.setdefault(id(mod), []).append(f"{name}.weight" if name else "weight")
        self.layers = [(m, keys[id(m)]) for _, m in variational_layers(vmodel)]

    def mean(self) -> Weights:
        return Weights(self.base, self.layout)

    def draw(self, k: int, seed: int) -> list[Weights]:
        if int(k) != k or k < 1:
            raise ValueError(f"the number of samples should be a positive integer, got {k!r}")
        g = torch.Generator().manual_seed(int(seed))
        out = []
        for _ in range(int(k)):
            sd = OrderedDict(self.base)
            for layer, keys in self.layers:
                w = layer.sample_weight(g)
                for key in keys:
                    sd[key] = w.to(self.base[key].device)
            out.append(Weights(sd, self.layout))
        return out


def sample_weights(vmodel: nn.Module, k: int, *, seed: int = 0) -> list[Weights]:
    """``k`` independent samples :math:`w \\sim q(w)` of the whole network as weights of its
    :func:`deterministic_twin`.

    Every variational layer's weight is drawn directly (:math:`w = \\mu + \\sigma\\epsilon`,
    not the local reparameterization) from a CPU generator seeded with ``seed``, sample after
    sample and layer after layer, so the first ``m`` of ``k`` samples do not depend on ``k``.
    Biases, BatchNorm statistics and all other entries are copied from ``vmodel``; the keys
    are exactly those of ``deterministic_twin(vmodel).state_dict()``. Values not shared
    between samples (the sampled weights) are fresh tensors; the copied entries are shared.
    """
    return _Sampler(vmodel).draw(k, seed)


def mean_weights(vmodel: nn.Module) -> Weights:
    """The posterior means as weights of :func:`deterministic_twin` (zeros for variance
    layers): the deterministic prediction's point."""
    return _Sampler(vmodel).mean()
