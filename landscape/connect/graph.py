"""Which tensor axes share a channel: the permutation groups of any traceable network.

A hidden channel of a convolutional or residual network (a *neuron* in the sense of
Anokhin & Yarotsky, ICML 2020) is a filter with its bias, its BatchNorm channel (weight,
bias, running statistics) and the matching input-channel slices of every layer that reads
it. Permuting the channels of such a *group* consistently in every tensor that touches it
leaves the network's function unchanged. In a residual network every layer that writes to or
reads from the same residual stream belongs to one group (the stream is permuted as a
whole).

:func:`trace_groups` finds the groups by following the channel axis through the graph of
``torch.fx.symbolic_trace(model)``:

* ``Conv1d/2d/3d`` (no channel groups) and ``Linear`` read the channel space of their input
  (``weight`` axis 1) and open a new one (``weight`` axis 0, ``bias``);
* ``BatchNorm1d/2d/3d`` join their space (``weight``, ``bias``, ``running_mean``,
  ``running_var``);
* elementwise activations, pooling, dropout and identities pass the space through; so do
  scalar arithmetic and spatial means;
* ``x + y`` (residual additions) merges the two spaces into one;
* ``flatten`` turns ``C`` channels of ``H x W`` values into ``C`` blocks of ``H W`` features
  of the next ``Linear`` (its ``weight`` axis 1 permutes in blocks);
* the input and the output spaces are fixed: a group that reaches either is not permuted.

Anything else (concatenation, grouped convolutions, LayerNorm, attention, custom functions)
raises :class:`UnsupportedModelError` naming the node it could not follow.

Groups are named after the module that first writes them (``"features.0"``, ``"conv1"``),
which for an MLP is the name of the hidden ``Linear`` layer, as in
:mod:`landscape.connect.neurons`.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..weights import Weights
from .structure import BATCHNORMS, CONVOLUTIONS, PASS_FUNCTIONS, PASS_MODULES, UnsupportedModelError

__all__ = ["Group", "Part", "UnsupportedModelError", "permute_groups", "trace_groups"]


@dataclass(frozen=True)
class Part:
    """One tensor's share of a group: neuron ``i`` owns ``tensor.select(axis, .)`` at the
    indices ``i * block ... i * block + block - 1`` of ``axis``.

    ``role`` is ``"out"`` where the group's channels are written (a layer's output rows, its
    bias, BatchNorm parameters) and ``"in"`` where they are read (a later layer's input
    slices)."""

    name: str
    axis: int
    block: int = 1
    role: str = "out"


@dataclass
class Group:
    """The tensors that must be permuted together: ``size`` channels, the ``parts``."""

    name: str
    size: int
    parts: list[Part] = field(default_factory=list)

    def index(self, perm: torch.Tensor, part: Part) -> torch.Tensor:
        """Indices along ``part.axis`` that put old channel ``perm[i]`` in slot ``i``."""
        if part.block == 1:
            return perm
        return (perm[:, None] * part.block + torch.arange(part.block)).reshape(-1)

    def neuron_rows(self, tensor: torch.Tensor, part: Part) -> torch.Tensor:
        """``tensor``'s share of every channel: ``Tensor[size, d]``."""
        x = tensor.movedim(part.axis, 0)
        return x.reshape(self.size, -1)

    def __repr__(self) -> str:
        parts = ", ".join(f"{p.name}[{p.axis}]" + (f"x{p.block}" if p.block > 1 else "") for p in self.parts)
        return f"Group({self.name!r}, size={self.size}, parts=[{parts}])"


_PASS_METHODS = {"relu", "tanh", "sigmoid", "contiguous", "clone", "float", "double", "to"}
_ADD = {operator.add, operator.iadd, torch.add}
_SCALE = {operator.mul, operator.truediv, operator.imul, operator.itruediv, torch.mul}


class _Spaces:
    """Union-find over channel spaces, with each space's parts, size and name."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.parts: list[list[Part]] = []
        self.size: list[int | None] = []
        self.fixed: list[str | None] = []
        self.name: list[str | None] = []

    def new(self, size: int | None = None, fixed: str | None = None, name: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.parts.append([])
        self.size.append(size)
        self.fixed.append(fixed)
        self.name.append(name)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        lo, hi = min(a, b), max(a, b)  # the earlier space keeps its name
        if self.size[lo] is not None and self.size[hi] is not None and self.size[lo] != self.size[hi]:
            raise UnsupportedModelError(
                f"{where}: adds tensors with {self.size[lo]} and {self.size[hi]} channels; expected equal counts"
            )
        self.parent[hi] = lo
        self.parts[lo] += self.parts[hi]
        self.size[lo] = self.size[lo] if self.size[lo] is not None else self.size[hi]
        self.fixed[lo] = self.fixed[lo] or self.fixed[hi]
        self.name[lo] = self.name[lo] or self.name[hi]
        return lo


@dataclass
class _Value:
    """What flows along an fx edge: a channel space and how the channels are laid out."""

    space: int
    flat: bool = False  # channels flattened together with spatial positions (after flatten)


def _leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def trace_groups(model: nn.Module) -> list[Group]:
    """The permutation groups of ``model`` (see the module docs), in forward order.

    Parameters
    ----------
    model : nn.Module
        Any module ``torch.fx.symbolic_trace`` can trace, built from the supported layers.

    Returns
    -------
    list of Group
        The permutable groups; channels of the input and the output are not among them.

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
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "connections need a model whose channel flow can be traced"
        ) from e
    modules = _leaf_modules(gm)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    sp = _Spaces()
    values: dict[str, _Value | None] = {}

    def value_of(arg, where: str) -> _Value | None:
        if isinstance(arg, torch.fx.Node):
            return values.get(arg.name)
        return None

    def tensor_args(node) -> list[_Value]:
        out = []

        def visit(a) -> None:
            if isinstance(a, (list, tuple)):
                for b in a:
                    visit(b)
            elif isinstance(a, dict):
                for b in a.values():
                    visit(b)
            else:
                v = value_of(a, node.name)
                if v is not None:
                    out.append(v)

        visit(list(node.args) + list(node.kwargs.values()))
        return out

    def fail(node, why: str) -> UnsupportedModelError:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        return UnsupportedModelError(
            f"cannot follow channels through {node.op} '{target}' (node '{node.name}'): {why}; supported: "
            "Linear, Conv1d/2d/3d, BatchNorm, elementwise activations, pooling, dropout, flatten and residual additions"
        )

    def add_part(space: int, name: str, axis: int, block: int = 1, role: str = "out") -> None:
        if name in params or name in buffers:
            sp.parts[sp.find(space)].append(Part(name, axis, block, role))

    def read(node, mod_name: str, mod: nn.Module, v: _Value, in_features: int) -> None:
        """``mod.weight`` axis 1 reads the channels of ``v``."""
        s = sp.find(v.space)
        if sp.fixed[s] == "input":  # the input's channels are never permuted
            return
        block = 1
        if v.flat:
            n = sp.size[s]
            if n is None or in_features % n != 0:
                raise fail(node, f"{in_features} input features are not whole blocks of {n} flattened channels")
            block = in_features // n
        elif sp.size[s] is not None and sp.size[s] != in_features:
            raise fail(node, f"reads {in_features} channels from a tensor with {sp.size[s]}")
        add_part(s, f"{mod_name}.weight", 1, block, "in")

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            values[node.name] = _Value(sp.new(fixed="input"))
        elif node.op == "get_attr":
            values[node.name] = None
        elif node.op == "output":
            for v in tensor_args(node):
                sp.fixed[sp.find(v.space)] = "output"
        elif node.op == "call_module":
            mod = modules[node.target]
            args = tensor_args(node)
            if isinstance(mod, (nn.Linear, *CONVOLUTIONS)):
                if isinstance(mod, CONVOLUTIONS) and mod.groups != 1:
                    raise fail(node, f"grouped convolution (groups={mod.groups})")
                if len(args) != 1:
                    raise fail(node, "expected one tensor input")
                v = args[0]
                if isinstance(mod, CONVOLUTIONS) and v.flat:
                    raise fail(node, "convolution of flattened features")
                read(node, node.target, mod, v, mod.weight.shape[1])
                out = sp.new(size=mod.weight.shape[0], name=node.target)
                add_part(out, f"{node.target}.weight", 0)
                add_part(out, f"{node.target}.bias", 0)
                values[node.name] = _Value(out)
            elif isinstance(mod, BATCHNORMS):
                v = args[0]
                if v.flat:
                    raise fail(node, "batch norm of flattened features")
                s = sp.find(v.space)
                if sp.size[s] is None:
                    sp.size[s] = mod.num_features
                for suffix in ("weight", "bias", "running_mean", "running_var"):
                    add_part(s, f"{node.target}.{suffix}", 0)
                values[node.name] = _Value(s)
            elif isinstance(mod, nn.Flatten):
                v = args[0]
                if mod.start_dim != 1 or mod.end_dim != -1:
                    raise fail(node, f"flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim}); expected 1, -1")
                values[node.name] = _Value(v.space, flat=True)
            elif isinstance(mod, PASS_MODULES):
                values[node.name] = args[0] if args else None
            else:
                raise fail(node, f"module {type(mod).__name__}")
        elif node.op == "call_function":
            fn = node.target
            args = tensor_args(node)
            if fn in _ADD:
                if len(args) == 2:
                    if args[0].flat != args[1].flat:
                        raise fail(node, "adds flattened and unflattened features")
                    values[node.name] = _Value(sp.union(args[0].space, args[1].space, node.name), args[0].flat)
                else:
                    values[node.name] = args[0] if args else None
            elif fn in _SCALE or fn in PASS_FUNCTIONS or fn is operator.neg:
                if fn in _SCALE and len(args) > 1:
                    raise fail(node, "multiplies two tensors")
                values[node.name] = args[0] if args else None
            elif fn is torch.flatten:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    raise fail(node, f"flatten from dim {start}; expected 1")
                values[node.name] = _Value(args[0].space, flat=True)
            elif fn in (getattr, operator.getitem) and not args:
                values[node.name] = None
            elif fn is torch.mean or fn is torch.amax:
                values[node.name] = _spatial_reduce(node, args, fail)
            else:
                if not args:
                    values[node.name] = None
                    continue
                raise fail(node, "function")
        elif node.op == "call_method":
            m = node.target
            args = tensor_args(node)
            if m == "size" or m == "dim":
                values[node.name] = None
            elif m in _PASS_METHODS or m in ("mul", "div", "__mul__"):
                if m in ("mul", "div") and len(args) > 1:
                    raise fail(node, "multiplies two tensors")
                values[node.name] = args[0]
            elif m in ("add", "add_", "__add__"):
                if len(args) == 2:
                    values[node.name] = _Value(sp.union(args[0].space, args[1].space, node.name), args[0].flat)
                else:
                    values[node.name] = args[0]
            elif m == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    raise fail(node, f"flatten from dim {start}; expected 1")
                values[node.name] = _Value(args[0].space, flat=True)
            elif m in ("view", "reshape"):
                shape = node.args[1:]
                if len(shape) == 2 and shape[-1] == -1:
                    values[node.name] = _Value(args[0].space, flat=True)
                else:
                    raise fail(node, f"{m} to {shape}; only x.{m}(batch, -1) is understood")
            elif m in ("mean", "amax"):
                values[node.name] = _spatial_reduce(node, args, fail)
            else:
                raise fail(node, "method")
        else:  # pragma: no cover - fx has no other node kinds
            raise fail(node, "node kind")

    groups: OrderedDict[int, Group] = OrderedDict()
    for s in range(len(sp.parent)):
        r = sp.find(s)
        if r in groups or sp.fixed[r] or not sp.parts[r] or sp.size[r] is None:
            continue
        if not any(p.role == "out" and p.name.endswith("weight") for p in sp.parts[r]):
            continue
        groups[r] = Group(sp.name[r] or f"group{len(groups)}", int(sp.size[r]), _ordered(sp.parts[r]))
    out = list(groups.values())
    for g in out:
        _check_sizes(g, model)
    return out


def _spatial_reduce(node, args, fail) -> _Value | None:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if not args:
        return None
    if not dims or 1 in dims or (-1 in dims and args[0].flat):
        raise fail(node, f"reduction over dims {dims}; only spatial dims (2, 3, ...) keep the channels")
    return args[0]


def _ordered(parts: list[Part]) -> list[Part]:
    """Out parts first (in forward order), then in parts; duplicates dropped."""
    seen, out = set(), []
    for role in ("out", "in"):
        for p in parts:
            if p.role == role and (p.name, p.axis) not in seen:
                seen.add((p.name, p.axis))
                out.append(p)
    return out


def _check_sizes(g: Group, model: nn.Module) -> None:
    tensors = dict(model.state_dict())
    for p in g.parts:
        n = tensors[p.name].shape[p.axis]
        if n != g.size * p.block:
            raise UnsupportedModelError(
                f"group '{g.name}': {p.name} has {n} entries on axis {p.axis}, expected {g.size} x {p.block}"
            )


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
            out[part.name] = x.index_select(part.axis, g.index(p, part).to(x.device))
    return Weights(out, weights.layout, source=weights.source, sha256=weights.sha256)


# ---------------------------------------------------------------------------- derived views
def _owner_axes(groups: list[Group]) -> dict[tuple[str, int], str]:
    """``(tensor, axis) -> group`` for every axis that belongs to a group."""
    return {(p.name, p.axis): g.name for g in groups for p in g.parts}


def group_matrix(weights: Weights, group: Group, *, roles: tuple[str, ...] = ("out",)) -> torch.Tensor:
    """The group's neurons as rows ``Tensor[size, d]``: its parts with the given roles
    (``"out"``: the filter, its bias and BatchNorm channel; ``"in"``: the slices of the
    layers that read it), concatenated."""
    rows = [group.neuron_rows(weights[p.name], p) for p in group.parts if p.role in roles]
    return torch.cat(rows, 1)


def match_groups(
    A: Weights,
    B: Weights,
    groups: list[Group],
    *,
    solver: str = "emd",
    max_sweeps: int = 10,
    neuron: str = "blc",
) -> dict[str, torch.Tensor]:
    """Match the channels of ``B`` to those of ``A`` in every group (OT stage 1, any network).

    Groups are taken in forward order; a group's cost is the squared distance between the
    channels of ``A`` and of ``B`` with the permutations already found applied to ``B``.
    A channel is the paper's neuron :math:`(b_i, l_i, c_i)` (``neuron="blc"``, default): its
    written parts (filter, bias, BatchNorm channel) and the slices of the layers that read
    it, as the authors' code does for convolutions; with ``neuron="bl"`` the written parts
    alone. On the first sweep a group compares only the parts whose other axes are already
    aligned (the input slices of a filter follow the matching of the layer below; the
    slices of a reading layer wait for its own group, and the classifier's are ready at
    once); further sweeps use every part with the latest permutations, until nothing
    changes. Each sweep lowers :math:`\\lVert A - \\pi(B) \\rVert^2` over the compared
    parts, so it stops; a permuted copy of ``A`` is matched exactly.

    Returns
    -------
    dict of str to LongTensor[n]
        ``perm[i]`` = the channel of ``B`` matched to channel ``i`` of ``A``;
        :func:`permute_groups` ``(B, groups, perms)`` is ``B`` reordered to match ``A``.
    """
    from .matching import assignment, check_neuron, sq_dist

    roles = ("out", "in") if check_neuron(neuron) == "blc" else ("out",)
    owners = _owner_axes(groups)
    perms: dict[str, torch.Tensor] = {}
    Bp = B
    for sweep in range(max(1, int(max_sweeps))):
        changed = False
        for g in groups:
            parts = [p for p in g.parts if p.role in roles]
            if sweep == 0:
                ready = [
                    p
                    for p in parts
                    if all(
                        owners.get((p.name, ax)) in perms or (p.name, ax) not in owners
                        for ax in range(A[p.name].dim())
                        if ax != p.axis
                    )
                ]
                parts = ready or parts
            xa = torch.cat([g.neuron_rows(A[p.name].detach().cpu(), p) for p in parts], 1)
            xb = torch.cat([g.neuron_rows(Bp[p.name].detach().cpu(), p) for p in parts], 1)
            p_new = assignment(sq_dist(xa, xb), solver)
            if torch.equal(p_new, torch.arange(g.size)) and g.name in perms:
                continue
            changed = True
            Bp = permute_groups(Bp, groups, {g.name: p_new})
            old = perms.get(g.name, torch.arange(g.size))
            perms[g.name] = old[p_new]
        if not changed:
            break
    return perms


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
        x = torch.cat([a, b], p.axis).to(torch.float64).movedim(p.axis, 0)
        rest = x.shape[1:]
        x = x.reshape(2 * g.size, p.block, *rest).mean(0, keepdim=True)
        x = x.expand(g.size, *x.shape[1:]).reshape(g.size * p.block, *rest).movedim(0, p.axis)
        out[e.name] = x.to(a.dtype).contiguous()
    return Weights(out, A.layout)
