"""The neuron view of a fully connected network, and permutations of its hidden neurons.

A hidden layer ``k`` of an MLP ``Linear_1, act, Linear_2, act, ..., Linear_L`` has neurons

.. math::

    \\theta_i = (b_i, l_i, c_i), \\qquad b_i = b^{(k)}_i,\\quad l_i = W^{(k)}_{i,:},\\quad
    c_i = W^{(k+1)}_{:,i},

its bias, incoming weight row and outgoing weight column (Anokhin & Yarotsky, "Low-loss
connection of weight vectors: distribution-based approaches", ICML 2020). Permuting the
neurons of a hidden layer (rows of :math:`W^{(k)}` and :math:`b^{(k)}`, columns of
:math:`W^{(k+1)}`) leaves the network's function unchanged.

Layers are named by their ``nn.Linear`` module (``"1"``, ``"3"``, ... for
:class:`~landscape.models.mlp.MLP`) and their tensors are found by name in the
:class:`~landscape.weights.Layout` (``"1.weight"``, ``"1.bias"``), never by position.

Permutation convention: a permutation ``p`` of a layer (``LongTensor[n]``) puts the old
neuron ``p[i]`` into slot ``i``, so ``permute`` gathers: ``W[p]``, ``b[p]``, ``W_next[:, p]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ..weights import Weights
from .structure import ELEMENTWISE

__all__ = [
    "compose_permutations",
    "hidden_layers",
    "identity_permutations",
    "invert_permutation",
    "linear_chain",
    "neuron_matrix",
    "permute",
]

_EXPECTED = "expected a plain nn.Sequential of an optional leading Flatten, Linear layers and elementwise activations"


def _leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Leaf modules of nested plain ``nn.Sequential`` containers, with their names."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), module


def _chain_modules(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    if not (isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward):
        raise ValueError(f"model is a {type(model).__name__} with its own forward; {_EXPECTED}")
    linears: list[tuple[str, nn.Linear]] = []
    for i, (name, mod) in enumerate(_leaves(model, "")):
        if isinstance(mod, nn.Linear):
            if linears and linears[-1][1].out_features != mod.in_features:
                raise ValueError(
                    f"Linear '{name}' takes {mod.in_features} inputs but the Linear '{linears[-1][0]}' "
                    f"before it gives {linears[-1][1].out_features}"
                )
            linears.append((name, mod))
        elif isinstance(mod, nn.Flatten) and i == 0:
            continue
        elif isinstance(mod, ELEMENTWISE) or (isinstance(mod, nn.PReLU) and mod.num_parameters == 1):
            continue
        else:
            where = " after the first module" if isinstance(mod, nn.Flatten) else ""
            raise ValueError(f"module '{name}' is a {type(mod).__name__}{where}; {_EXPECTED}")
    if not linears:
        raise ValueError(f"model has no Linear layer; {_EXPECTED}")
    return linears


def linear_chain(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers of a plain MLP stack, input to output.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` (possibly nested) of an optional leading ``nn.Flatten``,
        ``nn.Linear`` layers and elementwise activations (ReLU, Tanh, GELU, ..., Dropout).

    Returns
    -------
    list of str
        Module names, e.g. ``["1", "3", "5"]`` for ``MLP(64, (32, 16), 10)``; the entries of
        layer ``name`` are ``f"{name}.weight"`` and ``f"{name}.bias"``.

    Raises
    ------
    ValueError
        Naming the first module that is not part of such a stack (a BatchNorm, a custom
        block), or the layer whose input size does not match the previous output size.

    Examples
    --------
    >>> import landscape as ls
    >>> linear_chain(ls.build_model("mlp", {"widths": [32, 16]}))
    ['1', '3', '5']
    """
    return [name for name, _ in _chain_modules(model)]


def hidden_layers(model: nn.Module) -> list[str]:
    """Names of the Linear layers whose outputs are hidden neurons (all but the last).

    Examples
    --------
    >>> import landscape as ls
    >>> hidden_layers(ls.build_model("mlp", {"widths": [32, 16]}))
    ['1', '3']
    """
    return linear_chain(model)[:-1]


def _try_chain(model: nn.Module) -> _Chain | None:
    """The MLP chain of ``model``, or None for other networks (handled through
    :func:`landscape.connect.graph.trace_groups`)."""
    try:
        return _Chain(model)
    except ValueError:
        return None


class _Chain:
    """Names and sizes of the chain, checked against a set of weights."""

    def __init__(self, model: nn.Module):
        mods = _chain_modules(model)
        self.names = [n for n, _ in mods]
        self.sizes = {n: (m.out_features, m.in_features) for n, m in mods}

    @property
    def hidden(self) -> list[str]:
        return self.names[:-1]

    def next(self, layer: str) -> str:
        return self.names[self.names.index(layer) + 1]

    def check_layer(self, layer: str) -> None:
        if layer not in self.hidden:
            raise ValueError(
                f"layer {layer!r} is not a hidden layer of this model; expected one of {self.hidden} "
                f"(Linear layers followed by another Linear)"
            )

    def check_weights(self, weights: Weights, what: str = "weights") -> None:
        if not isinstance(weights, Weights):
            raise TypeError(f"{what} should be a landscape Weights, got {type(weights).__name__}")
        for name in self.names:
            out_f, in_f = self.sizes[name]
            key = f"{name}.weight"
            if key not in weights.layout:
                raise ValueError(f"{what} have no entry '{key}' for the model's Linear layer '{name}'")
            shape = tuple(weights[key].shape)
            if shape != (out_f, in_f):
                raise ValueError(f"{what} entry '{key}' has shape {shape}; the model's layer has ({out_f}, {in_f})")

    @staticmethod
    def bias(weights: Mapping[str, torch.Tensor], layer: str) -> torch.Tensor | None:
        return weights.get(f"{layer}.bias")


def neuron_matrix(
    weights: Weights, model: nn.Module, layer: str, *, incoming: bool = True, outgoing: bool = True
) -> torch.Tensor:
    """The neurons of hidden layer ``layer`` as rows :math:`\\theta_i = (b_i, l_i, c_i)`.

    .. math::

        \\theta_i = \\bigl(b^{(k)}_i,\\; W^{(k)}_{i,1..d_{k-1}},\\; W^{(k+1)}_{1..d_{k+1},i}\\bigr)

    Parameters
    ----------
    weights : Weights
        Weights of ``model`` (matched by name).
    model : nn.Module
        The MLP (see :func:`linear_chain`); only its structure is used.
    layer : str
        A hidden layer: the name of a Linear layer other than the last.
    incoming, outgoing : bool
        Include the bias and incoming row :math:`(b_i, l_i)`, the outgoing column
        :math:`c_i`, or both (default).

    Returns
    -------
    Tensor[n, d]
        ``n`` neurons of the layer; ``d = 1 + d_in + d_out`` (no ``1`` without a bias).

    Examples
    --------
    >>> import landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [32, 16]})
    >>> neuron_matrix(ls.Weights.from_module(model), model, "3").shape
    torch.Size([16, 43])
    """
    chain = _Chain(model)
    chain.check_layer(layer)
    chain.check_weights(weights)
    if not (incoming or outgoing):
        raise ValueError("neuron_matrix needs incoming=True or outgoing=True, got both False")
    parts = []
    if incoming:
        b = chain.bias(weights, layer)
        if b is not None:
            parts.append(b[:, None])
        parts.append(weights[f"{layer}.weight"])
    if outgoing:
        parts.append(weights[f"{chain.next(layer)}.weight"].T)
    return torch.cat(parts, 1)


def check_permutation(p, n: int, layer: str) -> torch.Tensor:
    p = torch.as_tensor(p)
    if p.dim() != 1 or p.numel() != n or p.dtype.is_floating_point or p.dtype == torch.bool:
        raise ValueError(
            f"permutation of layer {layer!r} should be an integer tensor [{n}], got {p.dtype} {list(p.shape)}"
        )
    p = p.to(torch.long).cpu()
    if not torch.equal(torch.sort(p).values, torch.arange(n)):
        raise ValueError(f"permutation of layer {layer!r} is not a permutation of 0..{n - 1}")
    return p


def permute(weights: Weights, model: nn.Module, perms: Mapping[str, torch.Tensor]) -> Weights:
    """Reorder the hidden neurons of some layers; the network's function is unchanged.

    .. math::

        W^{(k)} \\leftarrow W^{(k)}_{p,:}, \\quad b^{(k)} \\leftarrow b^{(k)}_p, \\quad
        W^{(k+1)} \\leftarrow W^{(k+1)}_{:,p}

    Parameters
    ----------
    weights : Weights
        Weights of ``model``.
    model : nn.Module
        The MLP (see :func:`linear_chain`), or any network
        :func:`~landscape.connect.graph.trace_groups` can follow (then ``perms`` is keyed
        by group name and BatchNorm channels move with their filters).
    perms : dict of str to LongTensor[n]
        For some hidden layers, the permutation ``p``: slot ``i`` receives old neuron
        ``p[i]``. Layers not named keep their order.

    Returns
    -------
    Weights
        New tensors (the input is not modified), same layout; other entries are shared.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]}).double()
    >>> w = ls.Weights.from_module(model)
    >>> v = permute(w, model, {"1": torch.randperm(8)})
    >>> x = torch.randn(4, 64, dtype=torch.float64)
    >>> f = lambda w: torch.func.functional_call(model, dict(w), (x,))
    >>> torch.allclose(f(w), f(v), rtol=0, atol=1e-12)
    True
    """
    chain = _try_chain(model)
    if chain is None:  # convolutional / residual networks: traced channel groups
        from .graph import permute_groups, trace_groups

        return permute_groups(weights, trace_groups(model), perms)
    chain.check_weights(weights)
    tensors = OrderedDict(weights.tensors)
    for layer, p in perms.items():
        chain.check_layer(layer)
        n = chain.sizes[layer][0]
        p = check_permutation(p, n, layer)
        nxt = chain.next(layer)
        w, wn = tensors[f"{layer}.weight"], tensors[f"{nxt}.weight"]
        tensors[f"{layer}.weight"] = w[p.to(w.device)]
        tensors[f"{nxt}.weight"] = wn[:, p.to(wn.device)]
        b = chain.bias(tensors, layer)
        if b is not None:
            tensors[f"{layer}.bias"] = b[p.to(b.device)]
    return Weights(tensors, weights.layout)


def identity_permutations(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: arange(n)}`` for every hidden layer (every channel group of other networks)."""
    chain = _try_chain(model)
    if chain is None:
        from .graph import trace_groups

        return {g.name: torch.arange(g.size) for g in trace_groups(model)}
    return {layer: torch.arange(chain.sizes[layer][0]) for layer in chain.hidden}


def invert_permutation(p: torch.Tensor) -> torch.Tensor:
    """The inverse ``q`` of ``p`` (``p[q] = q[p] = arange(n)``); a dict is inverted per layer.

    Examples
    --------
    >>> invert_permutation(torch.tensor([2, 0, 1])).tolist()
    [1, 2, 0]
    """
    if isinstance(p, Mapping):
        return {k: invert_permutation(v) for k, v in p.items()}
    p = torch.as_tensor(p)
    return torch.argsort(p)


def compose_permutations(first, second):
    """The permutation that applies ``first`` and then ``second``.

    With the gather convention of :func:`permute`,
    ``permute(permute(w, m, first), m, second) == permute(w, m, compose_permutations(first, second))``,
    and the composition is ``first[second]``. Dicts are composed layer by layer (a layer
    missing from one of them is the identity there).

    Examples
    --------
    >>> compose_permutations(torch.tensor([1, 2, 0]), torch.tensor([1, 2, 0])).tolist()
    [2, 0, 1]
    """
    if isinstance(first, Mapping) or isinstance(second, Mapping):
        if not (isinstance(first, Mapping) and isinstance(second, Mapping)):
            raise TypeError(
                f"compose_permutations takes two tensors or two dicts, got {type(first).__name__} "
                f"and {type(second).__name__}"
            )
        out = {}
        for k in list(first) + [k for k in second if k not in first]:
            if k in first and k in second:
                out[k] = compose_permutations(first[k], second[k])
            else:
                out[k] = torch.as_tensor(first[k] if k in first else second[k])
        return out
    first, second = torch.as_tensor(first), torch.as_tensor(second)
    if first.shape != second.shape:
        raise ValueError(f"permutations of different sizes: {list(first.shape)} and {list(second.shape)}")
    return first[second]
