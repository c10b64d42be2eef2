"""BatchNorm handling for the evaluation engine.

Three modes (``bn=`` of :func:`landscape.evaluate`):

``running``
    Use the running statistics stored in the weights; a point's statistics are combined
    from the basis like every other tensor.
``recompute``
    Fresh statistics at every point from a pass over a dataset with the BatchNorm layers in
    train mode, equal to what :func:`torch.optim.swa_utils.update_bn` computes with
    ``momentum=None`` on the same batches (the cumulative average over batches of batch
    means and unbiased batch variances; Garipov et al. 2018, Izmailov et al. 2018). Only
    BatchNorm layers are put in train mode (dropout stays off, so the pass is deterministic).
``recompute-exact``
    The statistics a single train-mode pass over the whole dataset as one batch would give.
    Computed exactly in minibatches, layer by layer: for the i-th BatchNorm layer (in forward
    order) one pass with the layers below it normalising with their already exact
    statistics gives the mean and variance of its input over the whole dataset (merged
    across batches in float64 with Chan's formula); the forward stops at that layer.

The functions here work on point tensors ``dict[name, Tensor[k, ...]]`` and a per-point
runner (vmap or loop), never on the user's module. Batches are
:class:`landscape.batches.Batch` es (plain input tensors are read as such), so dict batches
and DataLoaders work; each batch is weighted by its sample count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .batches import call_model, read_batch

__all__ = ["BN_MODES", "auto_mode", "batchnorm_modules", "has_batchnorm", "recompute_bn", "recompute_bn_exact"]

BN_MODES = ("running", "recompute", "recompute-exact")


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


def recompute_bn(
    run: Callable[[dict, torch.Tensor], torch.Tensor],
    model: nn.Module,
    tensors: dict,
    batches: Iterable[torch.Tensor],
) -> dict:
    """Statistics of ``update_bn(loader, model, momentum=None)`` at each point.

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

    Returns
    -------
    dict
        Point tensors with the recomputed statistics.
    """
    bns = batchnorm_modules(model)
    state = [(m, m.momentum, m.training) for _, m in bns]
    tensors = fresh_statistics(tensors, model)
    try:
        for m, _, _ in state:
            m.train()
        with torch.no_grad():
            for b, x in enumerate(batches, 1):
                # momentum 1/b reproduces the cumulative average of momentum=None exactly
                # (PyTorch uses 1 / num_batches_tracked), and works under vmap.
                for m, _, _ in state:
                    m.momentum = 1.0 / b
                run(tensors, read_batch(x))
    finally:
        for m, momentum, training in state:
            m.momentum = momentum
            m.train(training)
    return tensors


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
