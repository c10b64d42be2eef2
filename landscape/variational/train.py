"""Training a variational network: stochastic maximisation of the ELBO.

Per sample, the negative ELBO is

.. math::

    \\mathcal L = \\frac1N \\sum_{n=1}^{N} \\mathbb E_q\\, [-\\log p(t_n \\mid x_n, w)]
        + \\frac{\\beta}{N} \\mathrm{KL}(q(w) \\,\\|\\, p(w)),

estimated on a minibatch with one local-reparameterization sample per input (the mean
cross-entropy of the batch) and the KL of :func:`~landscape.variational.kl_divergence`;
:math:`\\beta` is ``kl_weight``, optionally ramped up linearly from 0 over the first
``warmup_epochs``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..batches import call_model
from ..budget import check_training
from ..train import TrainBatches, resolve_loss
from .layers import kl_divergence, variational_mode

__all__ = ["fit_elbo"]


def fit_elbo(
    vmodel: nn.Module,
    data,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    kl_weight: float = 1.0,
    warmup_epochs: float = 0,
    seed: int = 0,
    loss=None,
    forward=None,
    progress: bool = False,
) -> dict[str, list[float] | float]:
    """Train ``vmodel`` in place with Adam on the negative ELBO per sample.

    Parameters
    ----------
    vmodel : nn.Module
        A network with variational layers (:func:`~landscape.variational.convert`); trained
        in "sample" mode (local reparameterization) whatever its layers' modes, which are
        restored afterwards together with its train/eval flag.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        The training set (:class:`landscape.train.TrainBatches`); its size ``N`` scales the
        KL (a loader's ``len(loader.sampler)`` or ``len(loader.dataset)``, else one counting
        pass).
    epochs : int
        Passes over the data (in memory the last batch of an epoch may be smaller).
    lr : float
        Adam's learning rate (all parameters, the noise parameters included).
    batch_size : int
    kl_weight : float
        :math:`\\beta`; 0 trains the expected log-likelihood only.
    warmup_epochs : float
        Linear KL warm-up: at iteration ``i`` (from 1), :math:`\\beta` = ``kl_weight * min(1, i /
        (warmup_epochs * iterations_per_epoch))``; 0 for none.
    seed : int
        Seeds the batch order and the noise (in a forked RNG: the caller's global RNG state is
        left as it was).
    loss : callable, str or Metric, optional
        The data term per sample (default cross-entropy; see
        :func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.
    progress : bool
        A ``tqdm`` bar over epochs.

    Returns
    -------
    dict
        Lists with one value per epoch: ``loss`` (the minimised objective, averaged over the
        epoch's batches), ``nll`` (the mean data term, cross-entropy by default), ``kl`` (KL of
        the whole network at the end of the epoch), ``kl_weight`` (:math:`\\beta` at the end of
        the epoch), ``acc`` (training accuracy of the sampled forward passes; NaN where the
        targets are not one class per sample); ``seconds`` (float).
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs should be a positive integer, got {epochs!r}")
    if batch_size < 1 or lr <= 0 or kl_weight < 0 or warmup_epochs < 0:
        raise ValueError(
            f"expected batch_size >= 1, lr > 0, kl_weight >= 0, warmup_epochs >= 0; got batch_size={batch_size}, "
            f"lr={lr}, kl_weight={kl_weight}, warmup_epochs={warmup_epochs}"
        )
    check_training(vmodel, data, "variational training", copies=3)
    lossfn = resolve_loss(loss)
    first = next(iter(vmodel.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    g = torch.Generator().manual_seed(int(seed))
    batches = TrainBatches(data, batch_size, generator=g, device=device, dtype=dtype)
    n = batches.n
    if n == 0:
        raise ValueError("data is empty (0 samples)")
    warmup_iters = warmup_epochs * batches.steps_per_epoch() if warmup_epochs > 0 else 0
    opt = torch.optim.Adam(vmodel.parameters(), lr=lr)
    hist: dict[str, list[float]] = {k: [] for k in ("loss", "nll", "kl", "kl_weight", "acc")}
    was_training = vmodel.training
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(epochs), desc="elbo", unit="epoch", leave=False)
    it = 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), variational_mode(vmodel, "sample"):
        torch.manual_seed(int(seed))
        vmodel.train()
        for _ in range(int(epochs)):
            sums, steps = np.zeros(3), 0
            for batch in batches.epoch():
                it += 1
                steps += 1
                beta = kl_weight * (min(1.0, it / warmup_iters) if warmup_iters > 0 else 1.0)
                out = call_model(vmodel, None, batch, forward)
                nll = lossfn(out, batch)
                objective = nll + beta * kl_divergence(vmodel).to(nll.device) / n if beta > 0 else nll
                opt.zero_grad(set_to_none=True)
                objective.backward()
                opt.step()
                sums += [objective.item(), nll.item(), _accuracy(out, batch.target)]
            with torch.no_grad():
                kl = float(kl_divergence(vmodel))
            means = sums / steps
            for key, v in zip(("loss", "nll", "kl", "kl_weight", "acc"), (means[0], means[1], kl, beta, means[2])):
                hist[key].append(float(v))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4f}", acc=f"{hist['acc'][-1]:.3f}")
    if bar is not None:
        bar.close()
    vmodel.train(was_training)
    out_hist: dict[str, list[float] | float] = dict(hist)
    out_hist["seconds"] = time.perf_counter() - start
    return out_hist


def _accuracy(out: torch.Tensor, y: torch.Tensor | None) -> float:
    """Fraction of arg-max predictions equal to class targets ``y`` (NaN for other targets)."""
    if y is None or y.is_floating_point() or tuple(out.shape[:-1]) != tuple(y.shape):
        return float("nan")
    return (out.argmax(-1) == y).float().mean().item()
