"""Operations on the permutation groups of any traceable network.

A hidden channel of a convolutional or residual network (a *neuron* in the sense of
Anokhin & Yarotsky, ICML 2020) is a filter with its bias, its BatchNorm channel (weight,
bias, running statistics) and the matching input-channel slices of every layer that reads
it. Permuting the channels of such a *group* consistently in every tensor that touches it
leaves the network's function unchanged. In a residual network every layer that writes to or
reads from the same residual stream belongs to one group (the stream is permuted as a
whole). The groups are read from the model's one trace (:mod:`landscape.connect.structure`,
whose docs list the layers it follows); :func:`trace_groups` returns them.

Here: reordering the channels of groups (:func:`permute_groups`), a group's channels as rows
(:func:`group_matrix`), their places in a flat weight vector (:func:`slot_index`) and the
Arc's mean channel (:func:`group_mean`). Groups are named after the module that first writes
them (``"features.0"``, ``"conv1"``), which for an MLP is the name of the hidden ``Linear``
layer, as in :mod:`landscape.connect.neurons`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..weights import Weights
from .structure import Group, Part, UnsupportedModelError, structure

__all__ = [
    "Group",
    "Part",
    "UnsupportedModelError",
    "group_matrix",
    "group_mean",
    "permute_groups",
    "slot_index",
    "trace_groups",
]


def trace_groups(model: nn.Module) -> list[Group]:
    """The permutation groups of ``model`` (see :mod:`landscape.connect.structure`), in
    forward order.

    Parameters
    ----------
    model : nn.Module
        Any module ``torch.fx.symbolic_trace`` can trace, built from the supported layers.

    Returns
    -------
    list of Group
        The permutable groups; channels of the input and the output are not among them. The
        groups are those of :func:`~landscape.connect.structure.structure` ``(model)``,
        read once per model.

    Raises
    ------
    UnsupportedModelError
        A node whose channel flow the tracer cannot follow (named in the message), or a
        model ``torch.fx`` cannot trace.

    Examples
    --------
    >>> import landscape as ls
    >>> [g.name for g in trace_groups(ls.build_model("mlp", {"widths": [32, 16]}))]
    ['1', '3']
    >>> g = trace_groups(ls.build_model("small_cnn", {"width": 4}))[0]
    >>> g.name, g.size, [p.name for p in g.parts]
    ('0', 4, ['0.weight', '1.weight', '1.bias', '1.running_mean', '1.running_var', '3.weight'])
    """
    return list(structure(model).groups)


def permute_groups(weights: Weights, groups: list[Group], perms: dict[str, torch.Tensor]) -> Weights:
    """Reorder the channels of every group in ``perms`` (old channel ``perm[i]`` to slot ``i``).

    The result computes the same function as ``weights`` (in eval mode: BatchNorm running
    statistics move with their channels).
    """
    by_name = {g.name: g for g in groups}
    unknown = [k for k in perms if k not in by_name]
    if unknown:
        raise ValueError(f"unknown groups {unknown}; the model has {list(by_name)}")
    out = OrderedDict(weights.tensors)
    for name, p in perms.items():
        g = by_name[name]
        p = torch.as_tensor(p, dtype=torch.long)
        if p.shape != (g.size,) or not torch.equal(torch.sort(p).values, torch.arange(g.size)):
            raise ValueError(f"perms['{name}'] should be a permutation of 0..{g.size - 1}")
        for part in g.parts:
            x = out[part.name]
            out[part.name] = x.index_select(part.axis, g.index(p, part, x.shape[part.axis]).to(x.device))
    return Weights(out, weights.layout)


# ---------------------------------------------------------------------------- derived views
def group_matrix(weights: Weights, group: Group, *, roles: tuple[str, ...] = ("out",)) -> torch.Tensor:
    """The group's neurons as rows ``Tensor[size, d]``: its parts with the given roles
    (``"out"``: the filter, its bias and BatchNorm channel; ``"in"``: the slices of the
    layers that read it), concatenated."""
    rows = [group.neuron_rows(weights[p.name], p) for p in group.parts if p.role in roles]
    return torch.cat(rows, 1)


def slot_index(layout, group: Group) -> torch.Tensor:
    """Flat indices (in ``layout``'s vector) of every channel's entries: ``LongTensor[n, d]``."""
    cols = []
    for p in group.parts:
        e = layout[p.name]
        idx = e.offset + torch.arange(e.numel).reshape(e.shape)
        cols.append(group.neuron_rows(idx, p))
    return torch.cat(cols, 1)


def group_mean(A: Weights, B: Weights, groups: list[Group]) -> Weights:
    """The Arc's mean neuron :math:`\\mu` for any traced network, in weight form.

    Every tensor that writes a group's channels (a filter, its bias, its BatchNorm channel)
    is averaged over the ``2n`` channels of ``A`` and ``B`` along that axis; a tensor that
    only reads a group (the classifier after the last hidden group) is averaged over the
    channels it reads; every other entry is :math:`(A + B) / 2`. For an MLP this is
    :func:`~landscape.connect.neuron_mean`.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    owner: dict[str, tuple[Group, Part]] = {}
    for g in groups:
        for p in g.parts:
            cur = owner.get(p.name)
            if cur is None or (cur[1].role == "in" and p.role == "out"):
                owner[p.name] = (g, p)
    for e in A.layout:
        a = A[e.name]
        if not e.flat:
            out[e.name] = a
            continue
        b = B[e.name]
        if e.name not in owner:
            out[e.name] = (0.5 * (a.to(torch.float64) + b.to(torch.float64))).to(a.dtype)
            continue
        g, p = owner[e.name]
        if not p.plain:  # a part inside a fused axis: its channels' mean, the rest as (A + B) / 2
            x = (0.5 * (a.to(torch.float64) + b.to(torch.float64))).movedim(p.axis, 0)
            rows = torch.cat([g.neuron_rows(a, p), g.neuron_rows(b, p)]).to(torch.float64).mean(0)
            pos = g.positions(p).reshape(-1)
            x[pos] = rows.reshape(-1, *x.shape[1:]).repeat(g.size, *([1] * (x.dim() - 1)))
            out[e.name] = x.movedim(0, p.axis).to(a.dtype).contiguous()
            continue
        x = torch.cat([a, b], p.axis).to(torch.float64).movedim(p.axis, 0)
        rest = x.shape[1:]
        x = x.reshape(2 * g.size, p.block, *rest).mean(0, keepdim=True)
        x = x.expand(g.size, *x.shape[1:]).reshape(g.size * p.block, *rest).movedim(0, p.axis)
        out[e.name] = x.to(a.dtype).contiguous()
    return Weights(out, A.layout)
