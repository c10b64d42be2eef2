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
* The loss is ``loss(output, target) -> scalar``, a mean over its batch (mean cross-entropy
  by default). The dataset loss is the mean over all N samples, so batches are combined as
  :math:`\\sum_b (n_b / N)\\, H_b v`; any ``batch_size`` gives the same operator.
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
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vmap

from ..pointset import PointSet
from ..weights import Layout, Weights

__all__ = ["BatchedHVP", "HVP", "METHODS", "gradient", "layer_selections"]

METHODS = ("auto", "forward-over-reverse", "double-backward")
_AUTO_ON_CPU = "double-backward"  # what ``auto`` means on a CPU (see the module docstring)
_CPU_TARGET = 256 << 20  # bytes of forward activations per batch on CPUs
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


def _check_names(names: Sequence[str], layout: Layout, what: str) -> None:
    if list(names) != layout.names():
        missing = [n for n in layout.names() if n not in names]
        extra = [n for n in names if n not in layout]
        detail = (
            f"model has '{missing[0]}' which the {what} lacks"
            if missing
            else (f"{what} has '{extra[0]}' which the model lacks" if extra else "their order differs")
        )
        raise ValueError(f"{what} does not match the model: {detail}")


def _point_tensors(point, layout: Layout, index: int | None) -> Mapping[str, torch.Tensor]:
    """Named tensors of one weight point given as Weights, a mapping or a PointSet row."""
    if isinstance(point, PointSet):
        if index is None:
            if point.K != 1:
                raise ValueError(f"point is a PointSet of {point.K} points; pass index= to choose one")
            index = 0
        _check_names(point.layout.names(), layout, "point set")
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
    _check_names([n for n in layout.names() if n in point] + [n for n in point if n not in layout], layout, "point")
    return point


def _stacked_points(points, layout: Layout, indices) -> tuple[dict[str, torch.Tensor], int]:
    """Named tensors ``[K, ...]`` of several points (a PointSet or a sequence of points)."""
    if isinstance(points, PointSet):
        _check_names(points.layout.names(), layout, "point set")
        tensors = points.tensors(indices)
        return dict(tensors), next(iter(tensors.values())).shape[0]
    if indices is not None:
        points = [points[int(i)] for i in np.asarray(indices).reshape(-1)]
    if not points:
        raise ValueError("BatchedHVP needs at least one point")
    each = [_point_tensors(p, layout, None) for p in points]
    return {e.name: torch.stack([p[e.name] for p in each]) for e in layout}, len(each)


class _LossHessian:
    """What HVP and BatchedHVP share: the model copy, the data, the loss and the selection."""

    def __init__(
        self,
        model: nn.Module,
        data,
        *,
        params: Iterable[str] | None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        batch_size: int | None,
        device,
        dtype,
        method: str,
    ):
        from ..data import as_xy

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
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        param_names = [e.name for e in self.layout if e.is_parameter and e.flat]
        if params is None:
            chosen = set(param_names)
        else:
            chosen = {params} if isinstance(params, str) else set(params)
            bad = sorted(chosen - set(param_names))
            if bad:
                raise ValueError(
                    f"params {bad[:3]} are not floating-point parameters of the model; "
                    f"expected names among {param_names[:6]}{' ...' if len(param_names) > 6 else ''}"
                )
            if not chosen:
                raise ValueError("params selects no parameter")
        #: selected parameter names, in layout order
        self.names: list[str] = [n for n in param_names if n in chosen]
        self._selected = set(self.names)
        self._entries = [self.layout[n] for n in self.names]
        #: dimension of the operator: number of selected scalar parameters
        self.n = sum(e.numel for e in self._entries)
        mask = torch.zeros(self.layout.size, dtype=torch.bool)
        for e in self._entries:
            mask[e.slice] = True
        #: ``Tensor[P]`` bool: where the operator's coordinates lie in the flat weight vector
        self.mask = mask
        x, y = as_xy(data)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"data has {x.shape[0]} inputs but {y.shape[0]} targets")
        if x.shape[0] == 0:
            raise ValueError("data is empty (0 samples)")
        self.x = x.to(device=self.device, dtype=self.dtype if x.is_floating_point() else None)
        self.y = y.to(device=self.device, dtype=self.dtype if y.is_floating_point() else None)
        self.num_samples = int(x.shape[0])
        self.loss = loss if loss is not None else F.cross_entropy
        self._batch_size = batch_size
        self.method_requested = method
        #: the method in use (``auto`` until the first product resolves it)
        self.method = _AUTO_ON_CPU if method == "auto" and self.device.type == "cpu" else method
        #: number of Hessian-vector products computed so far (one per vector and point)
        self.count = 0

    # ------------------------------------------------------------------ helpers
    def _batches(self):
        bs = self.batch_size
        for i in range(0, self.num_samples, bs):
            xb, yb = self.x[i : i + bs], self.y[i : i + bs]
            yield xb, yb, xb.shape[0] / self.num_samples

    @property
    def batch_size(self) -> int:
        """Samples per pass. Default: a power of two (at least 8, at most N) whose forward
        activations take about 256 MB on CPUs (cache-friendly; a product holds a few times
        that) and 1/16 of the free memory on GPUs."""
        if self._batch_size is None:
            self._batch_size = self._default_batch_size()
        return self._batch_size

    def _default_batch_size(self) -> int:
        from ..evaluate import _activation_bytes_per_sample, _pow2_floor

        act = _activation_bytes_per_sample(self.model, self._probe_point(), self.x[:1])
        target = torch.cuda.mem_get_info(self.device)[0] // 16 if self.device.type == "cuda" else _CPU_TARGET
        return min(self.num_samples, max(8, _pow2_floor(max(1, target // max(act, 1)))))

    def _probe_point(self) -> Tensors:
        raise NotImplementedError

    def _split(self, tensors: Mapping[str, torch.Tensor]) -> tuple[Tensors, Tensors]:
        """(selected parameters, everything else) of named point tensors, on the device."""
        sel, rest = {}, {}
        for e in self.layout:
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

    def _batch_loss(self, sel: Tensors, rest: Tensors, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(functional_call(self.model, (sel, rest), (x,)), y)

    # ------------------------------------------------------------------ one point, one batch
    def _hvp_fwd_rev(self, sel: Tensors, rest: Tensors, T: Tensors, x, y) -> Tensors:
        """``H_b t`` for tangents ``T[name] : [m, *shape]`` by forward-over-reverse AD."""
        g = torch.func.grad(self._batch_loss)

        def one(t):
            return jvp(lambda s: g(s, rest, x, y), (sel,), (t,))[1]

        m = next(iter(T.values())).shape[0]
        if m == 1:
            return {k: v[None] for k, v in one({k: t[0] for k, t in T.items()}).items()}
        return vmap(one)(T)

    def _hvp_double_backward(self, sel: Tensors, rest: Tensors, T: Tensors, x, y) -> Tensors:
        """``H_b t`` for tangents ``T[name] : [m, *shape]`` by double backward."""
        names = list(sel)
        m = next(iter(T.values())).shape[0]
        out = {k: torch.zeros_like(T[k]) for k in names}
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in sel.items()}
            value = self._batch_loss(leaves, rest, x, y)
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
                    total = None
                    for xb, yb, weight in self._batches():
                        hv = fn(sel, rest, T, xb, yb)
                        total = (
                            {k: weight * v for k, v in hv.items()}
                            if total is None
                            else {k: total[k].add_(v, alpha=weight) for k, v in hv.items()}
                        )
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
                return total

    def _point_gradient(self, sel: Tensors, rest: Tensors) -> tuple[float, torch.Tensor]:
        from ..evaluate import _precision_context

        gv = torch.func.grad_and_value(self._batch_loss)
        value, grad = 0.0, None
        with _precision_context("fp64" if self.dtype == torch.float64 else "fp32", self.device):
            for xb, yb, weight in self._batches():
                g, v = gv(sel, rest, xb, yb)
                value += weight * float(v)
                flat = self.flatten(g, 0)
                grad = weight * flat if grad is None else grad.add_(flat, alpha=weight)
        return value, grad


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
    data : TensorData or tuple of (Tensor[N, ...], Tensor[N])
        The samples the loss averages over (pass a subset for a subset's Hessian).
    params : iterable of str, optional
        Names of the parameters the Hessian is taken over (default: all parameters);
        :func:`layer_selections` gives one selection per module.
    loss : callable, optional
        ``loss(output, target) -> scalar``, a mean over the batch; default
        :func:`torch.nn.functional.cross_entropy`.
    batch_size : int, optional
        Samples per pass; the products are summed over batches weighted by size / N, so
        the operator does not depend on it. Default: see :attr:`batch_size`. Memory grows
        with the number of vectors given to one call.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    dtype : torch.float32 or torch.float64 (or ``"fp32"``, ``"fp64"``)
        Precision of weights, data and products (TF32 is off in either).
    method : {"auto", "forward-over-reverse", "double-backward"}
        How products are computed (see the module docstring).
    index : int, optional
        The row of a ``PointSet`` point.

    Attributes
    ----------
    n : int
        Dimension (number of selected scalar parameters).
    names : list of str
        Selected parameters, in layout order; vectors are their flattened values concatenated.
    mask : Tensor[P] of bool
        The selected coordinates in the point's flat weight vector.
    count : int
        Hessian-vector products computed so far (one per vector).
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
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        method: str = "auto",
        index: int | None = None,
    ):
        super().__init__(
            model, data, params=params, loss=loss, batch_size=batch_size, device=device, dtype=dtype, method=method
        )
        self.sel, self.rest = self._split(_point_tensors(point, self.layout, index))

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
        out = self.flatten(self._point_hvp(self.sel, self.rest, self.unflatten(V)), 1)
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
    model, data, params, loss, batch_size, device, dtype, method
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
    n, names, mask, count, method
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
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        method: str = "auto",
        points_per_pass: int | None = None,
    ):
        super().__init__(
            model, data, params=params, loss=loss, batch_size=batch_size, device=device, dtype=dtype, method=method
        )
        tensors, self.K = _stacked_points(points, self.layout, indices)
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
        fn = vmap(self._hvp_fwd_rev, in_dims=(0, 0, 0, None, None))
        total = None
        with _precision_context(precision, self.device):
            for xb, yb, weight in self._batches():
                hv = fn(sel, rest, T, xb, yb)
                total = (
                    {k: weight * v for k, v in hv.items()}
                    if total is None
                    else {k: total[k].add_(v, alpha=weight) for k, v in hv.items()}
                )
        return total

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
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    index: int | None = None,
) -> tuple[float, torch.Tensor]:
    """The dataset loss and its gradient over the selected parameters at one point.

    Same conventions and arguments as :class:`HVP` (eval mode, batches weighted by size / N,
    vectors flat over the selection in layout order).

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
    )
    return op.gradient()
