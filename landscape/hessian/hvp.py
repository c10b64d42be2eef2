"""Exact Hessian-vector products of a dataset loss at a weight point.

:class:`HVP` is the Hessian :math:`H = \\nabla^2_\\theta L(\\theta)` of the loss averaged over
a dataset (or any fixed subset of it), at one weight point, over all parameters or a
selection of them, as a linear operator: ``op(v)`` is :math:`Hv`, exactly (no finite
differences). :class:`BatchedHVP` is one such operator per point of a point set, applied to
one vector per point in a single pass where ``torch.func.vmap`` can trace the model.

Conventions
-----------
* Vectors are flat over the selected parameters, in the order of the model's
  :class:`~landscape.weights.Layout` (``state_dict`` order); :attr:`HVP.mask` places them
  in the full flat weight vector of :meth:`Weights.flatten <landscape.weights.Weights.flatten>`.
* The data is anything :func:`landscape.batches.as_source` reads: in-memory tensors are
  moved to the device once and sliced, loaders and iterables are streamed a batch at a
  time (dict batches, ``forward=`` and ``.logits`` outputs through
  :func:`~landscape.batches.call_model`).
* The loss is a metric (``"loss"``, mean cross-entropy, by default; ``"token_loss"`` for
  causal language models) or ``loss(output, target) -> scalar``, a mean over its batch.
  The dataset loss is :math:`\\sum_b s_b / \\sum_b c_b` with :math:`s_b` the batch's loss
  sum and :math:`c_b` what it counts (samples, or tokens), so batches are combined as
  :math:`\\sum_b c_b H_b v / \\sum_b c_b`, the total count taken from the same pass; any
  ``batch_size`` (and a loader's batching) gives the same operator.
* The parameters are those the user's model trains (``requires_grad=True``) unless
  ``params`` names others; a tied tensor is one parameter.
* The model runs in eval mode: BatchNorm normalises with the running statistics stored in
  the point (its buffers are part of the point, held fixed, not differentiated) and dropout
  is off. This is the Hessian of the loss the checkpoint computes at test time, which is
  what the evaluation engine's ``bn="running"`` mode reports as its loss.

Methods
-------
``forward-over-reverse``
    ``torch.func.jvp`` of ``torch.func.grad`` around ``torch.func.functional_call``;
    several vectors in one pass through ``vmap`` over the tangents.
``double-backward``
    ``torch.autograd.grad`` with ``create_graph=True``, then one backward pass per vector
    through the gradient's graph.
``auto`` (the default of every operator)
    On GPUs forward-over-reverse; if the model does not support forward-mode AD (or
    ``vmap``), the first failing call is repeated by double-backward, a warning says so, and
    the operator keeps that method. On CPUs double-backward, which measured faster there
    (``tools/bench_hessian.py``: 2.1 against 3.0 ms per product at each of 8 points of a
    digits MLP, 1.9 against 2.1 s on ResNet-20).

Kept graphs
-----------
With double-backward products on in-memory data, :class:`HVP` keeps each batch's gradient
graph after its first product (``reuse_graph="auto"``, when the graphs fit the memory
allowance), as PyHessian does for one batch: later products are one backward pass through
the kept graphs and read no data (``tools/bench_hvp.py`` measures the gain).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vmap

from ..batches import Batch, BatchError, as_source, call_model
from ..metrics import Metric, resolve_metrics
from ..models.hf import set_eager_attention
from ..pointset import PointSet
from ..weights import Layout, Weights

__all__ = [
    "BatchedHVP",
    "HVP",
    "METHODS",
    "gradient",
    "layer_selections",
    "parameter_selection",
    "selection_record",
]

METHODS = ("auto", "forward-over-reverse", "double-backward")
_AUTO_ON_CPU = "double-backward"  # what ``auto`` means on a CPU (see the module docstring)
_CPU_TARGET = 256 << 20  # bytes of forward activations per batch on CPUs
_GRAPH_CPU_BUDGET = 1 << 30  # bytes the kept gradient graphs of HVP(reuse_graph="auto") may take on CPUs
_GRAPH_FACTOR = 3  # a gradient graph keeps about this many times the forward activations
_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, torch.float64: torch.float64, torch.float32: torch.float32}

Tensors = dict[str, torch.Tensor]


def layer_selections(model: nn.Module) -> OrderedDict[str, list[str]]:
    """Parameter names grouped by the module that owns them ("per layer" selections).

    Parameters
    ----------
    model : nn.Module
        Any module.

    Returns
    -------
    OrderedDict of str to list of str
        For every module that directly holds parameters, its name (``""`` for the root) and
        its parameter names, in ``state_dict`` order; each value is a valid ``params`` of
        :class:`HVP`.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    >>> dict(layer_selections(model))
    {'0': ['0.weight', '0.bias'], '2': ['2.weight', '2.bias']}
    """
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        names = [prefix + n for n, _ in mod.named_parameters(recurse=False)]
        if names:
            groups[mod_name] = names
    return groups


def _resolve_dtype(dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype should be torch.float32, torch.float64, 'fp32' or 'fp64', got {dtype!r}")
    return _DTYPES[dtype]


def _selectable(layout: Layout, aliases: Mapping[str, str]) -> list[str]:
    """Parameters a Hessian can be taken over: floating point, one name per tied tensor."""
    return [e.name for e in layout.flat_entries() if e.is_parameter and e.name not in aliases]


def _select(
    model: nn.Module, layout: Layout, aliases: Mapping[str, str], params: Iterable[str] | None
) -> tuple[list[str], str]:
    """``(selected names in layout order, rule)``; the rule is ``"requires_grad"`` (default:
    the parameters the user's model trains) or ``"given"``."""
    names = _selectable(layout, aliases)
    if params is None:
        trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        chosen = [n for n in names if n in trainable]
        if not chosen:
            raise ValueError(
                "no parameter of the model requires grad; pass params= to choose the parameters of the Hessian"
            )
        return chosen, "requires_grad"
    given = [params] if isinstance(params, str) else list(params)
    given = {aliases.get(n, n) for n in given}  # a tied alias stands for its tensor
    bad = sorted(given - set(names))
    if bad:
        raise ValueError(
            f"params {bad[:3]} are not floating-point parameters of the model; "
            f"expected names among {names[:6]}{' ...' if len(names) > 6 else ''}"
        )
    if not given:
        raise ValueError("params selects no parameter")
    return [n for n in names if n in given], "given"


def selection_record(names: Sequence[str], rule: str, numel: int | None = None) -> dict:
    """What result files record about a parameter selection: the rule, the number of tensors
    and of scalars, a digest of the names, and the names themselves when there are at most 64."""
    names = list(names)
    rec: dict = {
        "rule": rule,
        "count": len(names),
        "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
    }
    if numel is not None:
        rec["numel"] = int(numel)
    if len(names) <= 64:
        rec["names"] = names
    return rec


def parameter_selection(model: nn.Module, params: Iterable[str] | None = None) -> dict:
    """The parameter selection an :class:`HVP` of ``model`` with ``params`` uses, as
    :func:`selection_record` writes it (without building the operator).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    >>> _ = model[0].requires_grad_(False)
    >>> rec = parameter_selection(model)
    >>> rec["rule"], rec["names"], rec["numel"]
    ('requires_grad', ['2.weight', '2.bias'], 21)
    """
    layout = Layout.from_module(model)
    aliases = layout.aliases()
    names, rule = _select(model, layout, aliases, params)
    return selection_record(names, rule, sum(layout[n].numel for n in names))


def _check_names(names: Sequence[str], layout: Layout, what: str, skip: Iterable[str] = ()) -> None:
    skip = set(skip)
    names = [n for n in names if n not in skip]
    expected = [n for n in layout.names() if n not in skip]
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in layout]
        detail = (
            f"model has '{missing[0]}' which the {what} lacks"
            if missing
            else (f"{what} has '{extra[0]}' which the model lacks" if extra else "their order differs")
        )
        raise ValueError(f"{what} does not match the model: {detail}")


def _point_tensors(point, layout: Layout, index: int | None, skip: Iterable[str] = ()) -> Mapping[str, torch.Tensor]:
    """Named tensors of one weight point given as Weights, a mapping or a PointSet row
    (tied aliases, ``skip``, may be absent)."""
    if isinstance(point, PointSet):
        if index is None:
            if point.K != 1:
                raise ValueError(f"point is a PointSet of {point.K} points; pass index= to choose one")
            index = 0
        _check_names(point.layout.names(), layout, "point set", skip)
        return point.point(index)
    if index is not None:
        raise ValueError("index= applies to PointSet points only")
    if isinstance(point, Weights):
        point = point.tensors
    if not isinstance(point, Mapping):
        raise TypeError(
            f"point should be Weights, a PointSet or a mapping of name to tensor, got {type(point).__name__}"
        )
    # a mapping's order does not matter, its names do
    ordered = [n for n in layout.names() if n in point] + [n for n in point if n not in layout]
    _check_names(ordered, layout, "point", skip)
    return point


def _stacked_points(points, layout: Layout, indices, skip: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], int]:
    """Named tensors ``[K, ...]`` of several points (a PointSet or a sequence of points)."""
    skip = set(skip)
    if isinstance(points, PointSet):
        _check_names(points.layout.names(), layout, "point set", skip)
        tensors = points.tensors(indices)
        return dict(tensors), next(iter(tensors.values())).shape[0]
    if indices is not None:
        points = [points[int(i)] for i in np.asarray(indices).reshape(-1)]
    if not points:
        raise ValueError("BatchedHVP needs at least one point")
    each = [_point_tensors(p, layout, None, skip) for p in points]
    return {e.name: torch.stack([p[e.name] for p in each]) for e in layout if e.name not in skip}, len(each)


def _loss_name(loss) -> str:
    if loss is None:
        return "loss"
    if isinstance(loss, str):
        return loss
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__)


class _LossHessian:
    """What HVP and BatchedHVP share: the model copy, the data, the loss and the selection.

    Every pass sums the loss's *unnormalised* batch sums (``sums`` of
    :meth:`Metric.batch_stats <landscape.metrics.Metric.batch_stats>`, or ``loss(output,
    target) * batch.count`` for a callable) and their counts, and divides by the total count
    at the end, so streamed data whose size is unknown before a pass gives exactly the
    in-memory operator. The counts may not depend on the weights (they count samples or
    tokens).
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        *,
        params: Iterable[str] | None,
        loss,
        batch_size: int | None,
        device,
        dtype,
        method: str,
        forward: Callable | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model should be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method should be one of {METHODS}, got {method!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        self.dtype = _resolve_dtype(dtype)
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.layout = Layout.from_module(model)
        #: ``{alias: name}`` of tied tensors; aliases are never passed to ``functional_call``
        self.aliases = self.layout.aliases()
        #: selected parameter names, in layout order
        self.names, rule = _select(model, self.layout, self.aliases, params)
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # scaled-dot-product attention has no double backward nor forward-mode AD on CPUs:
        # Hugging Face models take their eager attention here (same function, other kernel)
        set_eager_attention(self.model)
        self._selected = set(self.names)
        self._entries = [self.layout[n] for n in self.names]
        #: dimension of the operator: number of selected scalar parameters
        self.n = sum(e.numel for e in self._entries)
        #: how the selection was made and what it holds (written into results)
        self.selection = selection_record(self.names, rule, self.n)
        mask = torch.zeros(self.layout.size, dtype=torch.bool)
        for e in self._entries:
            mask[e.slice] = True
        #: ``Tensor[P]`` bool: where the operator's coordinates lie in the flat weight vector
        self.mask = mask
        #: the data as batches (:class:`~landscape.batches.DataSource`)
        self.source = as_source(data)
        self.forward = forward
        self.loss = loss if loss is not None else "loss"
        self.loss_name = _loss_name(loss)
        self._metric = None
        if isinstance(self.loss, (str, Metric)):
            self._metric = resolve_metrics([self.loss])[0]
        elif not callable(self.loss):
            raise TypeError(
                f"loss should be a callable loss(output, target), a metric name or a Metric, got {type(loss).__name__}"
            )
        self._batch_size = batch_size
        self._act_bytes: int | None = None  # forward activations per sample, probed once
        self._last_count = None
        #: what the loss counted in the last full pass (samples; tokens for token metrics)
        self.loss_count: float | None = None
        self.method_requested = method
        #: the method in use (``auto`` until the first product resolves it)
        self.method = _AUTO_ON_CPU if method == "auto" and self.device.type == "cpu" else method
        #: number of Hessian-vector products computed so far (one per vector and point)
        self.count = 0

    # ------------------------------------------------------------------ helpers
    @property
    def num_samples(self) -> int | None:
        """Samples in the data (None for a loader before its first pass)."""
        return self.source.n

    @property
    def passes(self) -> int:
        """Passes over the data so far (one per operator call and point chunk)."""
        return self.source.passes

    def _batches(self):
        return self.source.batches(self.batch_size, self.device, self.dtype, split=True)

    @property
    def batch_size(self) -> int:
        """Samples per pass. Default: a power of two (at least 8; at most N for in-memory
        data) whose forward activations take about 256 MB on CPUs (cache-friendly; a
        product holds a few times that) and 1/16 of the free memory on GPUs. A DataLoader's
        batches are used as they come and split only when larger than this."""
        if self._batch_size is None:
            self._batch_size = self._default_batch_size()
        return self._batch_size

    def _activation_bytes(self) -> int:
        """Bytes of forward activations per sample (one probe forward, measured once)."""
        if self._act_bytes is None:
            from ..evaluate import _activation_bytes_per_sample

            probe = self.source.first(1).to(self.device, self.dtype)
            self._act_bytes = _activation_bytes_per_sample(self.model, self._probe_point(), probe, self.forward)
        return self._act_bytes

    def _default_batch_size(self) -> int:
        from ..evaluate import _pow2_floor

        act = self._activation_bytes()
        target = torch.cuda.mem_get_info(self.device)[0] // 16 if self.device.type == "cuda" else _CPU_TARGET
        bs = max(8, _pow2_floor(max(1, target // max(act, 1))))
        return min(self.source.n, bs) if self.source.in_memory else bs

    def _probe_point(self) -> Tensors:
        raise NotImplementedError

    def _split(self, tensors: Mapping[str, torch.Tensor]) -> tuple[Tensors, Tensors]:
        """(selected parameters, everything else) of named point tensors, on the device;
        tied aliases are left out (``functional_call`` ties them to their tensor)."""
        sel, rest = {}, {}
        for e in self.layout:
            if e.name in self.aliases:
                continue
            t = tensors[e.name]
            t = t.to(device=self.device, dtype=self.dtype if t.is_floating_point() else None)
            (sel if e.name in self._selected else rest)[e.name] = t
        return sel, rest

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``Tensor[..., n]`` into the selected parameters' shapes (views where possible)."""
        lead = v.shape[:-1]
        out, pos = {}, 0
        for e in self._entries:
            out[e.name] = v[..., pos : pos + e.numel].reshape(*lead, *e.shape)
            pos += e.numel
        return out

    def flatten(self, tensors: Mapping[str, torch.Tensor], lead: int) -> torch.Tensor:
        """Concatenate ``{name: Tensor[*lead, *shape]}`` into ``Tensor[*lead, n]``."""
        return torch.cat([tensors[e.name].reshape(*tensors[e.name].shape[:lead], -1) for e in self._entries], -1)

    def _vectors(self, v) -> tuple[torch.Tensor, bool]:
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        if v.shape[-1:] != (self.n,):
            raise ValueError(f"vectors should have last dimension n = {self.n}, got shape {list(v.shape)}")
        return v, v.dim() == 1

    def _batch_loss(self, sel: Tensors, rest: Tensors, batch: Batch) -> torch.Tensor:
        """The batch's loss *sum* (mean times count); its count goes to ``_last_count``."""
        out = call_model(self.model, (sel, rest), batch, self.forward)
        if self._metric is None:
            y = batch.target
            if y is None:
                raise BatchError(
                    "the loss needs targets but the batch has none (a dict batch needs 'labels', "
                    "a tuple batch a second element)"
                )
            if y.is_floating_point():
                y = y.to(out.dtype)
            value, count = self.loss(out, y).reshape(()) * batch.count, batch.count
        else:
            sums, count = self._metric.batch_stats(out.unsqueeze(0), batch)
            value = sums.reshape(())
        self._last_count = count
        return value

    def _take_count(self) -> float:
        c, self._last_count = self._last_count, None
        try:
            return float(c)
        except (TypeError, RuntimeError) as e:  # pragma: no cover - a count computed from the weights
            raise ValueError(
                f"loss {self.loss_name!r} returned a count that depends on the weights ({e}); "
                "counts must depend on the batch only (samples, tokens)"
            ) from None

    def _finish(self, total: Tensors | None, count: float) -> Tensors:
        if total is None or count <= 0:
            raise ValueError(f"loss {self.loss_name!r} counts nothing in the data (0 samples or tokens)")
        self.loss_count = count
        return {k: v.div_(count) for k, v in total.items()}

    # ------------------------------------------------------------------ one point, one batch
    def _hvp_fwd_rev(self, sel: Tensors, rest: Tensors, T: Tensors, batch: Batch) -> Tensors:
        """``H_b t`` (of the batch's loss sum) for tangents ``T[name] : [m, *shape]`` by
        forward-over-reverse AD."""
        g = torch.func.grad(self._batch_loss)

        def one(t):
            return jvp(lambda s: g(s, rest, batch), (sel,), (t,))[1]

        m = next(iter(T.values())).shape[0]
        if m == 1:
            return {k: v[None] for k, v in one({k: t[0] for k, t in T.items()}).items()}
        return vmap(one)(T)

    def _hvp_double_backward(self, sel: Tensors, rest: Tensors, T: Tensors, batch: Batch) -> Tensors:
        """``H_b t`` (of the batch's loss sum) for tangents ``T[name] : [m, *shape]`` by double backward."""
        names = list(sel)
        m = next(iter(T.values())).shape[0]
        out = {k: torch.zeros_like(T[k]) for k in names}
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in sel.items()}
            value = self._batch_loss(leaves, rest, batch)
            if not value.requires_grad:
                return out  # the loss does not depend on the selection (or counts nothing)
            grads = torch.autograd.grad(value, [leaves[k] for k in names], create_graph=True, allow_unused=True)
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            if not live:
                return out  # the loss is at most linear in the selection
            for i in range(m):
                hv = torch.autograd.grad(
                    [grads[j] for j in live],
                    [leaves[k] for k in names],
                    grad_outputs=[T[names[j]][i] for j in live],
                    retain_graph=i < m - 1,
                    allow_unused=True,
                )
                for k, h in zip(names, hv):
                    if h is not None:
                        out[k][i] = h
        return out

    def _point_hvp(self, sel: Tensors, rest: Tensors, T: Tensors) -> Tensors:
        """``H t`` over the whole dataset at one point, with the method fallback of ``auto``."""
        from ..evaluate import _precision_context

        precision = "fp64" if self.dtype == torch.float64 else "fp32"
        failure = None
        with _precision_context(precision, self.device):
            while True:
                fn = self._hvp_double_backward if self.method == "double-backward" else self._hvp_fwd_rev
                try:
                    total, count = None, 0.0
                    for batch in self._batches():
                        hv = fn(sel, rest, T, batch)
                        count += self._take_count()
                        total = hv if total is None else {k: total[k].add_(v) for k, v in hv.items()}
                except (RuntimeError, NotImplementedError, ValueError) as e:
                    if self.method_requested != "auto" or self.method == "double-backward":
                        raise
                    failure, self.method = e, "double-backward"  # retry; warn if that works
                    continue
                if failure is not None:
                    warnings.warn(
                        f"forward-over-reverse Hessian-vector products fail for {type(self.model).__name__} "
                        f"({str(failure).splitlines()[0][:160]}); using double-backward instead",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                elif self.method == "auto":
                    self.method = "forward-over-reverse"
                return self._finish(total, count)

    def _point_gradient(self, sel: Tensors, rest: Tensors) -> tuple[float, torch.Tensor]:
        from ..evaluate import _precision_context

        gv = torch.func.grad_and_value(self._batch_loss)
        value, grad, count = 0.0, None, 0.0
        with _precision_context("fp64" if self.dtype == torch.float64 else "fp32", self.device):
            for batch in self._batches():
                g, v = gv(sel, rest, batch)
                count += self._take_count()
                value += float(v)
                flat = self.flatten(g, 0)
                grad = flat if grad is None else grad.add_(flat)
        if grad is None or count <= 0:
            raise ValueError(f"loss {self.loss_name!r} counts nothing in the data (0 samples or tokens)")
        self.loss_count = count
        return value / count, grad / count


class HVP(_LossHessian):
    """Hessian-vector products of the dataset loss at one weight point.

    The operator is :math:`H = \\nabla^2_\\theta \\frac{1}{N}\\sum_{i=1}^N \\ell(f(x_i;
    \\theta, b), y_i)` over the selected parameters :math:`\\theta`, all other entries of the
    point (unselected parameters and the buffers :math:`b`, BatchNorm running statistics
    among them) held fixed. The model runs in eval mode: BatchNorm uses the point's own
    running statistics and dropout is off, so this is the Hessian of the loss the checkpoint
    computes at test time.

    Parameters
    ----------
    model : nn.Module
        Gives the structure; a private copy (cast to ``dtype``, on ``device``, in eval mode)
        is called with :func:`torch.func.functional_call`; the module is not modified.
    point : Weights or PointSet or mapping of str to Tensor
        The weight point: :class:`~landscape.weights.Weights`, a state_dict-like mapping (e.g.
        ``PointSet.point(k)``), or a :class:`~landscape.pointset.PointSet` with ``index``.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        The samples the loss averages over (pass a subset for a subset's Hessian); anything
        :func:`landscape.batches.as_source` reads. Tensors are moved to the device once and
        sliced; loaders and iterables are streamed batch by batch on every product (tuple or
        dict batches, ``labels`` the targets).
    params : iterable of str, optional
        Names of the parameters the Hessian is taken over. Default: the parameters of
        ``model`` with ``requires_grad=True`` (frozen layers are left out, as PyHessian
        does); :func:`layer_selections` gives one selection per module. A tied tensor is one
        parameter, under its first name (naming an alias selects it too). The rule and the
        names are in :attr:`selection`.
    loss : callable, str or Metric, optional
        ``loss(output, target) -> scalar``, a mean over the batch (weighted by the batch's
        sample count), or a metric name or :class:`~landscape.metrics.Metric` (``"loss"``,
        ``"token_loss"``...), whose per-batch ``sums / count`` is weighted by its count
        (tokens for token metrics). Default ``"loss"``: mean cross-entropy.
    batch_size : int, optional
        Samples per pass; the loss sums and counts are added over batches and divided at
        the end, so the operator does not depend on it. Default: see :attr:`batch_size`
        (a DataLoader's batches are used as they come, split only when larger). Memory
        grows with the number of vectors given to one call.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    dtype : torch.float32 or torch.float64 (or ``"fp32"``, ``"fp64"``)
        Precision of weights, data and products (TF32 is off in either).
    method : {"auto", "forward-over-reverse", "double-backward"}
        How products are computed (see the module docstring).
    index : int, optional
        The row of a ``PointSet`` point.
    forward : callable, optional
        ``forward(model, batch) -> output`` instead of the default call (the batch as the
        data gives it, on the device); outputs may be tensors, tuples, dicts with
        ``logits`` or objects with ``.logits``.
    reuse_graph : {"auto", True, False}
        Keep the gradient's graph of every batch after the first product and run later
        products as one backward pass through it, as PyHessian does (no forward pass and no
        first backward per product; the data is not read again). Only with double-backward
        products (``auto`` on CPUs). ``"auto"`` (default): when the data is in memory and
        the graphs, estimated at three times the forward activations of all samples, fit in
        1 GiB (CPU) or a quarter of the free GPU memory; ``True``: always (in-memory data);
        ``False``: never. The products are the same numbers either way (same batches, same
        order of sums); :meth:`release_graph` frees the graphs.

    Attributes
    ----------
    n : int
        Dimension (number of selected scalar parameters).
    names : list of str
        Selected parameters, in layout order; vectors are their flattened values concatenated.
    mask : Tensor[P] of bool
        The selected coordinates in the point's flat weight vector.
    selection : dict
        ``rule`` (``"requires_grad"`` or ``"given"``), ``count`` of tensors, ``numel``,
        ``sha256`` of the names and ``names`` (up to 64): what results record.
    count : int
        Hessian-vector products computed so far (one per vector).
    passes : int
        Passes over the data so far.
    method : str
        The method in use (``"auto"`` until the first product).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.hessian import HVP
    >>> g = torch.Generator().manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> data = (torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g))
    >>> op = HVP(model, ls.Weights.from_module(model), data, dtype=torch.float64)
    >>> op.n, op(torch.ones(op.n)).shape, op.count
    (15, torch.Size([15]), 1)
    >>> V = torch.eye(op.n, dtype=torch.float64)[:4]
    >>> torch.allclose(op(V)[1], op(V[1]))
    True
    """

    def __init__(
        self,
        model: nn.Module,
        point: Weights | PointSet | Mapping[str, torch.Tensor],
        data,
        *,
        params: Iterable[str] | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str | Metric | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        method: str = "auto",
        index: int | None = None,
        forward: Callable | None = None,
        reuse_graph: bool | str = "auto",
    ):
        super().__init__(
            model,
            data,
            params=params,
            loss=loss,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            method=method,
            forward=forward,
        )
        if reuse_graph not in ("auto", True, False):
            raise ValueError(f"reuse_graph should be 'auto', True or False, got {reuse_graph!r}")
        self.sel, self.rest = self._split(_point_tensors(point, self.layout, index, self.aliases))
        self.reuse_graph = reuse_graph
        self._graphs: list | None = None  # [(leaves, grads, live)] per batch, once kept
        self._graph_count = 0.0
        self._keep: bool | None = None  # the decision of _keeps_graph, taken once

    def _keeps_graph(self) -> bool:
        """Whether products go through kept gradient graphs (see ``reuse_graph``)."""
        if self.reuse_graph is False or not self.source.in_memory:
            return False
        if self.method_requested == "forward-over-reverse" or self.method == "forward-over-reverse":
            return False
        if self.method == "auto":  # GPUs: forward-over-reverse first, unless asked to keep graphs
            return False
        if self.reuse_graph is True:
            return True
        act = self._activation_bytes()
        if self.device.type == "cuda":
            budget = torch.cuda.mem_get_info(self.device)[0] // 4
        else:
            budget = _GRAPH_CPU_BUDGET
        return _GRAPH_FACTOR * act * int(self.source.n or 0) <= budget

    def _build_graphs(self) -> None:
        """One pass over the data keeping each batch's gradient graph (create_graph)."""
        names = self.names
        graphs, count = [], 0.0
        with torch.enable_grad():
            for batch in self._batches():
                leaves = {k: v.detach().requires_grad_(True) for k, v in self.sel.items()}
                value = self._batch_loss(leaves, self.rest, batch)
                count += self._take_count()
                if not value.requires_grad:
                    continue
                grads = torch.autograd.grad(value, [leaves[k] for k in names], create_graph=True, allow_unused=True)
                live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                if live:
                    graphs.append((leaves, grads, live))
        self._graphs, self._graph_count = graphs, count

    def _kept_graph_hvp(self, T: Tensors) -> Tensors:
        """``H t`` through the kept graphs: one backward pass per batch and vector."""
        from ..evaluate import _precision_context

        names = self.names
        m = next(iter(T.values())).shape[0]
        with _precision_context("fp64" if self.dtype == torch.float64 else "fp32", self.device):
            if self._graphs is None:
                self._build_graphs()
            total = None
            for leaves, grads, live in self._graphs:
                outputs, inputs = [grads[j] for j in live], [leaves[k] for k in names]
                rows = []
                for i in range(m):
                    hv = torch.autograd.grad(
                        outputs,
                        inputs,
                        grad_outputs=[T[names[j]][i] for j in live],
                        retain_graph=True,
                        allow_unused=True,
                    )
                    rows.append([h if h is not None else torch.zeros_like(T[k][i]) for k, h in zip(names, hv)])
                out = {k: torch.stack([r[c] for r in rows]) for c, k in enumerate(names)}
                total = out if total is None else {k: total[k].add_(v) for k, v in out.items()}
        if total is None:  # the loss does not depend on the selection
            total = {k: torch.zeros_like(T[k]) for k in names}
        return self._finish(total, self._graph_count)

    def release_graph(self) -> None:
        """Free the kept gradient graphs (the next product builds them again)."""
        self._graphs = None

    def _probe_point(self) -> Tensors:
        return {**self.sel, **self.rest}

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def __call__(self, v) -> torch.Tensor:
        """:math:`Hv` for ``v : Tensor[n]``, or :math:`HV^T` row by row for ``V : Tensor[m, n]``
        (m vectors in one pass; ``[m, n]`` out)."""
        v, single = self._vectors(v)
        V = v[None] if single else v
        if V.dim() != 2:
            raise ValueError(f"vectors should have shape [n] or [m, n], got {list(v.shape)}")
        if V.shape[0] == 0:
            return V.clone()
        T = self.unflatten(V)
        if self._keep is None:
            self._keep = self._keeps_graph()
        if self._keep:
            out = self.flatten(self._kept_graph_hvp(T), 1)
        else:
            out = self.flatten(self._point_hvp(self.sel, self.rest, T), 1)
        self.count += V.shape[0]
        return out[0] if single else out

    def matmul(self, V) -> torch.Tensor:
        """:math:`HV` for ``V : Tensor[n]`` or ``Tensor[n, m]`` (columns are vectors)."""
        V = torch.as_tensor(V)
        return self(V) if V.dim() == 1 else self(V.T).T

    __matmul__ = matmul

    def gradient(self) -> tuple[float, torch.Tensor]:
        """The dataset loss and its gradient ``Tensor[n]`` over the selection at the point."""
        return self._point_gradient(self.sel, self.rest)

    def gradient_at(self, shift) -> tuple[float, torch.Tensor]:
        """The dataset loss and its gradient ``Tensor[n]`` at the point moved by ``shift :
        Tensor[n]`` over the selection (the other entries held), e.g. the steps of a
        sharpness ascent (:func:`landscape.sharpness.worst_case_sharpness`)."""
        shift, single = self._vectors(shift)
        if not single:
            raise ValueError(f"shift should be one vector of shape [{self.n}], got shape {list(shift.shape)}")
        moved = self.unflatten(shift)
        return self._point_gradient({k: v + moved[k] for k, v in self.sel.items()}, self.rest)

    def to_scipy(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` of this operator; vectors go through
        numpy (float64 or float32 as ``dtype``) on every product."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32

        def matmat(X):
            out = self(torch.as_tensor(np.ascontiguousarray(np.asarray(X, dtype=np_dtype).T)))
            return out.T.cpu().numpy()

        def matvec(x):
            return self(torch.as_tensor(np.asarray(x, dtype=np_dtype).reshape(-1))).cpu().numpy()

        return LinearOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=np_dtype)

    def __repr__(self) -> str:
        return (
            f"HVP(n={self.n}, N={self.num_samples}, method={self.method!r}, dtype={self.dtype}, device={self.device})"
        )


class BatchedHVP(_LossHessian):
    """Hessian-vector products at K weight points, one vector per point per call.

    ``op(V)`` with ``V : Tensor[K, n]`` returns the rows :math:`H_k v_k`, each at its own
    point; ``V : Tensor[K, m, n]`` gives m vectors per point. With the forward-over-reverse
    method the points go through one ``torch.func.vmap`` pass (at most ``points_per_pass`` at
    a time); models that vmap cannot trace fall back to one point after another, with a
    warning. This is the operator behind batched Lanczos over the cells of a surface map.

    Parameters
    ----------
    model, data, params, loss, batch_size, device, dtype, method, forward
        As for :class:`HVP`.
    points : PointSet or sequence of Weights or mappings
        The K points (with ``indices``, only those rows).
    indices : sequence of int, optional
        Rows of ``points`` to use (default: all).
    points_per_pass : int, optional
        Upper bound on points per vmap pass (default: all).

    Attributes
    ----------
    K : int
        Number of points.
    n, names, mask, selection, count, passes, method
        As for :class:`HVP`; ``count`` adds one per vector and point.
    vectorized : bool
        Whether points are batched through vmap (False after a fallback).
    """

    batched = True

    def __init__(
        self,
        model: nn.Module,
        points: PointSet | Sequence[Weights | Mapping[str, torch.Tensor]],
        data,
        *,
        indices: Sequence[int] | None = None,
        params: Iterable[str] | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str | Metric | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        method: str = "auto",
        points_per_pass: int | None = None,
        forward: Callable | None = None,
    ):
        super().__init__(
            model,
            data,
            params=params,
            loss=loss,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            method=method,
            forward=forward,
        )
        tensors, self.K = _stacked_points(points, self.layout, indices, self.aliases)
        self.sel, self.rest = self._split(tensors)
        self.points_per_pass = int(points_per_pass or self.K)
        self.vectorized = self.method_requested != "double-backward"

    @property
    def m(self) -> int:
        """Number of operators (points): the batch size of :func:`~landscape.hessian.lanczos_batched`."""
        return self.K

    def _probe_point(self) -> Tensors:
        return {k: v[0] for k, v in {**self.sel, **self.rest}.items()}

    def _vmapped(self, sel: Tensors, rest: Tensors, T: Tensors) -> Tensors:
        from ..evaluate import _precision_context

        precision = "fp64" if self.dtype == torch.float64 else "fp32"
        total, count = None, 0.0
        with _precision_context(precision, self.device):
            for batch in self._batches():
                hv = vmap(lambda s, r, t, b=batch: self._hvp_fwd_rev(s, r, t, b))(sel, rest, T)
                count += self._take_count()
                total = hv if total is None else {k: total[k].add_(v) for k, v in hv.items()}
        return self._finish(total, count)

    def __call__(self, V, indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Products at the points ``indices`` (default all K): ``V : Tensor[k, n]`` (one
        vector per point) or ``Tensor[k, m, n]``, k = number of points; same shape out."""
        V, _ = self._vectors(V)
        idx = torch.arange(self.K) if indices is None else torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if V.dim() not in (2, 3) or V.shape[0] != idx.numel():
            raise ValueError(f"V should have shape [{idx.numel()}, n] or [{idx.numel()}, m, n], got {list(V.shape)}")
        squeeze = V.dim() == 2
        V3 = V[:, None] if squeeze else V
        out = torch.empty_like(V3)
        step = self.points_per_pass
        pos = 0
        while pos < idx.numel():
            chunk = idx[pos : pos + step]
            dev = chunk.to(self.device)
            sel = {k: v[dev] for k, v in self.sel.items()}
            rest = {k: v[dev] for k, v in self.rest.items()}
            T = self.unflatten(V3[pos : pos + step])
            if self.vectorized and self.method != "double-backward":
                try:
                    hv = self._vmapped(sel, rest, T)
                    if self.method == "auto":
                        self.method = "forward-over-reverse"
                except (RuntimeError, NotImplementedError, ValueError) as e:
                    warnings.warn(
                        f"vmap over points fails for {type(self.model).__name__} "
                        f"({str(e).splitlines()[0][:160]}); computing one point after another",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self.vectorized = False
                    continue
            else:
                parts = [
                    self._point_hvp({k: v[i] for k, v in sel.items()}, {k: v[i] for k, v in rest.items()}, T_i)
                    for i, T_i in enumerate({k: v[i] for k, v in T.items()} for i in range(chunk.numel()))
                ]
                hv = {k: torch.stack([p[k] for p in parts]) for k in self.names}
            out[pos : pos + step] = self.flatten(hv, 2)
            pos += chunk.numel()
        self.count += V3.shape[0] * V3.shape[1]
        return out[:, 0] if squeeze else out

    def gradient(self) -> tuple[np.ndarray, torch.Tensor]:
        """Dataset losses ``[K]`` and gradients ``Tensor[K, n]`` at the points (one after another)."""
        vals, grads = [], []
        for i in range(self.K):
            v, g = self._point_gradient({k: t[i] for k, t in self.sel.items()}, {k: t[i] for k, t in self.rest.items()})
            vals.append(v)
            grads.append(g)
        return np.asarray(vals), torch.stack(grads)

    def __repr__(self) -> str:
        return (
            f"BatchedHVP(K={self.K}, n={self.n}, N={self.num_samples}, method={self.method!r}, "
            f"vectorized={self.vectorized}, dtype={self.dtype}, device={self.device})"
        )


def gradient(
    model: nn.Module,
    point: Weights | PointSet | Mapping[str, torch.Tensor],
    data,
    *,
    params: Iterable[str] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str | Metric | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    index: int | None = None,
    forward: Callable | None = None,
) -> tuple[float, torch.Tensor]:
    """The dataset loss and its gradient over the selected parameters at one point.

    Same conventions and arguments as :class:`HVP` (eval mode, batch sums and counts added
    over the data, vectors flat over the selection in layout order).

    Returns
    -------
    loss : float
    grad : Tensor[n]
    """
    op = HVP(
        model,
        point,
        data,
        params=params,
        loss=loss,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        method="double-backward",
        index=index,
        forward=forward,
    )
    return op.gradient()
