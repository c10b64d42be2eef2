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

from collections.abc import Mapping

import torch
from torch import nn

from ..weights import Weights
from .graph import permute_groups
from .structure import structure

__all__ = [
    "check_permutation",
    "compose_permutations",
    "hidden_layers",
    "identity_permutations",
    "invert_permutation",
    "linear_chain",
    "neuron_matrix",
    "permute",
]


def linear_chain(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers of a plain MLP stack, input to output.

    The MLP view of the model's traced structure
    (:attr:`~landscape.connect.structure.Structure.chain`).

    Parameters
    ----------
    model : nn.Module
        A network whose forward is a plain chain of an optional leading ``nn.Flatten``,
        ``nn.Linear`` layers and elementwise activations (ReLU, Tanh, GELU, ..., Dropout),
        such as an ``nn.Sequential`` (possibly nested) of them.

    Returns
    -------
    list of str
        Module names, e.g. ``["1", "3", "5"]`` for ``MLP(64, (32, 16), 10)``; the entries of
        layer ``name`` are ``f"{name}.weight"`` and ``f"{name}.bias"``.

    Raises
    ------
    ValueError
        Naming the first module that is not part of such a chain (a BatchNorm, a function
        call), or the layer whose input size does not match the previous output size.

    Examples
    --------
    >>> import landscape as ls
    >>> linear_chain(ls.build_model("mlp", {"widths": [32, 16]}))
    ['1', '3', '5']
    """
    return list(structure(model).require_chain().names)


def hidden_layers(model: nn.Module) -> list[str]:
    """Names of the Linear layers whose outputs are hidden neurons (all but the last).

    Examples
    --------
    >>> import landscape as ls
    >>> hidden_layers(ls.build_model("mlp", {"widths": [32, 16]}))
    ['1', '3']
    """
    return linear_chain(model)[:-1]


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
    chain = structure(model).require_chain()
    chain.check_layer(layer)
    chain.check_weights(weights)
    if not (incoming or outgoing):
        raise ValueError("neuron_matrix needs incoming=True or outgoing=True, got both False")
    parts = []
    if incoming:
        b = weights.get(f"{layer}.bias")
        if b is not None:
            parts.append(b[:, None])
        parts.append(weights[f"{layer}.weight"])
    if outgoing:
        parts.append(weights[f"{chain.next(layer)}.weight"].T)
    return torch.cat(parts, 1)


def check_permutation(p, n: int, layer: str) -> torch.Tensor:
    """``p`` as a ``LongTensor[n]`` on the CPU, or ValueError unless it permutes ``0..n-1``."""
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
        Any network :func:`~landscape.connect.graph.trace_groups` can follow; ``perms`` is
        keyed by group name (BatchNorm channels move with their filters). For an MLP (see
        :func:`linear_chain`) the groups are its hidden layers, so this is the formula above
        (:func:`~landscape.connect.graph.permute_groups` with the hidden layers as groups).
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
    s = structure(model)
    s.check_weights(weights)
    checked = {layer: check_permutation(p, s.group(layer).size, layer) for layer, p in perms.items()}
    return permute_groups(weights, s.groups, checked)


def identity_permutations(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: arange(n)}`` for every hidden layer (every channel group of other networks)."""
    return {g.name: torch.arange(g.size) for g in structure(model).groups}


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
