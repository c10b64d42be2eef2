"""A sequential network as weight adjustment sees it: weighted layers and what lies between.

Weight adjustment (:mod:`landscape.connect.adjust`) works layer by layer through a network
whose layers follow one another: an MLP (an optional leading ``Flatten``, ``Linear`` layers
and elementwise activations), or a convolutional network of ``Conv2d`` / ``Linear`` layers
with BatchNorm, activations, pooling and ``flatten`` between them. :class:`LayerStack` reads
both from the model's one shared ``torch.fx`` trace (:func:`~landscape.connect.structure.traced`):
an MLP is the special case whose every node is such a module, and it gets the fast batched
features of :mod:`~landscape.connect.adjust`. A network that branches (residual additions)
raises :class:`NotSequentialError`; it is adjusted at the cuts of its graph instead
(:mod:`landscape.connect.adjust_graph`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..weights import Weights
from .lstsq import assemble, weight_adjustment
from .paths import same_layout
from .structure import BATCHNORMS, PASS_FUNCTIONS, PASS_MODULES, UnsupportedModelError, structure

__all__ = ["LayerStack", "NotSequentialError"]


class NotSequentialError(UnsupportedModelError):
    """The network branches (residual additions): WA goes through the cuts of its graph
    (:mod:`landscape.connect.adjust_graph`) instead of its layers."""


class LayerStack:
    """A sequential network split into its weighted layers and the modules between them.

    Read from the model's shared ``torch.fx`` trace: one chain of nodes, ``Linear`` and
    ``Conv2d`` layers (no channel groups) with BatchNorm, parameter-free activations, pooling
    and ``flatten`` between them. Between two weighted layers, BatchNorm normalises with the
    statistics of the batch it is given (as ``bn="recompute"`` evaluation does), with the
    affine parameters of the weights passed in. Layers are numbered ``1..n`` from the input.

    Attributes
    ----------
    names : list of str
        The weighted layers' module names, input to output.
    mods : list of nn.Module
        The modules themselves (the model's, read only).
    pre : list of tuple
        The operations before layer 1 (a leading ``Flatten``), as ``(kind, op, name)``.
    between : list of list of tuple
        ``between[k - 1]``: the operations after layer ``k``.
    mlp : bool
        Every node is a module: a leading ``Flatten``, ``Linear`` layers and elementwise
        activations (an MLP stack).
    n : int
        The number of weighted layers.

    Raises
    ------
    NotSequentialError
        A node takes more than the previous node's output (a residual addition, a branch).
    UnsupportedModelError
        Another node weight adjustment cannot pass (named), or fewer than two weighted layers
        in a convolutional network.
    ValueError
        A PReLU in an MLP stack (an activation with parameters).

    Examples
    --------
    >>> import landscape as ls
    >>> st = LayerStack(ls.build_model("mlp", {"widths": [32, 16]}))
    >>> st.names, st.mlp, [name for _, _, name in st.pre]
    (['1', '3', '5'], True, ['0'])
    """

    def __init__(self, model: nn.Module):
        self.model = model
        st = structure(model)
        gm = st.graph
        modules = dict(gm.named_modules())
        self.mlp = st.chain is not None  # an MLP: the structure's chain view
        self.names: list[str] = []
        self.mods: list[nn.Module] = []
        self.pre: list[tuple] = []
        self.between: list[list[tuple]] = []
        self._read(gm, modules)
        if not self.mlp and len(self.names) < 2:
            raise UnsupportedModelError("weight adjustment needs at least two weighted layers")
        self.n = len(self.names)

    @classmethod
    def for_pair(cls, A: Weights, B: Weights, model: nn.Module) -> LayerStack:
        """The stack of ``model``, with ``A`` and ``B`` checked against it and each other."""
        same_layout(A, B)
        st = cls(model)
        st.check_weights(A, "A")
        st.check_weights(B, "B")
        return st

    def _read(self, gm: torch.fx.GraphModule, modules: dict[str, nn.Module]) -> None:
        """The layers and the operations between them, from the nodes of the trace (one chain)."""
        ops = self.pre
        current = None

        def fail(node, why: str):
            return UnsupportedModelError(
                f"weight adjustment needs a sequential network of Linear/Conv2d layers with BatchNorm, activations, "
                f"pooling and flatten between them; node '{node.name}' ({node.op} {node.target}): {why}"
            )

        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if current is not None:
                    raise fail(node, "a second input")
                current = node
                continue
            if node.op == "output":
                if node.args[0] is not current:
                    raise fail(node, "the output is not the end of the chain")
                break
            tensors = [a for a in node.all_input_nodes if a.op != "get_attr"]
            if node.op == "call_method" and node.target == "size":
                continue
            sources = [a for a in tensors if not (a.op == "call_method" and a.target == "size")]
            if sources != [current]:
                raise NotSequentialError(
                    str(fail(node, "it does not take the previous node's output alone (residual or branching)"))
                )
            if node.op == "call_module":
                mod = modules[node.target]
                if isinstance(mod, (nn.Linear, nn.Conv2d)):
                    if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                        raise fail(node, "grouped convolution")
                    self.names.append(node.target)
                    self.mods.append(mod)
                    self.between.append([])
                    ops = self.between[-1]
                elif isinstance(mod, BATCHNORMS):
                    ops.append(("bn", mod, node.target))
                elif isinstance(mod, nn.Dropout):  # identity at evaluation
                    pass
                elif isinstance(mod, (*PASS_MODULES, nn.Flatten)):
                    ops.append(("mod", mod, node.target))
                elif isinstance(mod, nn.PReLU) and self.mlp:
                    raise ValueError(
                        f"module '{node.target}' is a PReLU; weight adjustment needs activations without parameters"
                    )
                else:
                    raise fail(node, f"module {type(mod).__name__}")
            elif node.op == "call_function" and (node.target in PASS_FUNCTIONS or node.target is torch.flatten):
                fn, rest, kw = node.target, node.args[1:], dict(node.kwargs)
                ops.append(("mod", lambda x, fn=fn, rest=rest, kw=kw: fn(x, *rest, **kw), node.name))
            elif node.op == "call_method" and node.target in ("flatten", "view", "reshape", "relu", "contiguous"):
                if node.target in ("view", "reshape"):
                    ops.append(("mod", lambda x: x.flatten(1), node.name))
                else:
                    m, rest = node.target, node.args[1:]
                    ops.append(("mod", lambda x, m=m, rest=rest: getattr(x, m)(*rest), node.name))
            else:
                raise fail(node, "not a layer, activation, pooling or flatten")
            current = node

    def layer(self, k: int) -> str:
        """Name of layer ``k`` (1-based)."""
        if not 1 <= k <= self.n:
            raise ValueError(f"layer index k should be in 1..{self.n} for this model, got {k}")
        return self.names[k - 1]

    def bn_entries(self, k: int) -> list[str]:
        """Affine BatchNorm parameters applied after layer ``k`` (they move with its filters)."""
        return [f"{name}.{p}" for kind, _, name in self.between[k - 1] if kind == "bn" for p in ("weight", "bias")]

    def bn_state(self, k: int) -> list[str]:
        """Every BatchNorm entry after layer ``k`` (parameters and running statistics)."""
        out = []
        for kind, _, name in self.between[k - 1]:
            if kind == "bn":
                out += [f"{name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        return out

    def check_weights(self, w: Weights, what: str) -> None:
        """``w`` is a :class:`~landscape.weights.Weights` with every layer's weight, of the
        layer's shape."""
        if not isinstance(w, Weights):
            raise TypeError(f"{what} should be a landscape Weights, got {type(w).__name__}")
        for name, mod in zip(self.names, self.mods):
            key = f"{name}.weight"
            if key not in w.layout:
                raise ValueError(f"{what} have no entry '{key}' for the model's layer '{name}'")
            shape = tuple(w[key].shape)
            if shape != tuple(mod.weight.shape):
                raise ValueError(
                    f"{what} entry '{key}' has shape {shape}; the model's layer has {tuple(mod.weight.shape)}"
                )

    @staticmethod
    def apply(ops: list[tuple], x: torch.Tensor, params=None, stats=None, record=None) -> torch.Tensor:
        """Run the modules ``ops``; BatchNorm normalises with the statistics of ``x``, or with
        ``stats[name] = (mean, var)`` when given (``record`` collects the batch's)."""
        for kind, op, name in ops:
            if kind == "bn":
                dims = [d for d in range(x.dim()) if d != 1]
                if stats is not None and name in stats:
                    mean, var = stats[name]
                else:
                    mean = x.mean(dims, keepdim=True)
                    var = x.var(dims, unbiased=False, keepdim=True)
                    if record is not None:
                        record[name] = (mean, var)
                shape = [1, -1] + [1] * (x.dim() - 2)
                src = params if params is not None else dict(op.named_parameters(prefix=name))
                gamma = src.get(f"{name}.weight")
                beta = src.get(f"{name}.bias")
                x = (x - mean) / torch.sqrt(var + op.eps)
                if gamma is not None:
                    x = x * gamma.to(x).reshape(shape) + beta.to(x).reshape(shape)
            else:
                x = op(x)
        return x

    def input(self, X) -> torch.Tensor:
        """The input of layer 1 in float64: ``X`` (a tensor, an array or data with ``.x``)
        through the operations before it."""
        x = getattr(X, "x", X)
        if not torch.is_tensor(x):
            x = torch.as_tensor(np.asarray(x))
        x = x.to(torch.float64)
        with torch.no_grad():
            x = self.apply(self.pre, x)
        if self.mlp and x.dim() != 2:
            raise ValueError(f"the input to the first Linear layer should be [N, d], got {list(x.shape)}")
        return x

    def act(self, k: int, z: torch.Tensor, w=None, stats=None, record=None) -> torch.Tensor:
        """The modules after layer ``k`` (1-based) applied to its output; BatchNorm takes its
        affine parameters from ``w`` (a mapping of entries) and the statistics of ``z`` (or
        ``stats``, see :meth:`apply`)."""
        with torch.no_grad():
            return self.apply(self.between[k - 1], z, w, stats, record)

    def has_bias(self, w: Weights, k: int) -> bool:
        return f"{self.layer(k)}.bias" in w.layout

    def linear(self, w, k: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``k`` with the entries of ``w`` applied to ``h``."""
        name, mod = self.layer(k), self.mods[k - 1]
        W = w[f"{name}.weight"].to(h)
        b = w.get(f"{name}.bias")
        b = None if b is None else b.to(h)
        if isinstance(mod, nn.Conv2d):
            return torch.nn.functional.conv2d(h, W, b, mod.stride, mod.padding, mod.dilation)
        z = h @ W.T
        return z if b is None else z + b

    def design(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Inputs of layer ``k`` as least-squares rows: ``h`` for Linear, its patches
        ``[N * L, C * kh * kw]`` for Conv2d (the pseudo-inverse over patches)."""
        mod = self.mods[k - 1]
        if not isinstance(mod, nn.Conv2d):
            return h
        if isinstance(mod.padding, str):
            raise ValueError(f"layer '{self.layer(k)}': padding={mod.padding!r}; WA needs numeric padding")
        cols = torch.nn.functional.unfold(h, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def targets(self, k: int, z: torch.Tensor) -> torch.Tensor:
        """Outputs of layer ``k`` as least-squares targets ``[N * L, out]``."""
        if z.dim() == 2:
            return z
        return z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1])

    def weight_shape(self, k: int) -> tuple[int, ...]:
        return tuple(self.mods[k - 1].weight.shape)

    def outputs(self, w: Weights, h0: torch.Tensor, k: int) -> torch.Tensor:
        """The output of layer ``k`` of ``w`` on the input ``h0``, as least-squares targets."""
        z = h0
        for j in range(1, k + 1):
            z = self.linear(w, j, z)
            if j < k:
                z = self.act(j, z, w)
        return self.targets(k, z)

    def transitional(
        self, A: Weights, B: Weights, k: int, h0: torch.Tensor, ridge: float, *, paper: bool = False
    ) -> Weights:
        """:math:`\\Theta_k^{AB}` on the input ``h0`` (``2 <= k <= n``): ``B``'s layers below
        ``k`` with their BatchNorm, layer ``k`` fitted to ``A``'s output there, ``A`` above.
        ``paper``: no bias column, ``A``'s bias of layer ``k`` kept (see
        :func:`~landscape.connect.transitional_network`)."""
        h = h0
        for j in range(1, k):
            h = self.act(j, self.linear(B, j, h), B)
        zA = self.outputs(A, h0, k)
        bias = self.has_bias(A, k)
        name = self.layer(k)
        if paper:  # no bias column; A's bias is kept (it is already in A)
            if bias:
                zA = zA - A[f"{name}.bias"].to(torch.float64)
            W, _ = weight_adjustment(self.design(k, h), zA, bias=False, ridge=ridge)
            bias = False
        else:
            W, b = weight_adjustment(self.design(k, h), zA, bias=bias, ridge=ridge)
        upd = {f"{name}.weight": W.reshape(self.weight_shape(k))}
        if bias:
            upd[f"{name}.bias"] = b
        for j in range(1, k):  # B's layers below k, with their BatchNorm
            lj = self.layer(j)
            upd[f"{lj}.weight"] = B[f"{lj}.weight"]
            if self.has_bias(B, j):
                upd[f"{lj}.bias"] = B[f"{lj}.bias"]
            for e in self.bn_state(j):
                upd[e] = B[e]
        return assemble(A, [upd])[0]
