"""Which tensors make up a neuron for the flows: :class:`NeuronGroup`, a view of a traced group.

The one description of which tensor axes hold the same hidden unit is the model's traced
structure (:func:`~landscape.connect.graph.trace_groups`: a :class:`~landscape.connect.graph.Group`
of :class:`~landscape.connect.graph.Part` objects). A flow needs more than that description: an
order of the coordinates of a neuron vector (the flows are trained on it) and a choice of
parts (a convolution's filter with its BatchNorm channel, not the running statistics). A
:class:`NeuronGroup` is that choice, a list of ``(entry name, axis)`` pairs built from a traced
group (:meth:`NeuronGroup.from_group`) or given by hand, with the gathering of neurons as rows
(:meth:`~NeuronGroup.matrix`) and their scattering back (:meth:`~NeuronGroup.pieces`,
:meth:`~NeuronGroup.assign`). Saved connection models store the pairs (:mod:`.storage`).

:func:`mlp_groups` and :func:`flow_groups` read the traced groups of a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..graph import Group, Part
from ..structure import structure

__all__ = ["NeuronGroup", "check_groups", "flow_groups", "mlp_groups"]


@dataclass
class NeuronGroup:
    """The tensors that make up one population of neurons, and how to slice them.

    Neuron ``i`` of the group is the concatenation, in part order, of
    ``tensor.select(axis, i).flatten()`` for every part ``(tensor name, axis)``.

    Parameters
    ----------
    name : str
        The group's name; flows are keyed by it (``flows[group.name]``).
    parts : list of (str, int)
        ``(entry name, axis)`` pairs. All parts have the same size ``n`` (the number of
        neurons) along their axis; negative axes count from the end.
    group : Group, optional
        The traced permutation group the view was made from (:meth:`from_group`); not
        compared, not saved.

    Examples
    --------
    The hidden neurons :math:`(b_i, l_i, c_i)` of a two-layer MLP:

    >>> import landscape as ls
    >>> model = ls.build_model("mlp", {"in_features": 64, "widths": [32]})
    >>> g = NeuronGroup("1", [("1.bias", 0), ("1.weight", 0), ("3.weight", 1)])
    >>> w = ls.Weights.from_module(model)
    >>> g.n(w), g.dim(w), tuple(g.matrix(w).shape)
    (32, 75, (32, 75))

    A convolution filter with its BatchNorm and the next layer's input channel:
    ``NeuronGroup("c", [("c.weight", 0), ("c.bias", 0), ("bn.weight", 0), ("bn.bias", 0),
    ("next.weight", 1)])``.
    """

    name: str
    parts: list[tuple[str, int]] = field(default_factory=list)
    group: Group | None = field(default=None, compare=False, repr=False, kw_only=True)

    @classmethod
    def from_group(cls, group: Group, parts: Sequence[Part] | None = None) -> NeuronGroup:
        """The flows' view of a traced permutation group.

        Parameters
        ----------
        group : Group
            A group of :func:`~landscape.connect.graph.trace_groups`.
        parts : sequence of Part, optional
            The parts a neuron is made of, in the order of its coordinates (default: all of
            ``group.parts``, in their order); each one of ``group.parts``.

        Returns
        -------
        NeuronGroup
            Named as ``group``, with the parts as ``(entry name, axis)``; ``.group`` is
            ``group``.
        """
        parts = list(group.parts if parts is None else parts)
        for p in parts:
            if p not in group.parts:
                raise ValueError(f"part {p} is not one of group '{group.name}'s parts")
            if not p.plain:
                raise ValueError(
                    f"part {p.name}[{p.axis}] of group '{group.name}' lies inside a fused axis or spans every "
                    "attention head; a neuron group slices one whole axis"
                )
            if p.block != 1:
                raise ValueError(
                    f"part {p.name}[{p.axis}] of group '{group.name}' holds blocks of {p.block} entries per "
                    "neuron (a layer reading flattened channels); a neuron group slices one entry per neuron"
                )
        return cls(group.name, [(p.name, p.axis) for p in parts], group=group)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"NeuronGroup name should be a non-empty str, got {self.name!r}")
        parts = []
        for p in self.parts:
            if (
                not isinstance(p, (tuple, list))
                or len(p) != 2
                or not isinstance(p[0], str)
                or isinstance(p[1], bool)
                or not isinstance(p[1], (int, np.integer))
            ):
                raise ValueError(f"NeuronGroup '{self.name}': a part should be (entry name, axis), got {p!r}")
            parts.append((p[0], int(p[1])))
        if not parts:
            raise ValueError(f"NeuronGroup '{self.name}' has no parts; expected at least one (entry name, axis)")
        names = [n for n, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"NeuronGroup '{self.name}' names an entry twice: {names}")
        self.parts = parts

    # ------------------------------------------------------------------ geometry
    def _tensor(self, weights: Mapping[str, Tensor], part: tuple[str, int]) -> tuple[Tensor, int]:
        name, axis = part
        if name not in weights:
            raise ValueError(f"NeuronGroup '{self.name}': the weights have no entry '{name}'")
        t = weights[name]
        if not torch.is_tensor(t) or not t.is_floating_point():
            what = t.dtype if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"NeuronGroup '{self.name}': entry '{name}' is {what}; expected a floating-point tensor")
        if not -t.dim() <= axis < t.dim():
            raise ValueError(
                f"NeuronGroup '{self.name}': axis {axis} of entry '{name}' is out of range for its shape "
                f"{tuple(t.shape)}"
            )
        return t, axis % t.dim()

    def n(self, weights: Mapping[str, Tensor]) -> int:
        """Number of neurons (the common size of the parts along their axes)."""
        n0 = None
        for part in self.parts:
            t, axis = self._tensor(weights, part)
            if n0 is None:
                n0 = t.shape[axis]
            elif t.shape[axis] != n0:
                raise ValueError(
                    f"NeuronGroup '{self.name}': entry '{part[0]}' has {t.shape[axis]} neurons along axis "
                    f"{part[1]} but '{self.parts[0][0]}' has {n0}; expected the same number"
                )
        return int(n0)

    def sizes(self, weights: Mapping[str, Tensor]) -> list[int]:
        """Length of each part's piece of one neuron (their sum is :meth:`dim`)."""
        n = self.n(weights)
        return [self._tensor(weights, p)[0].numel() // n if n else 0 for p in self.parts]

    def dim(self, weights: Mapping[str, Tensor]) -> int:
        """Dimension ``D`` of one neuron."""
        return sum(self.sizes(weights))

    def entries(self) -> list[str]:
        """Names of the entries the group covers."""
        return [n for n, _ in self.parts]

    # ------------------------------------------------------------------ gather / scatter
    def matrix(self, weights: Mapping[str, Tensor]) -> Tensor:
        """The neurons as rows.

        Parameters
        ----------
        weights : Weights or mapping of str to Tensor

        Returns
        -------
        Tensor[n, D]
            Row ``i`` is neuron ``i``; dtype promoted over the parts, on their device.
        """
        n = self.n(weights)
        pieces = []
        for part in self.parts:
            t, axis = self._tensor(weights, part)
            pieces.append(t.movedim(axis, 0).reshape(n, -1))
        dtype = pieces[0].dtype
        for p in pieces[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        return torch.cat([p.to(dtype) for p in pieces], 1)

    def pieces(self, M: Tensor, like: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """Split neuron rows back into the group's entries.

        Parameters
        ----------
        M : Tensor[..., n, D]
            Neurons as rows; leading dimensions (e.g. ``T`` values of ``t``) are kept.
        like : Weights or mapping of str to Tensor
            Gives the shapes and dtypes of the entries.

        Returns
        -------
        OrderedDict of str to Tensor[..., *shape]
            One tensor per part, in ``like``'s dtype, on ``M``'s device.
        """
        n, sizes = self.n(like), self.sizes(like)
        D = sum(sizes)
        if not torch.is_tensor(M) or M.dim() < 2 or tuple(M.shape[-2:]) != (n, D):
            got = list(M.shape) if torch.is_tensor(M) else type(M).__name__
            raise ValueError(f"NeuronGroup '{self.name}': M should have shape [..., {n}, {D}], got {got}")
        batch = tuple(M.shape[:-2])
        out: OrderedDict[str, Tensor] = OrderedDict()
        for part, piece in zip(self.parts, torch.split(M, sizes, dim=-1)):
            t, axis = self._tensor(like, part)
            rest = t.movedim(axis, 0).shape[1:]
            x = piece.reshape(*batch, n, *rest).movedim(len(batch), len(batch) + axis)
            out[part[0]] = x.to(t.dtype)
        return out

    def assign(self, tensors: Mapping[str, Tensor], M: Tensor) -> OrderedDict[str, Tensor]:
        """A copy of ``tensors`` with the group's entries replaced by the neurons ``M``.

        Parameters
        ----------
        tensors : Weights or mapping of str to Tensor
            Not modified.
        M : Tensor[..., n, D]
            New neurons; with leading dimensions the replaced entries get them too
            (``Tensor[..., *shape]``) while the other entries are returned as they are.

        Returns
        -------
        OrderedDict of str to Tensor
            In the order of ``tensors``.

        Examples
        --------
        >>> import torch, landscape as ls
        >>> w = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
        >>> g = mlp_groups(ls.build_model("mlp", {"widths": [8]}))[0]
        >>> new = g.assign(w, torch.zeros(8, g.dim(w)))
        >>> float(new["3.weight"].abs().sum()), torch.equal(new["3.bias"], w["3.bias"])
        (0.0, True)
        """
        out = OrderedDict(tensors.items())
        out.update(self.pieces(M, tensors))
        return out


def _paper_order(group: Group) -> list[Part]:
    """The parts of a hidden MLP neuron in the paper's order :math:`(b_i, l_i, c_i)`.

    The traced group lists the written parts first (weight rows, then bias), then the read
    parts (the next layer's columns); the paper, and the flows trained on its neuron vectors,
    put the bias first: ``[bias, weight, next weight]``.
    """
    bias = [p for p in group.parts if p.role == "out" and p.name.endswith(".bias")]
    return bias + [p for p in group.parts if p not in bias]


def _layer_rows(model: nn.Module, layer: str) -> NeuronGroup:
    """The rows of Linear ``layer`` and its bias as a group (the output layer of an MLP, whose
    rows are fixed outputs and so in no traced group)."""
    parts = [(f"{layer}.weight", 0)]
    if model.get_submodule(layer).bias is not None:
        parts.append((f"{layer}.bias", 0))
    return NeuronGroup(layer, parts)


def mlp_groups(model: nn.Module) -> list[NeuronGroup]:
    """The neuron groups of a plain MLP stack, read from its traced groups.

    With one hidden layer (``Linear k, act, Linear o``) the single group is the paper's hidden
    neuron :math:`\\theta_i = (b_i, l_i, c_i)`: ``[(f"{k}.bias", 0), (f"{k}.weight", 0),
    (f"{o}.weight", 1)]``, the traced group of ``k`` with its bias first; the output bias
    belongs to no group. Otherwise every Linear layer ``k`` (the output layer included) is one
    group of its rows, ``[(f"{k}.weight", 0), (f"{k}.bias", 0)]`` (for a hidden layer the
    written parts of its traced group), so every parameter belongs to exactly one group.

    Parameters
    ----------
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`).

    Returns
    -------
    list of NeuronGroup
        Named by their (first) Linear layer.

    Examples
    --------
    >>> import landscape as ls
    >>> mlp_groups(ls.build_model("mlp", {"widths": [32]}))[0].parts
    [('1.bias', 0), ('1.weight', 0), ('3.weight', 1)]
    >>> [g.name for g in mlp_groups(ls.build_model("mlp", {"widths": [32, 16]}))]
    ['1', '3', '5']
    """
    st = structure(model)
    chain = st.require_chain().names
    traced = st.groups
    if [g.name for g in traced] != chain[:-1]:
        raise ValueError(f"the traced groups {[g.name for g in traced]} are not the hidden layers {chain[:-1]}")
    if len(chain) == 2:
        return [NeuronGroup.from_group(traced[0], _paper_order(traced[0]))]
    groups = [NeuronGroup.from_group(g, [p for p in g.parts if p.role == "out"]) for g in traced]
    return groups + [_layer_rows(model, chain[-1])]


def flow_groups(model: nn.Module) -> list[NeuronGroup]:
    """Neuron groups for flows on any supported network.

    MLPs: :func:`mlp_groups`. Convolutional and residual networks: one group per channel
    group of :func:`~landscape.connect.graph.trace_groups`, made of the parts that write the
    channels (filter rows, bias, BatchNorm weight and bias); BatchNorm running statistics
    (they must stay positive; recompute them along the path) and the layers that only read
    a group (the classifier) follow the straight line in :func:`~landscape.connect.flows.flow_path`.

    Examples
    --------
    >>> import landscape as ls
    >>> flow_groups(ls.build_model("small_cnn", {"width": 4}))[0].parts
    [('0.weight', 0), ('1.weight', 0), ('1.bias', 0)]
    """
    st = structure(model)
    if st.chain is not None:
        return mlp_groups(model)
    params = {n for n, _ in model.named_parameters()}
    return [NeuronGroup.from_group(g, [p for p in g.parts if p.role == "out" and p.name in params]) for g in st.groups]


def check_groups(groups: Sequence[NeuronGroup], weights: Mapping[str, Tensor], flows=None) -> list[NeuronGroup]:
    """``groups`` as a list of disjoint, uniquely named groups that fit ``weights`` (and
    ``flows``: one flow of the groups' dimension each, when given)."""
    if isinstance(groups, NeuronGroup) or not isinstance(groups, Sequence):
        raise ValueError(f"groups should be a list of NeuronGroup, got {type(groups).__name__}")
    groups = list(groups)
    owner: dict[str, str] = {}
    names = set()
    for g in groups:
        if not isinstance(g, NeuronGroup):
            raise ValueError(f"groups should hold NeuronGroup objects, got a {type(g).__name__}")
        if g.name in names:
            raise ValueError(f"two groups are named '{g.name}'; expected unique names (flows are keyed by them)")
        names.add(g.name)
        for e in g.entries():
            if e in owner:
                raise ValueError(f"entry '{e}' is in group '{owner[e]}' and in group '{g.name}'; expected one group")
            owner[e] = g.name
        D = g.dim(weights)  # validates the parts against the weights
        if flows is not None:
            if not isinstance(flows, Mapping):
                raise ValueError(f"flows should be a dict of group name to flow, got {type(flows).__name__}")
            if g.name not in flows:
                raise ValueError(f"no flow for group '{g.name}'; flows has {sorted(flows)}")
            fdim = getattr(flows[g.name], "dim", D)
            if fdim != D:
                raise ValueError(f"the flow of group '{g.name}' has dim {fdim} but the group's neurons have D = {D}")
    return groups
