"""BatchNorm handling for the evaluation engine.

Three modes (``bn=`` of :func:`landscape.evaluate`):

``running``
    Use the running statistics stored in the weights; a point's statistics are combined
    from the basis like every other tensor.
``recompute``
    Fresh statistics at every point from a pass over a dataset with the BatchNorm layers in
    train mode: the batch means and unbiased batch variances averaged with each batch
    weighted by its sample count, as the ``update_bn`` of the mode-connectivity and SWA
    repositories computes it (Garipov et al. 2018, Izmailov et al. 2018: momentum
    :math:`b / (n + b)` for a batch of :math:`b` samples after :math:`n`). The running mean
    is then the mean of the whole dataset; the running variance the count-weighted mean of
    the batches' unbiased variances. Only BatchNorm layers are put in train mode (dropout
    stays off, so the pass is deterministic).
``recompute-batches``
    As ``recompute`` with every batch weighted equally: what
    :func:`torch.optim.swa_utils.update_bn` computes (``momentum=None``, PyTorch's
    cumulative average over ``num_batches_tracked``) on the same batches. The two differ only
    when the batches differ in size (a short last batch).
``recompute-exact``
    The statistics a single train-mode pass over the whole dataset as one batch would give.
    Computed exactly in minibatches, layer by layer: for the i-th BatchNorm layer (in forward
    order) one pass with the layers below it normalising with their already exact
    statistics gives the mean and variance of its input over the whole dataset (merged
    across batches in float64 with Chan's formula); the forward stops at that layer.

The functions here work on point tensors ``dict[name, Tensor[k, ...]]`` and a per-point
runner (vmap or loop), never on the user's module; :func:`update_bn` does the same pass on
a module in place (SWA's average). Both set the layers' momenta through
:func:`cumulative_pass`, the one place that defines the two weightings. Batches are
:class:`landscape.batches.Batch` es (plain input tensors are read as such), so dict batches
and DataLoaders work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .batches import as_source, call_model, read_batch

__all__ = [
    "BN_MODES",
    "RECOMPUTE_WEIGHTING",
    "WEIGHTINGS",
    "auto_mode",
    "batchnorm_modules",
    "cumulative_pass",
    "has_batchnorm",
    "recompute_bn",
    "recompute_bn_exact",
    "update_bn",
]

BN_MODES = ("running", "recompute", "recompute-batches", "recompute-exact")
#: how the batches of a recomputation are weighted: by sample count (the repositories'
#: ``update_bn``) or equally (``torch.optim.swa_utils.update_bn``)
WEIGHTINGS = ("samples", "batches")
#: the weighting of each recomputing mode of ``bn=``
RECOMPUTE_WEIGHTING = {"recompute": "samples", "recompute-batches": "batches"}


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """BatchNorm layers that track running statistics, with their names."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_modules(model))


def auto_mode(model: nn.Module) -> str:
    """The BatchNorm mode ``bn="auto"`` stands for: ``"recompute"`` when ``model`` has
    BatchNorm layers that track running statistics, ``"running"`` otherwise.

    The running statistics of a point between checkpoints (a curve, a connection, an
    ensemble average) are not the statistics of that point's activations, so models with
    BatchNorm get them recomputed at every point, as Garipov et al. (2018) and Izmailov et
    al. (2018) do; models without BatchNorm have nothing to recompute.

    Examples
    --------
    >>> from torch import nn
    >>> auto_mode(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    'recompute'
    >>> auto_mode(nn.Linear(2, 3))
    'running'
    """
    return "recompute" if has_batchnorm(model) else "running"


def _stat_names(name: str) -> tuple[str, str, str]:
    p = f"{name}." if name else ""
    return p + "running_mean", p + "running_var", p + "num_batches_tracked"


def fresh_statistics(tensors: dict, model: nn.Module) -> dict:
    """Copies of the point tensors with BatchNorm statistics reset (mean 0, var 1, count 0),
    as :meth:`BatchNorm.reset_running_stats` does; real copies so in-place updates work."""
    out = dict(tensors)
    for name, _ in batchnorm_modules(model):
        mean, var, count = _stat_names(name)
        out[mean] = torch.zeros_like(tensors[mean])
        out[var] = torch.ones_like(tensors[var])
        if count in tensors:
            out[count] = torch.zeros_like(tensors[count]).contiguous()
    return out


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting should be one of {WEIGHTINGS}, got {weighting!r}")


def cumulative_pass(
    modules: Iterable[nn.Module],
    batches: Iterable,
    step: Callable,
    weighting: str = "samples",
) -> int:
    """Run ``step(batch)`` on every batch with the BatchNorm ``modules`` in train mode and
    their momenta set so that their running statistics end as the weighted average of the
    batches' statistics.

    With batch :math:`j` of :math:`b_j` samples and :math:`n_j = b_1 + \\dots + b_j`, the
    momentum is :math:`b_j / n_j` (``weighting="samples"``, the mode-connectivity and SWA
    repositories' ``update_bn``) or :math:`1 / j` (``"batches"``, PyTorch's ``momentum=None``):

    .. math::

        r_j = (1 - m_j)\\,r_{j-1} + m_j\\,s_j
        \\quad\\Rightarrow\\quad
        r_J = \\frac{\\sum_j b_j s_j}{\\sum_j b_j} \\text{ or } \\frac{1}{J}\\sum_j s_j,

    whatever the statistics started from. Momentum is a plain attribute, so this works under
    ``vmap`` too. The layers' momenta and modes are restored afterwards.

    Parameters
    ----------
    modules : iterable of BatchNorm modules
    batches : iterable of Batch or Tensor
        Read with :func:`landscape.batches.read_batch`.
    step : callable
        ``step(batch)`` runs the forward pass(es) that update the statistics.
    weighting : {"samples", "batches"}

    Returns
    -------
    int
        Samples seen.
    """
    _check_weighting(weighting)
    modules = list(modules)
    state = [(m, m.momentum, m.training) for m in modules]
    seen = 0
    try:
        for m in modules:
            m.train()
        with torch.no_grad():
            for j, x in enumerate(batches, 1):
                batch = read_batch(x)
                seen += batch.count
                momentum = batch.count / seen if weighting == "samples" else 1.0 / j
                for m in modules:
                    m.momentum = momentum
                step(batch)
    finally:
        for m, momentum, training in state:
            m.momentum = momentum
            m.train(training)
    return seen


def recompute_bn(
    run: Callable[[dict, torch.Tensor], torch.Tensor],
    model: nn.Module,
    tensors: dict,
    batches: Iterable[torch.Tensor],
    weighting: str = "samples",
) -> dict:
    """Recomputed BatchNorm statistics at each point (``bn="recompute"``).

    Parameters
    ----------
    run : callable
        ``run(tensors, batch)`` evaluates the engine's private copy of the model at the points
        (vmap or loop); BatchNorm updates the statistics tensors in place.
    model : nn.Module
        The engine's private copy (its BatchNorm modules are switched to train mode and
        their momentum set for the pass, then restored).
    tensors : dict of str to Tensor[k, ...]
        Point tensors; statistics are replaced by fresh ones.
    batches : iterable of Batch or Tensor
        Batches (already on the device, in the compute dtype).
    weighting : {"samples", "batches"}
        Each batch weighted by its sample count (the repositories' ``update_bn``) or
        equally (``torch.optim.swa_utils.update_bn``); see :func:`cumulative_pass`.

    Returns
    -------
    dict
        Point tensors with the recomputed statistics.
    """
    _check_weighting(weighting)
    tensors = fresh_statistics(tensors, model)
    cumulative_pass([m for _, m in batchnorm_modules(model)], batches, lambda b: run(tensors, b), weighting)
    return tensors


def update_bn(model: nn.Module, data, *, batch_size: int = 128, forward=None, weighting: str = "samples") -> nn.Module:
    """Recompute the BatchNorm statistics of ``model`` in place: one pass over ``data``.

    The statistics are reset, then become the averages over the batches (in memory:
    consecutive slices of ``batch_size``; a loader's own batches) of the batch means and
    unbiased batch variances, each batch weighted by its sample count (``"samples"``, the
    mode-connectivity and SWA repositories' ``update_bn``: the means are those of the whole
    data set) or equally (``"batches"``, :func:`torch.optim.swa_utils.update_bn`); see
    :func:`cumulative_pass`. As in both, the whole model is in train mode for the pass. Any
    data, batch and model output of :mod:`landscape.batches` is read and a
    ``forward(model, batch)`` may replace the call. A model without BatchNorm is returned
    untouched, without a pass; its train/eval mode and the layers' momenta are restored.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.BatchNorm1d(1))
    >>> x = torch.tensor([[0.0], [2.0], [4.0], [6.0], [8.0]])
    >>> _ = update_bn(net, (x, torch.zeros(5)), batch_size=3)  # batches of 3 and 2
    >>> float(net[0].running_mean[0])  # the mean of the five samples
    4.0
    >>> _ = update_bn(net, (x, torch.zeros(5)), batch_size=3, weighting="batches")
    >>> float(net[0].running_mean[0])  # (2 + 7) / 2
    4.5
    """
    _check_weighting(weighting)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    for m in bns:
        m.reset_running_stats()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else None
    dtype = first.dtype if first is not None else None
    was_training = model.training
    model.train()
    try:
        batches = as_source(data).batches(batch_size, device, dtype, split=False)
        cumulative_pass(bns, batches, lambda b: call_model(model, None, b, forward), weighting)
    finally:
        model.train(was_training)
    return model


class _StopForward(Exception):
    pass


def _merge(acc, count_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor):
    """Chan et al. merge of (count, mean, M2) accumulators (float64)."""
    if acc is None:
        return count_b, mean_b, m2_b
    n_a, mean_a, m2_a = acc
    n = n_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / n)
    m2 = m2_a + m2_b + delta.pow(2) * (n_a * count_b / n)
    return n, mean, m2


def recompute_bn_exact(
    run_fn: Callable[[Callable, dict, torch.Tensor], torch.Tensor],
    model: nn.Module,
    tensors: dict,
    batches: Callable[[], Iterable],
    forward: Callable | None = None,
) -> dict:
    """Statistics of one train-mode pass over the whole dataset as a single batch.

    Parameters
    ----------
    run_fn : callable
        ``run_fn(fn, tensors, x)`` applies a per-point function ``fn(point_tensors, x)`` at
        every point (vmap or loop) and stacks the results along dim 0.
    model : nn.Module
        The engine's private copy, in eval mode.
    tensors : dict of str to Tensor[k, ...]
        Point tensors.
    batches : callable
        Returns a fresh iterable over the batches (one pass per BatchNorm layer).
    forward : callable, optional
        A user ``forward(model, batch)`` (see :mod:`landscape.batches`).

    Returns
    -------
    dict
        Point tensors with ``running_mean`` the dataset mean of each layer's input,
        ``running_var`` its unbiased variance, ``num_batches_tracked`` 1.
    """
    bns = batchnorm_modules(model)
    if not bns:
        return tensors
    tensors = dict(tensors)
    order = _forward_order(model, tensors, batches, forward)
    was_training = model.training
    model.eval()
    counts = {}
    try:
        for name, module, spatial in order:
            mean_name, var_name, count_name = _stat_names(name)

            def capture(point, x, module=module):
                found = {}

                def hook(mod, args):
                    inp = args[0].to(torch.float64)
                    dims = [0] + list(range(2, inp.dim()))
                    mean = inp.mean(dims)
                    shape = [1, -1] + [1] * (inp.dim() - 2)
                    m2 = (inp - mean.view(shape)).pow(2).sum(dims)
                    found["stats"] = torch.stack([mean, m2])
                    raise _StopForward

                handle = module.register_forward_pre_hook(hook)
                try:
                    call_model(model, point, x, forward)
                except _StopForward:
                    pass
                finally:
                    handle.remove()
                return found["stats"]

            acc = None
            with torch.no_grad():
                for x in batches():
                    x = read_batch(x)
                    stats = run_fn(capture, tensors, x)  # [k, 2, C]
                    acc = _merge(acc, x.count * spatial, stats[:, 0], stats[:, 1])
            n, mean, m2 = acc
            counts[name] = n
            dtype = tensors[mean_name].dtype
            tensors[mean_name] = mean.to(dtype)
            # biased variance normalises the layers above, as train mode does
            tensors[var_name] = (m2 / n).to(dtype)
            tensors[f"__m2__{name}"] = m2
        for name, _, _ in order:
            mean_name, var_name, count_name = _stat_names(name)
            m2 = tensors.pop(f"__m2__{name}")
            n = counts[name]
            tensors[var_name] = (m2 / max(n - 1, 1)).to(tensors[var_name].dtype)
            if count_name in tensors:
                tensors[count_name] = torch.ones_like(tensors[count_name])
    finally:
        model.train(was_training)
    return tensors


def _forward_order(model: nn.Module, tensors: dict, batches, forward: Callable | None = None) -> list:
    """BatchNorm layers in the order the forward pass calls them, each with the number of
    values per channel its input has for one sample (spatial size), from one probe sample
    at the first point."""
    bns = batchnorm_modules(model)
    names = {id(m): n for n, m in bns}
    seen: dict[int, tuple[str, nn.Module, int]] = {}

    def hook(mod, args):
        if id(mod) not in seen:
            inp = args[0]
            seen[id(mod)] = (names[id(mod)], mod, int(inp[0, 0].numel()) if inp.dim() > 2 else 1)

    handles = [m.register_forward_pre_hook(hook) for _, m in bns]
    x0 = read_batch(next(iter(batches()))).slice(0, 1)
    point0 = {k: v[0] for k, v in tensors.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, point0, x0, forward)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for n, m in bns:
        if id(m) not in seen:
            raise ValueError(
                f"BatchNorm layer '{n}' is never called in the forward pass; "
                "recompute-exact needs every tracked BatchNorm layer to be used"
            )
    return list(seen.values())
