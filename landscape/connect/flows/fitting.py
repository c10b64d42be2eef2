"""Fitting the connection models: flows to pooled neurons (Flow) and to path losses (Bijection).

:func:`fit_flows_for` fits one flow per neuron group to the neurons pooled over many trained
networks by maximum likelihood (:func:`fit_flow`, optionally from a shrunk Gaussian base,
:func:`ledoit_wolf`, and with early stopping on held-out networks); :func:`fit_bijection`
trains those flows further on the loss along the paths between pairs of the networks;
:func:`align_pool` first reorders every network's neurons to one template so that the input
slices of deep neurons mean the same channels in every network.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...train import TrainBatches, loss_of, resolve_loss
from ...weights import Weights
from ..matching import match_neurons
from ..neurons import permute
from .checks import (
    check_int,
    check_model,
    check_positive,
    check_weights_list,
    dtype_device,
    float_entries,
    progress_bar,
)
from .groups import NeuronGroup, check_groups, mlp_groups
from .models import DTYPES, FLOW_KINDS, IAF, Flow, RealNVP
from .paths import flow_path_tensors

__all__ = ["BASES", "align_pool", "fit_bijection", "fit_flow", "fit_flows_for", "ledoit_wolf"]


def ledoit_wolf(x: Tensor) -> tuple[Tensor, float]:
    """Ledoit-Wolf shrinkage estimate of a covariance matrix.

    .. math::

        \\hat\\Sigma = (1 - \\rho)\\, S + \\rho\\, \\frac{\\operatorname{tr} S}{D}\\, I,

    with :math:`S` the maximum-likelihood covariance of the centred samples and the
    shrinkage :math:`\\rho \\in [0, 1]` that minimises the expected Frobenius error
    (O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
    matrices", J. Multivariate Analysis 2004; the same formula as scikit-learn's
    ``ledoit_wolf``). Positive definite whenever :math:`\\rho > 0`, also for ``N < D``.

    Parameters
    ----------
    x : Tensor[N, D]
        Samples, ``N >= 2``.

    Returns
    -------
    cov : Tensor[D, D]
    shrinkage : float
        :math:`\\rho`.
    """
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] < 2 or not x.is_floating_point():
        got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x should be a floating-point tensor [N >= 2, D], got {got}")
    xd = x.detach().to(torch.float64)
    n, d = xd.shape
    xc = xd - xd.mean(0)
    S = xc.T @ xc / n
    mu = torch.trace(S) / d
    x2 = xc.pow(2)
    beta_ = (x2.T @ x2).sum() / n
    delta_ = S.pow(2).sum()
    beta = (beta_ - delta_) / (d * n)
    delta = (delta_ - 2 * mu * torch.trace(S) + d * mu**2) / d
    beta = torch.minimum(beta, delta)
    rho = 0.0 if float(delta) == 0.0 else float(beta / delta)
    cov = (1 - rho) * S + rho * mu * torch.eye(d, dtype=torch.float64, device=xd.device)
    return cov.to(x.dtype), rho


BASES = ("diagonal", "gaussian")


def _check_fit_args(flow, samples, epochs, lr, batch_size, weight_decay, base, holdout) -> None:
    """Raise ValueError unless :func:`fit_flow`'s arguments are valid."""
    if not isinstance(flow, Flow):
        raise ValueError(f"flow should be a RealNVP or IAF, got {type(flow).__name__}")
    if not torch.is_tensor(samples) or samples.dim() != 2 or samples.shape[1] != flow.dim or samples.shape[0] < 2:
        got = list(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
        raise ValueError(f"samples should be a tensor [N >= 2, {flow.dim}] for a flow of dim {flow.dim}, got {got}")
    if not samples.is_floating_point() or not bool(torch.isfinite(samples).all()):
        raise ValueError(f"samples should be finite floating-point values, got {samples.dtype} with NaN/Inf or ints")
    check_int(epochs, "epochs", 0)
    check_positive(lr, "lr")
    check_int(batch_size, "batch_size", 1)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay should be a number >= 0, got {weight_decay!r}")
    if base not in BASES:
        raise ValueError(f"base should be one of {list(BASES)}, got {base!r}")
    if holdout is not None and (
        not torch.is_tensor(holdout) or holdout.dim() != 2 or holdout.shape[1] != flow.dim or holdout.shape[0] < 1
    ):
        got = list(holdout.shape) if torch.is_tensor(holdout) else type(holdout).__name__
        raise ValueError(f"holdout should be a tensor [M >= 1, {flow.dim}] for a flow of dim {flow.dim}, got {got}")


def _set_base(flow: Flow, x: Tensor, base: str) -> None:
    """Set the base transform of ``flow`` to the samples' standardisation (``mean``, ``std``;
    a dimension with zero spread gets ``std = 1``) and, with ``base="gaussian"``, ``chol`` to
    the Cholesky factor of their Ledoit-Wolf shrinkage correlation matrix."""
    device = x.device
    with torch.no_grad():
        mean = x.mean(0)
        std = x.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        flow.mean.copy_(mean)
        flow.std.copy_(std)
        chol = torch.eye(flow.dim, dtype=torch.float64, device=device)
        if base == "gaussian" and flow.dim > 1:
            corr, _ = ledoit_wolf(((x - mean) / std).to(torch.float64))
            chol = torch.linalg.cholesky(corr / corr.diagonal().sqrt().outer(corr.diagonal().sqrt()))
        flow.chol.copy_(chol.to(x.dtype))


def fit_flow(
    flow: nn.Module,
    samples: Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    base: str = "diagonal",
    holdout: Tensor | None = None,
) -> list[float]:
    """Fit a flow to samples by maximum likelihood (in place).

    Sets the standardisation buffers ``mean`` and ``std`` to the per-dimension mean and
    standard deviation of ``samples`` (a dimension with zero spread gets ``std = 1``) and,
    with ``base="gaussian"``, ``chol`` to the Cholesky factor of the samples' Ledoit-Wolf
    shrinkage correlation matrix (:func:`ledoit_wolf` of the standardised samples), so that
    the untrained flow (its layers start at the identity) is the maximum-likelihood
    Gaussian with a shrunk covariance. Then it minimises the negative log-likelihood with
    Adam,

    .. math::

        -\\frac1N \\sum_k \\log p(x_k) = \\frac1N \\sum_k \\Bigl[\\tfrac12 \\|\\nu(x_k)\\|^2
        + \\tfrac D2 \\log 2\\pi - \\log|\\det \\partial\\nu / \\partial x|(x_k)\\Bigr].

    Parameters
    ----------
    flow : RealNVP or IAF
        Trained in place, in its own dtype and on its own device.
    samples : Tensor[N, D]
        Training vectors (cast to the flow's dtype and device), ``N >= 2``.
    epochs : int
        Passes over the samples.
    lr : float
        Adam learning rate.
    batch_size : int
        Samples per step (shuffled every epoch).
    weight_decay : float
        Adam weight decay.
    seed : int
        Seed of the shuffling.
    progress : bool
        Show a progress bar (``tqdm.auto``).
    base : {"diagonal", "gaussian"}
        The fixed transform in front of the layers: per-dimension standardisation, or
        standardisation and whitening by the shrunk correlation matrix.
    holdout : Tensor[M, D], optional
        Held-out vectors (e.g. the neurons of networks not in ``samples``): after every
        epoch their mean NLL is measured, and the flow ends with the parameters of the
        best epoch (epoch 0 is the untrained flow, i.e. the base transform alone), so the
        fit never ends worse on them than the base transform (early stopping).

    Returns
    -------
    list of float
        Mean NLL (nats per vector, not per dimension) over each epoch, ``[epochs]``.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(256, 2) * torch.tensor([3.0, 0.5]) + 1
    >>> hist = fit_flow(RealNVP(2, n_couplings=2, hidden=8), x, epochs=3)
    >>> len(hist)
    3
    """
    _check_fit_args(flow, samples, epochs, lr, batch_size, weight_decay, base, holdout)
    dtype, device = dtype_device(flow)
    x = samples.detach().to(device=device, dtype=dtype)
    _set_base(flow, x, base)
    xh = None if holdout is None else holdout.detach().to(device=device, dtype=dtype)

    def holdout_nll() -> float:
        with torch.no_grad():
            return float(-flow.log_prob(xh).mean())

    best = (holdout_nll(), copy.deepcopy(flow.state_dict())) if xh is not None else None
    opt = torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    history: list[float] = []
    bar = progress_bar(epochs, "fit flow", progress)
    was_training = flow.training
    flow.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for i in range(0, n, batch_size):
                xb = x[perm[i : i + batch_size]]
                loss = -flow.log_prob(xb).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach() * xb.shape[0]  # no host sync per step
            history.append(float(total) / n)
            if best is not None:
                h = holdout_nll()
                if h < best[0]:
                    best = (h, copy.deepcopy(flow.state_dict()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(nll=f"{history[-1]:.4g}")
    finally:
        flow.train(was_training)
        if bar is not None:
            bar.close()
    if best is not None:
        flow.load_state_dict(best[1])
    return history


def _mean_weights(weights: Sequence[Weights]) -> Weights:
    tensors = OrderedDict()
    for e in weights[0].layout:
        a = weights[0][e.name]
        if e.flat:
            tensors[e.name] = torch.stack([w[e.name].to(torch.float64) for w in weights]).mean(0).to(a.dtype)
        else:
            tensors[e.name] = a.clone()
    return Weights(tensors, weights[0].layout)


def align_pool(
    model: nn.Module, weights: Sequence[Weights], *, reference: int = 0, rounds: int = 2, neuron: str = "blc"
) -> tuple[list[Weights], Weights]:
    """Reorder the neurons of every network so that they line up with one template.

    Round 1 matches every network to ``weights[reference]``
    (:func:`~landscape.connect.match_neurons`: OT stage 1, layer by layer, so a filter's
    input slices follow the matching of the layer below); the template is then the mean of
    the aligned networks, and every further round matches the original networks to the
    template of the round before. Reordering does not change any network's function
    (:func:`~landscape.connect.permute`), but after it the coordinates of a neuron's input
    slices refer to the same channels in every network: fit flows to the aligned pool
    (:func:`fit_flows_for`, :func:`fit_bijection`) and connect with
    :func:`aligned_flow_path` and the template.

    Parameters
    ----------
    model : nn.Module
        An MLP stack or a network :func:`~landscape.connect.graph.trace_groups` follows.
    weights : list of Weights
        Trained weight points of ``model``.
    reference : int
        Index of the network the first round matches to.
    rounds : int
        Matching rounds (``>= 1``).
    neuron : {"blc", "bl"}
        What the matching compares (:func:`~landscape.connect.match_neurons`).

    Returns
    -------
    aligned : list of Weights
        ``weights`` reordered, in the same order (``aligned[reference]`` is
        ``weights[reference]`` after round 1).
    template : Weights
        The mean of ``aligned`` (entry by entry); non-float entries are ``weights[0]``'s.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.connect.permute(a, model, {"1": torch.randperm(8)})
    >>> aligned, template = align_pool(model, [a, b])
    >>> torch.equal(aligned[1]["1.weight"], a["1.weight"])
    True
    """
    weights = check_weights_list(weights, "weights", minimum=1)
    check_model(model, weights[0])
    check_int(reference, "reference", 0)
    if reference >= len(weights):
        raise ValueError(f"reference should index weights (0..{len(weights) - 1}), got {reference}")
    rounds = check_int(rounds, "rounds", 1)
    target = weights[reference]
    aligned: list[Weights] = []
    for _ in range(rounds):
        aligned = [permute(w, model, match_neurons(target, w, model, neuron=neuron)) for w in weights]
        target = _mean_weights(aligned)
    return aligned, target


def _flow_parameters(flows: Mapping[str, nn.Module]) -> list[nn.Parameter]:
    seen, params = set(), []
    for f in flows.values():
        for p in f.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _pairs_loss(ws, groups, flows, batch, gen: torch.Generator, pairs: int, loss) -> Tensor:
    """The mean of ``loss(point, batch)`` over ``pairs`` random pairs ``A != B`` of ``ws``, each
    at its own uniform ``t`` on the flow path (drawn from ``gen`` in that order: ``A``, ``B``,
    ``t``)."""
    m = len(ws)
    value = 0.0
    for _ in range(pairs):
        a = int(torch.randint(m, (1,), generator=gen))
        b = int(torch.randint(m - 1, (1,), generator=gen))
        b += b >= a
        t = float(torch.rand((), generator=gen, dtype=torch.float64))
        tensors = flow_path_tensors(ws[a], ws[b], groups, flows, t)
        value = value + loss(tensors, batch)
    return value / pairs


def fit_bijection(
    model: nn.Module,
    weights: Sequence[Weights],
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    data,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    pairs_per_step: int = 1,
    seed: int = 0,
    loss=None,
    forward=None,
    progress: bool = False,
) -> list[float]:
    """Train the flows so that the paths between trained networks have low loss (Bijection).

    .. math::

        l(W) = \\mathbb E_{t \\sim U(0,1),\\; (A, B)}\\;
        \\mathrm{CE}\\bigl(f(x;\\, \\psi_W(t, \\Theta^A, \\Theta^B)),\\, y\\bigr) \\to \\min_W

    over ordered pairs of distinct weights ``A != B`` from ``weights`` and minibatches
    ``(x, y)`` of ``data``, with :math:`\\psi_W` of :func:`flow_path_tensors` and Adam on the
    parameters of all flows (the standardisation buffers stay fixed).

    Start from flows fitted to the pooled neurons of ``weights`` (:func:`fit_flows_for`,
    i.e. the Flow connection): this function does not initialise them.

    Parameters
    ----------
    model : nn.Module
        The architecture (evaluated with :func:`torch.func.functional_call`; its own weights
        are not used nor modified). It is run in ``eval`` mode (BatchNorm layers use the
        path's interpolated running statistics) and its mode is restored afterwards.
    weights : list of Weights
        At least two trained weight points of ``model``.
    groups : list of NeuronGroup
        Disjoint neuron groups, one flow each.
    flows : dict of str to RealNVP or IAF
        Trained in place.
    data : TensorData, (Tensor[N, ...], Tensor[N]), DataLoader, Dataset or iterable of batches
        Inputs and targets of the training loss (:class:`landscape.train.TrainBatches`: in
        memory a seeded shuffle per epoch, a loader's own batches).
    epochs : int
        Passes over ``data``.
    lr : float
        Adam learning rate.
    batch_size : int
        Samples per step.
    pairs_per_step : int
        Pairs ``(A, B)`` (each with its own ``t``) averaged in one step on the same minibatch.
    seed : int
        Seed of the data order, the pairs and ``t``.
    loss : callable, str or Metric, optional
        The path loss on a batch (default cross-entropy; :func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.
    progress : bool
        Show a progress bar (``tqdm.auto``).

    Returns
    -------
    list of float
        Mean path loss over each epoch, ``[epochs]``.
    """
    weights = check_weights_list(weights, "weights", minimum=2)
    check_model(model, weights[0])
    groups = check_groups(groups, weights[0], flows)
    lossfn = resolve_loss(loss)
    check_int(epochs, "epochs", 0)
    check_positive(lr, "lr")
    check_int(batch_size, "batch_size", 1)
    check_int(pairs_per_step, "pairs_per_step", 1)
    params = _flow_parameters({g.name: flows[g.name] for g in groups})
    if not params:
        raise ValueError("the flows have no parameters to train")
    device = params[0].device
    ws = [OrderedDict((k, v.to(device)) for k, v in w.items()) for w in weights]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    dtype = next((v.dtype for v in ws[0].values() if v.is_floating_point()), None)
    batches = TrainBatches(data, batch_size, generator=gen, device=device, dtype=dtype)

    def path_loss(tensors, batch) -> Tensor:
        return loss_of(model, tensors, batch, lossfn, forward)

    history: list[float] = []
    bar = progress_bar(epochs, "fit bijection", progress)
    model_mode = model.training
    flow_modes = {g.name: flows[g.name].training for g in groups}
    model.eval()
    for g in groups:
        flows[g.name].train()
    try:
        for _ in range(epochs):
            total, n = 0.0, 0
            for batch in batches.epoch():
                value = _pairs_loss(ws, groups, flows, batch, gen, pairs_per_step, path_loss)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                total = total + value.detach() * batch.count
                n += batch.count
            history.append(float(total) / n)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4g}")
    finally:
        model.train(model_mode)
        for g in groups:
            flows[g.name].train(flow_modes[g.name])
        if bar is not None:
            bar.close()
    return history


def fit_flows_for(
    model: nn.Module,
    weights: Sequence[Weights],
    groups: Sequence[NeuronGroup] | None = None,
    kind: str = "realnvp",
    *,
    hidden: int = 64,
    n_couplings: int = 4,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    base: str = "diagonal",
    holdout: int = 0,
) -> dict[str, nn.Module]:
    """One flow per neuron group, fitted to the neurons pooled over many networks (Flow).

    For group ``g`` the samples are the rows of ``g.matrix(w)`` for every ``w`` in
    ``weights`` (``len(weights) * n`` vectors of dimension ``D``), fitted with
    :func:`fit_flow`.

    Parameters
    ----------
    model : nn.Module
        The architecture; the weights must match its ``state_dict`` names.
    weights : list of Weights
        Trained weight points of ``model``.
    groups : list of NeuronGroup, optional
        Default :func:`mlp_groups` of ``model``.
    kind : {"realnvp", "iaf"}
        :class:`RealNVP` (``n_couplings`` couplings) or :class:`IAF` (``n_layers`` layers).
    hidden : int
        Conditioner width.
    n_couplings, n_layers : int
        Depth of a RealNVP or an IAF (the other one is ignored).
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64``.
    device : str or torch.device, optional
        Default: the device of the weights.
    epochs, lr, batch_size, weight_decay, seed, progress, base
        Passed to :func:`fit_flow`; ``seed`` also seeds the flows' initial weights.
    holdout : int
        The last ``holdout`` networks of ``weights`` are not fitted: their neurons are the
        held-out vectors of :func:`fit_flow`'s early stopping (``0``: no early stopping).

    Returns
    -------
    dict of str to RealNVP or IAF
        Keyed by group name.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind should be one of {sorted(FLOW_KINDS)}, got {kind!r}")
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype should be torch.float32 or torch.float64, got {dtype}")
    weights = check_weights_list(weights, "weights", minimum=1)
    check_model(model, weights[0])
    groups = check_groups(mlp_groups(model) if groups is None else groups, weights[0])
    if device is None:
        floats = float_entries(weights[0])
        device = weights[0][floats[0]].device if floats else torch.device("cpu")
    holdout = check_int(holdout, "holdout", 0)
    if holdout >= len(weights):
        raise ValueError(f"holdout should leave at least one network to fit, got {holdout} of {len(weights)}")
    fitted, held = weights[: len(weights) - holdout], weights[len(weights) - holdout :]
    flows: dict[str, nn.Module] = {}
    for g in groups:
        samples = torch.cat([g.matrix(w).detach().to(device=device, dtype=dtype) for w in fitted])
        held_out = torch.cat([g.matrix(w).detach().to(device=device, dtype=dtype) for w in held]) if held else None
        D = samples.shape[1]
        if kind == "realnvp":
            flow = RealNVP(D, n_couplings=n_couplings, hidden=hidden, seed=seed)
        else:
            flow = IAF(D, n_layers=n_layers, hidden=hidden, seed=seed)
        flow = flow.to(device=device, dtype=dtype)
        fit_flow(
            flow,
            samples,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            seed=seed,
            progress=progress,
            base=base,
            holdout=held_out,
        )
        flows[g.name] = flow
    return flows
