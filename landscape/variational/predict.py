"""The three ways to predict with a variational network, through the evaluation engine.

``deterministic``
    :math:`p(t \\mid x, \\mathbb E_q w)`: the means as weights (mean propagation, the weight
    scaling rule). For a variance network these are zeros: a constant prediction.
``stochastic``
    :math:`p(t \\mid x, \\hat w)` with one sample :math:`\\hat w \\sim q(w)`, the same for all
    inputs.
``ensemble``
    :math:`\\frac1K \\sum_k p(t \\mid x, w^k)`, :math:`w^k \\sim q(w)` (test-time averaging).

Every scheme is a set of weight points of the network's deterministic twin, evaluated by
:func:`landscape.ensembles.evaluate_ensemble` (all ``K`` samples in one batched run).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..ensembles.metrics import EnsembleResult, evaluate_ensemble
from .networks import _Sampler

__all__ = ["SCHEMES", "predict"]

SCHEMES = ("deterministic", "stochastic", "ensemble")


def predict(
    vmodel: nn.Module,
    data,
    *,
    schemes: Sequence[str] | str = SCHEMES,
    samples: int = 10,
    seed: int = 0,
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device=None,
    forward=None,
    progress: bool = False,
) -> dict[str, EnsembleResult]:
    """Accuracy, NLL and calibration of the prediction schemes of ``vmodel`` on ``data``.

    Parameters
    ----------
    vmodel : nn.Module
        A network with variational layers; not modified.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Streamed through the engine (the targets come from its batches).
    schemes : sequence of {"deterministic", "stochastic", "ensemble"}, or one of them
    samples : int
        ``K``, the ensemble's members.
    seed : int
        Seeds the weight samples (:func:`~landscape.variational.sample_weights`); the
        stochastic scheme's sample is the ensemble's first member.
    bn, bn_data, precision, device, forward, progress
        As for :func:`~landscape.ensembles.evaluate_ensemble` (BatchNorm statistics are
        those ``vmodel`` accumulated in training unless ``bn`` recomputes them per sample;
        ``forward(model, batch)`` receives the deterministic twin).

    Returns
    -------
    dict of str to EnsembleResult
        One entry per scheme, in the order asked; the deterministic and stochastic ones have
        a single member.
    """
    if isinstance(schemes, str):
        schemes = (schemes,)
    schemes = list(schemes)
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or not schemes:
        raise ValueError(f"schemes should be some of {SCHEMES}, got {schemes!r}")
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"samples should be a positive integer, got {samples!r}")
    sampler = _Sampler(vmodel)
    draws = []
    if "stochastic" in schemes or "ensemble" in schemes:
        draws = sampler.draw(int(samples) if "ensemble" in schemes else 1, seed)
    members = {"deterministic": [sampler.mean()], "stochastic": draws[:1], "ensemble": draws}
    kw = dict(bn=bn, bn_data=bn_data, precision=precision, device=device, forward=forward, progress=progress)
    return {s: evaluate_ensemble(sampler.twin, members[s], data, **kw) for s in dict.fromkeys(schemes)}
