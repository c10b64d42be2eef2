"""The traced structure of a model: one ``torch.fx`` trace per model, shared by every method.

Connections need to know which tensor axes hold the same hidden unit (permutation groups),
which layers follow one another (weight adjustment's layers) and which nodes every path from
the input to the output goes through (weight adjustment's cuts in residual networks). All of
these are read from one ``torch.fx.symbolic_trace`` of the model, made once per model and
kept while the model lives (:func:`traced`). The kinds of modules and functions the readers
understand are named here once (:data:`ELEMENTWISE`, :data:`PASS_MODULES`,
:data:`PASS_FUNCTIONS`, :data:`BATCHNORMS`).

:func:`structure` reads the trace once more into a :class:`Structure` (cached like the
trace):

* :attr:`Structure.groups`, the permutation groups (:class:`Group` of :class:`Part`): which
  tensor axes share a channel. A hidden channel of a network (a *neuron* in the sense of
  Anokhin & Yarotsky, ICML 2020) is a filter or weight row with its bias, its BatchNorm
  channel and the matching input slices of every layer that reads it; permuting a group's
  channels consistently in all its parts leaves the function unchanged. The channel axis is
  followed through the graph:

  - ``Conv1d/2d/3d`` (no channel groups) and ``Linear`` read the channel space of their
    input (``weight`` axis 1) and open a new one (``weight`` axis 0, ``bias``);
  - ``BatchNorm1d/2d/3d`` join their space (``weight``, ``bias``, ``running_mean``,
    ``running_var``);
  - elementwise activations (a ``PReLU`` with one parameter included), pooling, dropout and
    identities pass the space through; so do scalar arithmetic and spatial means;
  - ``x + y`` (residual additions) merges the two spaces into one;
  - ``flatten`` turns ``C`` channels of ``H x W`` values into ``C`` blocks of ``H W``
    features of the next ``Linear`` (its ``weight`` axis 1 permutes in blocks);
  - the input and the output spaces are fixed: a group that reaches either is not permuted.

  - sequence models keep channels on the last axis (:class:`_Value` knows which axis):
    ``Embedding`` opens a space (``weight`` axis 1; its rows are tokens); ``LayerNorm`` and
    ``RMSNorm`` over the channels alone join the space (``weight``, ``bias``), as BatchNorm
    does; a tied output head (a ``Linear`` whose weight is the embedding's tensor) reads the
    space with that one tensor, listed once under its first name (``Weights`` keeps the
    alias tied);
  - ``MultiheadAttention`` (fused ``in_proj_weight``) reads its input's space and opens
    three groups: ``<name>.heads`` (whole heads: blocks of the head size of queries, keys,
    values and the output projection's inputs), ``<name>.qk`` (dimension ``i`` of the
    queries and keys of every head) and ``<name>.vo`` (dimension ``i`` of the values and the
    output projection's inputs); the three commute, so any order of matching composes.
    Parts inside a fused axis carry ``Part.offset``/``total``; inner dimensions
    ``Part.repeat``/``period``.

  Anything else (concatenation, grouped convolutions, normalisation over other axes, attention
  written out of matrix products, custom functions) raises :class:`UnsupportedModelError`
  naming the node it could not follow. Groups are named after the module that first writes
  them (``"features.0"``, ``"conv1"``), which for an MLP is the name of its hidden ``Linear``
  layer.
* Hugging Face's GPT-2 (``GPT2LMHeadModel``, ``GPT2Model``) cannot be traced by ``torch.fx``
  (transformers 5 has no fx tracer of its own), so :func:`_gpt2_read` reads the same groups
  from its module tree and config: the residual stream (``wte``/``wpe`` axis 1, every
  LayerNorm, the ``Conv1D`` layers' ``weight`` ``[in, out]`` axes, the tied ``lm_head``), per
  block the attention's three groups on the fused ``c_attn`` (queries, keys, values side by
  side on ``weight`` axis 1) and the MLP's hidden group. Its :attr:`Structure.graph` is None;
  everything else has the same API.
* :attr:`Structure.chain`, the MLP view: a :class:`Chain` of the ``Linear`` layers when the
  graph is a plain chain of an optional leading ``Flatten``, ``Linear`` layers and
  elementwise activations, else None (:attr:`Structure.chain_error` says why). It is read from
  the same trace; its hidden layers are the groups.

Each node is read by one small function chosen from a table: modules by their kind
(:data:`_MODULE_READERS`), functions by identity, methods by name. A new kind of layer is a
new reader, not another tracer.
"""

from __future__ import annotations

import operator
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from ..weights import Weights

__all__ = [
    "BATCHNORMS",
    "CONVOLUTIONS",
    "ELEMENTWISE",
    "PASS_FUNCTIONS",
    "PASS_MODULES",
    "Chain",
    "Group",
    "Part",
    "Structure",
    "UnsupportedModelError",
    "structure",
    "traced",
]


class UnsupportedModelError(ValueError):
    """The channel structure of a model cannot be followed."""


#: Modules that act elementwise and have no per-neuron parameters: they commute with a
#: permutation of the neurons.
ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
    nn.Dropout,
)
#: Modules that pass the channels of their input through unchanged (activations, pooling,
#: dropout, identities).
PASS_MODULES = (
    *ELEMENTWISE,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_F = torch.nn.functional
#: Functions that pass the channels of their first argument through.
PASS_FUNCTIONS = frozenset(
    {
        _F.relu,
        _F.relu6,
        _F.leaky_relu,
        _F.elu,
        _F.selu,
        _F.gelu,
        _F.silu,
        _F.mish,
        _F.tanh,
        _F.sigmoid,
        _F.hardtanh,
        _F.softplus,
        _F.dropout,
        _F.max_pool1d,
        _F.max_pool2d,
        _F.max_pool3d,
        _F.avg_pool1d,
        _F.avg_pool2d,
        _F.avg_pool3d,
        _F.adaptive_avg_pool1d,
        _F.adaptive_avg_pool2d,
        _F.adaptive_avg_pool3d,
        _F.adaptive_max_pool1d,
        _F.adaptive_max_pool2d,
        torch.relu,
        torch.tanh,
        torch.sigmoid,
    }
)

#: model -> (signature, GraphModule): one trace per model while it lives
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    """What a cached trace depends on: the modules' names and types and the tensors' shapes."""
    mods = tuple((n, type(m)) for n, m in model.named_modules())
    shapes = tuple((n, tuple(t.shape)) for n, t in model.state_dict().items())
    return mods, shapes


def traced(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, made once per model (again only when its modules
    or tensor shapes changed).

    Raises
    ------
    UnsupportedModelError
        ``torch.fx`` cannot trace the model (the message names why).
    """
    sig = _signature(model)
    hit = _TRACES.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "connections need a model whose channel flow can be traced"
        ) from e
    _TRACES[model] = (sig, gm)
    return gm


# ---------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class Part:
    """One tensor's share of a group: neuron ``i`` owns ``tensor.select(axis, .)`` at the
    indices ``offset + r * period + i * block + b`` of ``axis``, for ``r < repeat`` and
    ``b < block``.

    The plain part (``offset=0, repeat=1, total=0``) owns the whole of ``axis``, in blocks:
    a layer's rows (``block=1``) or a flattened channel's features (``block = H W``). A
    part of a fused axis names the axis length ``total`` and its ``offset`` in it (the key
    rows of a fused query|key|value projection of width ``d`` have ``offset = d`` and
    ``total = 3 d``); ``block`` = the head size makes whole attention
    heads the neurons; ``repeat`` = the number of heads with ``period`` = the head size
    makes dimension ``i`` of every head one neuron (the dimensions inside a head).

    ``role`` is ``"out"`` where the group's channels are written (a layer's output rows, its
    bias, BatchNorm parameters) and ``"in"`` where they are read (a later layer's input
    slices)."""

    name: str
    axis: int
    block: int = 1
    role: str = "out"
    offset: int = 0
    repeat: int = 1
    period: int = 0
    total: int = 0

    @property
    def plain(self) -> bool:
        """Whether the part is its whole axis, in consecutive blocks."""
        return self.offset == 0 and self.repeat == 1 and self.total == 0

    def span(self, size: int) -> int:
        """The length of ``axis`` the part needs for ``size`` neurons."""
        return self.offset + (self.repeat - 1) * self.period + size * self.block


@dataclass
class Group:
    """The tensors that must be permuted together: ``size`` channels, the ``parts``."""

    name: str
    size: int
    parts: list[Part] = field(default_factory=list)

    def positions(self, part: Part) -> torch.Tensor:
        """The indices along ``part.axis`` that channel ``i`` owns: ``LongTensor[size, repeat * block]``."""
        r = torch.arange(part.repeat)[None, :, None] * part.period
        i = torch.arange(self.size)[:, None, None] * part.block
        b = torch.arange(part.block)[None, None, :]
        return (part.offset + r + i + b).reshape(self.size, -1)

    def index(self, perm: torch.Tensor, part: Part, length: int | None = None) -> torch.Tensor:
        """Indices along ``part.axis`` (of ``length`` entries; needed unless the part is
        plain) that put old channel ``perm[i]`` in slot ``i``."""
        if part.plain:
            if part.block == 1:
                return perm
            return (perm[:, None] * part.block + torch.arange(part.block)).reshape(-1)
        length = length if length is not None else (part.total or None)
        if length is None:
            raise ValueError(f"part {part.name}[{part.axis}] starts at {part.offset}: index needs the axis length")
        pos = self.positions(part)
        idx = torch.arange(length)
        idx[pos.reshape(-1)] = pos[perm].reshape(-1)
        return idx

    def neuron_rows(self, tensor: torch.Tensor, part: Part) -> torch.Tensor:
        """``tensor``'s share of every channel: ``Tensor[size, d]``."""
        x = tensor.movedim(part.axis, 0)
        if part.plain:
            return x.reshape(self.size, -1)
        return x[self.positions(part).reshape(-1).to(x.device)].reshape(self.size, -1)

    def __repr__(self) -> str:
        def show(p: Part) -> str:
            s = f"{p.name}[{p.axis}]" + (f"x{p.block}" if p.block > 1 else "")
            s += f"@{p.offset}" if p.offset else ""
            return s + (f"*{p.repeat}/{p.period}" if p.repeat > 1 else "")

        return f"Group({self.name!r}, size={self.size}, parts=[{', '.join(show(p) for p in self.parts)}])"


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
    last: bool = False  # channels on the last axis (sequence models, [batch, seq, d]), not on axis 1
    pair: bool = False  # an attention module's (output, weights) tuple: item 0 holds the channels

    @property
    def axis(self) -> int:
        """The axis that holds the channels: 1 (convnets, ``[batch, C, ...]``) or -1 (sequences)."""
        return -1 if self.last else 1


_PASS_METHODS = {"relu", "tanh", "sigmoid", "contiguous", "clone", "float", "double", "to"}
_ADD = {operator.add, operator.iadd, torch.add}
_SCALE = {operator.mul, operator.truediv, operator.imul, operator.itruediv, torch.mul}
_SUPPORTED = (
    "Linear, Conv1d/2d/3d, BatchNorm, LayerNorm/RMSNorm over the last axis, Embedding, MultiheadAttention, "
    "elementwise activations, pooling, dropout, flatten and residual additions"
)


def _fail(node: torch.fx.Node, why: str) -> UnsupportedModelError:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return UnsupportedModelError(
        f"cannot follow channels through {node.op} '{target}' (node '{node.name}'): {why}; supported: {_SUPPORTED}"
    )


class _GroupReader:
    """Follows the channel spaces through a traced graph, one node at a time.

    Each node kind has its reader: :meth:`read_node` dispatches on ``node.op``, modules go
    through :data:`_MODULE_READERS` (first matching kind), functions and methods through
    their own tables. A reader stores the node's :class:`_Value` (None for non-tensors).
    """

    def __init__(
        self, gm: torch.fx.GraphModule, shapes: Mapping[str, tuple[int, ...]], aliases: Mapping[str, str] = {}
    ):
        self.modules = dict(gm.named_modules())
        self.shapes = shapes  # of the parameters and buffers of the model, by name
        self.aliases = aliases  # {alias of a tied tensor: its first name}
        self.owner: dict[tuple, int] = {}  # (tensor, axis, offset, repeat) -> the space it joined
        self.sp = _Spaces()
        self.values: dict[str, _Value | None] = {}

    # -- helpers
    def tensor_args(self, node: torch.fx.Node) -> list[_Value]:
        """The values of the node's tensor arguments (nested in lists and dicts), in order."""
        out: list[_Value] = []

        def visit(a) -> None:
            if isinstance(a, (list, tuple)):
                for b in a:
                    visit(b)
            elif isinstance(a, dict):
                for b in a.values():
                    visit(b)
            elif isinstance(a, torch.fx.Node) and self.values.get(a.name) is not None:
                out.append(self.values[a.name])

        visit(list(node.args) + list(node.kwargs.values()))
        return out

    def add_part(self, space: int, name: str, axis: int, block: int = 1, role: str = "out", **where) -> None:
        """Add ``Part(name, axis, block, role, **where)`` to ``space``; a tied tensor goes under its
        first name, and a tensor axis already in another space joins the two (a tied head)."""
        if name not in self.shapes:
            return
        part = Part(self.aliases.get(name, name), axis, block, role, **where)
        key = (part.name, axis, part.offset, part.repeat)
        if key in self.owner:
            space = self.sp.union(self.owner[key], space, f"tied tensor {name}")
        self.owner[key] = space
        self.sp.parts[self.sp.find(space)].append(part)

    def read_input(self, node: torch.fx.Node, layer: str, v: _Value, in_features: int) -> None:
        """``layer.weight`` axis 1 reads the channels of ``v``."""
        sp = self.sp
        s = sp.find(v.space)
        if sp.fixed[s] == "input":  # the input's channels are never permuted
            return
        block = 1
        if v.flat:
            n = sp.size[s]
            if n is None or in_features % n != 0:
                raise _fail(node, f"{in_features} input features are not whole blocks of {n} flattened channels")
            block = in_features // n
        elif sp.size[s] is not None and sp.size[s] != in_features:
            raise _fail(node, f"reads {in_features} channels from a tensor with {sp.size[s]}")
        self.add_part(s, f"{layer}.weight", 1, block, "in")

    def add(self, node: torch.fx.Node, args: list[_Value]) -> _Value | None:
        if len(args) != 2:
            return args[0] if args else None
        if args[0].flat != args[1].flat:
            raise _fail(node, "adds flattened and unflattened features")
        return _Value(
            self.sp.union(args[0].space, args[1].space, node.name), args[0].flat, args[0].last or args[1].last
        )

    def flatten(self, node: torch.fx.Node, args: list[_Value]) -> _Value:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1:
            raise _fail(node, f"flatten from dim {start}; expected 1")
        return _Value(args[0].space, flat=True)

    def spatial_reduce(self, node: torch.fx.Node, args: list[_Value]) -> _Value | None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if not args:
            return None
        if args[0].last and (not dims or -1 in dims):
            raise _fail(node, f"reduction over dims {dims}; channels on the last axis need it kept")
        if args[0].last:
            return args[0]
        if not dims or 1 in dims or (-1 in dims and args[0].flat):
            raise _fail(node, f"reduction over dims {dims}; only spatial dims (2, 3, ...) keep the channels")
        return args[0]

    # -- node readers
    def read_node(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            self.values[node.name] = _Value(self.sp.new(fixed="input"))
        elif node.op == "get_attr":
            self.values[node.name] = None
        elif node.op == "output":
            for v in self.tensor_args(node):
                self.sp.fixed[self.sp.find(v.space)] = "output"
        elif node.op == "call_module":
            mod = self.modules[node.target]
            reader = next((r for kinds, r in _MODULE_READERS if isinstance(mod, kinds)), None)
            if reader is None or (isinstance(mod, nn.PReLU) and mod.num_parameters != 1):
                raise _fail(node, f"module {type(mod).__name__}")
            self.values[node.name] = reader(self, node, mod, self.tensor_args(node))
        elif node.op == "call_function":
            self.values[node.name] = self.read_function(node, self.tensor_args(node))
        elif node.op == "call_method":
            self.values[node.name] = self.read_method(node, self.tensor_args(node))
        else:  # pragma: no cover - fx has no other node kinds
            raise _fail(node, "node kind")

    def read_layer(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        """``Linear`` and ``Conv``: read the input's space, open the output's."""
        if isinstance(mod, CONVOLUTIONS) and mod.groups != 1:
            raise _fail(node, f"grouped convolution (groups={mod.groups})")
        if len(args) != 1:
            raise _fail(node, "expected one tensor input")
        v = args[0]
        if isinstance(mod, CONVOLUTIONS) and (v.flat or v.last):
            raise _fail(node, "convolution of flattened features or of channels on the last axis")
        self.read_input(node, node.target, v, mod.weight.shape[1])
        out = self.sp.new(size=mod.weight.shape[0], name=node.target)
        self.add_part(out, f"{node.target}.weight", 0)
        self.add_part(out, f"{node.target}.bias", 0)
        return _Value(out, last=isinstance(mod, nn.Linear))

    def read_batchnorm(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        """BatchNorm joins its input's space with its four per-channel tensors."""
        v = args[0]
        if v.flat:
            raise _fail(node, "batch norm of flattened features")
        s = self.sp.find(v.space)
        if self.sp.size[s] is None:
            self.sp.size[s] = mod.num_features
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            self.add_part(s, f"{node.target}.{suffix}", 0)
        return _Value(s, last=v.last)

    def read_layernorm(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        """LayerNorm and RMSNorm over the channel axis alone join its space (``weight``, ``bias``)."""
        v = args[0]
        shape = tuple(mod.normalized_shape)
        s = self.sp.find(v.space)
        if v.flat or not v.last or len(shape) != 1:
            raise _fail(node, f"normalises over {shape}; expected the channels, on the last axis, alone")
        if self.sp.size[s] is not None and self.sp.size[s] != shape[0]:
            raise _fail(node, f"normalises {shape[0]} features of a tensor with {self.sp.size[s]} channels")
        self.sp.size[s] = shape[0]
        self.add_part(s, f"{node.target}.weight", 0)
        self.add_part(s, f"{node.target}.bias", 0)
        return _Value(s, last=True)

    def read_embedding(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        """An embedding opens a space of its vectors (``weight`` axis 1; its rows are tokens)."""
        out = self.sp.new(size=mod.weight.shape[1], name=node.target)
        self.add_part(out, f"{node.target}.weight", 1)
        return _Value(out, last=True)

    def read_attention(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        """``nn.MultiheadAttention``: query, key and value read one space (``in_proj_weight``
        axis 1); heads, the query/key dimensions and the value/output dimensions inside a head
        are three groups (see :func:`_attention_groups`); the output opens a space."""
        if not mod._qkv_same_embed_dim or mod.bias_k is not None:
            raise _fail(node, "attention with separate key/value sizes or bias_k/bias_v")
        qkv = [
            node.args[i] if i < len(node.args) else node.kwargs.get(k) for i, k in enumerate(("query", "key", "value"))
        ]
        vals = [self.values.get(a.name) if isinstance(a, torch.fx.Node) else None for a in qkv]
        if any(v is None or v.flat or not v.last for v in vals):
            raise _fail(node, "attention inputs should be tensors with channels on the last axis")
        s = vals[0].space
        for v in vals[1:]:
            s = self.sp.union(s, v.space, node.name)
        self.read_input(node, node.target, _Value(s, last=True), mod.embed_dim)
        self.add_part(s, f"{node.target}.in_proj_weight", 1, role="in")
        p = node.target
        fused = (f"{p}.in_proj_weight", 0, f"{p}.in_proj_bias")
        for name, size, parts in _attention_groups(p, mod.num_heads, mod.head_dim, fused, (f"{p}.out_proj.weight", 1)):
            g = self.sp.new(size=size, name=name)
            for q in parts:
                where = {"offset": q.offset, "repeat": q.repeat, "period": q.period, "total": q.total}
                self.add_part(g, q.name, q.axis, q.block, q.role, **where)
        out = self.sp.new(size=mod.embed_dim, name=f"{p}.out_proj")
        self.add_part(out, f"{p}.out_proj.weight", 0)
        self.add_part(out, f"{p}.out_proj.bias", 0)
        return _Value(out, last=True, pair=True)

    def read_flatten(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value:
        v = args[0]
        if self.sp.fixed[self.sp.find(v.space)] == "input":  # the input's layout is never permuted
            return _Value(v.space, flat=True)
        if mod.start_dim != 1 or mod.end_dim != -1:
            raise _fail(node, f"flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim}); expected 1, -1")
        return _Value(v.space, flat=True)

    def read_pass(self, node: torch.fx.Node, mod: nn.Module, args: list[_Value]) -> _Value | None:
        return args[0] if args else None

    def read_function(self, node: torch.fx.Node, args: list[_Value]) -> _Value | None:
        fn = node.target
        if args and args[0].pair:  # item 0 of an attention's (output, weights)
            if fn is operator.getitem and node.args[1] == 0:
                return _Value(args[0].space, last=True)
            if fn is operator.getitem:
                return None
            raise _fail(node, "use of an attention's (output, weights) pair other than [0]")
        if fn is getattr:  # x.shape, x.dtype, x.device
            return None
        if fn in _ADD:
            return self.add(node, args)
        if fn in _SCALE or fn in PASS_FUNCTIONS or fn is operator.neg:
            if fn in _SCALE and len(args) > 1:
                raise _fail(node, "multiplies two tensors")
            return args[0] if args else None
        if fn is torch.flatten:
            return self.flatten(node, args)
        if fn is torch.mean or fn is torch.amax:
            return self.spatial_reduce(node, args)
        if not args:  # getattr, getitem and arithmetic on sizes
            return None
        raise _fail(node, "function")

    def read_method(self, node: torch.fx.Node, args: list[_Value]) -> _Value | None:
        m = node.target
        if m in ("size", "dim"):
            return None
        if m in _PASS_METHODS or m in ("mul", "div", "__mul__"):
            if m in ("mul", "div") and len(args) > 1:
                raise _fail(node, "multiplies two tensors")
            return args[0]
        if m in ("add", "add_", "__add__"):
            return self.add(node, args) if len(args) == 2 else args[0]
        if m == "flatten":
            return self.flatten(node, args)
        if m in ("view", "reshape"):
            shape = node.args[1:]
            if len(shape) == 2 and shape[-1] == -1:
                return _Value(args[0].space, flat=True)
            raise _fail(node, f"{m} to {shape}; only x.{m}(batch, -1) is understood")
        if m in ("mean", "amax"):
            return self.spatial_reduce(node, args)
        raise _fail(node, "method")

    def groups(self) -> list[Group]:
        """The permutable spaces as groups, in forward order."""
        sp = self.sp
        groups: OrderedDict[int, Group] = OrderedDict()
        for s in range(len(sp.parent)):
            r = sp.find(s)
            if r in groups or sp.fixed[r] or not sp.parts[r] or sp.size[r] is None:
                continue
            if not any(p.role == "out" and p.name.endswith("weight") for p in sp.parts[r]):
                continue
            groups[r] = Group(sp.name[r] or f"group{len(groups)}", int(sp.size[r]), _ordered(sp.parts[r]))
        return list(groups.values())

    def node_groups(self, groups: list[Group]) -> dict[str, tuple[str, int]]:
        """``{fx node name: (group name, axis)}`` of every node whose value holds a group's
        channels on ``axis`` (1, or -1 for sequences; not flattened): the activations a
        group's channels take."""
        sp, names = self.sp, {g.name for g in groups}
        out = {}
        for node, v in self.values.items():
            if v is None or v.flat or v.pair:
                continue
            r = sp.find(v.space)
            name = sp.name[r]
            if name in names and not sp.fixed[r]:
                out[node] = (name, v.axis)
        return out


#: Module readers, first matching kind wins: a new kind of layer is a new entry.
_MODULE_READERS: tuple[tuple[tuple[type, ...], Callable], ...] = (
    ((nn.Linear, *CONVOLUTIONS), _GroupReader.read_layer),
    (BATCHNORMS, _GroupReader.read_batchnorm),
    ((nn.LayerNorm, nn.RMSNorm), _GroupReader.read_layernorm),
    ((nn.Embedding,), _GroupReader.read_embedding),
    ((nn.MultiheadAttention,), _GroupReader.read_attention),
    ((nn.Flatten,), _GroupReader.read_flatten),
    ((*PASS_MODULES, nn.PReLU), _GroupReader.read_pass),  # a PReLU only with one parameter
)


def _attention_groups(
    prefix: str, heads: int, d: int, fused: tuple[str, int, str], out: tuple[str, int]
) -> list[tuple[str, int, list[Part]]]:
    """The three groups of a multi-head attention whose query, key and value projections are
    one fused tensor (``fused = (weight, its output axis, bias)``: queries, keys and values
    side by side on that axis, ``heads * d`` each) read by the output projection
    (``out = (weight, its input axis)``): ``(name, size, parts)`` of

    * ``{prefix}.heads``: whole heads (blocks of ``d`` queries, keys, values and the output
      projection's inputs);
    * ``{prefix}.qk``: dimension ``i`` of the queries and keys of every head;
    * ``{prefix}.vo``: dimension ``i`` of the values and the output projection's inputs of
      every head.

    The three permutations commute (a head order and one order of the dimensions shared by
    all heads act on different coordinates of the ``[heads, d]`` grid), so a matcher can
    take them in any order, like any other groups. (Independent orders of the dimensions of
    each head would not commute with the head order.)
    """
    weight, axis, bias = fused
    n = heads * d
    head_parts, qk, vo = [], [], []
    for name, ax in ((weight, axis), (bias, 0)):
        for j in range(3):
            head_parts.append(Part(name, ax, d, "out", offset=j * n, total=3 * n))
            inner = Part(name, ax, 1, "out", offset=j * n, repeat=heads, period=d, total=3 * n)
            (qk if j < 2 else vo).append(inner)
    head_parts.append(Part(out[0], out[1], d, "in"))
    vo.append(Part(out[0], out[1], 1, "in", repeat=heads, period=d))
    return [(f"{prefix}.heads", heads, head_parts), (f"{prefix}.qk", d, qk), (f"{prefix}.vo", d, vo)]


def _ordered(parts: list[Part]) -> list[Part]:
    """Out parts first (in forward order), then in parts; duplicates dropped."""
    seen, out = set(), []
    for role in ("out", "in"):
        for p in parts:
            key = (p.name, p.axis, p.offset, p.repeat)
            if p.role == role and key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _read_groups(gm: torch.fx.GraphModule, shapes: Mapping[str, tuple[int, ...]]) -> list[Group]:
    """The permutation groups of a traced model (see the module docs); ``shapes`` are the
    model's parameters' and buffers' shapes by name."""
    return _read(gm, shapes)[0]


def _read(
    gm: torch.fx.GraphModule, shapes: Mapping[str, tuple[int, ...]], aliases: Mapping[str, str] = {}
) -> tuple[list[Group], dict[str, tuple[str, int]]]:
    """The groups (see :func:`_read_groups`) and the nodes whose values carry each group's
    channels (see :meth:`_GroupReader.node_groups`); ``aliases`` maps the later names of
    tied tensors to their first."""
    reader = _GroupReader(gm, shapes, aliases)
    for node in gm.graph.nodes:
        reader.read_node(node)
    groups = reader.groups()
    _check_spans(groups, shapes)
    return groups, reader.node_groups(groups)


def _check_spans(groups: list[Group], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise unless every part fits its tensor's axis."""
    for g in groups:
        for p in g.parts:
            n = shapes[p.name][p.axis]
            if (n != g.size * p.block) if p.plain else (n < p.span(g.size) or n != (p.total or n)):
                raise UnsupportedModelError(
                    f"group '{g.name}': {p.name} has {n} entries on axis {p.axis}, expected {g.size} x {p.block}"
                )


# ---------------------------------------------------------------------------- the MLP view
_EXPECTED = "expected a plain chain of an optional leading Flatten, Linear layers and elementwise activations"


class Chain:
    """The MLP view of a model: its ``Linear`` layers in order, with their sizes.

    Parameters
    ----------
    modules : sequence of (str, nn.Module)
        Every module of the chain by name, input to output: the optional ``Flatten``, the
        ``Linear`` layers and the activations between them.

    Attributes
    ----------
    modules : list of (str, nn.Module)
        As given.
    names : list of str
        The ``Linear`` layers' names.
    sizes : dict of str to (int, int)
        ``(out_features, in_features)`` of each ``Linear`` layer.
    """

    def __init__(self, modules):
        self.modules: list[tuple[str, nn.Module]] = list(modules)
        layers = [(n, m) for n, m in self.modules if isinstance(m, nn.Linear)]
        self.names: list[str] = [n for n, _ in layers]
        self.sizes: dict[str, tuple[int, int]] = {n: (m.out_features, m.in_features) for n, m in layers}

    @property
    def hidden(self) -> list[str]:
        """The layers whose outputs are hidden neurons (all but the last)."""
        return self.names[:-1]

    def next(self, layer: str) -> str:
        """The layer after ``layer``."""
        return self.names[self.names.index(layer) + 1]

    def check_layer(self, layer: str) -> None:
        """Raise ValueError unless ``layer`` is a hidden layer."""
        if layer not in self.hidden:
            raise ValueError(
                f"layer {layer!r} is not a hidden layer of this model; expected one of {self.hidden} "
                f"(Linear layers followed by another Linear)"
            )

    def check_weights(self, weights, what: str = "weights") -> None:
        """Raise unless ``weights`` (a :class:`~landscape.weights.Weights`) holds every
        layer's weight with the model's shape."""
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

    def __repr__(self) -> str:
        return f"Chain({self.names})"


def _read_chain(gm: torch.fx.GraphModule, kind: str) -> Chain:
    """The :class:`Chain` of a traced model, or ValueError naming the first node outside one."""
    modules = dict(gm.named_modules())
    linears: list[tuple[str, nn.Linear]] = []
    chain: list[tuple[str, nn.Module]] = []
    prev = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ValueError(f"model is a {kind} with more than one input; {_EXPECTED}")
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise ValueError(f"model is a {kind} whose output is not its last module; {_EXPECTED}")
            break
        if node.op != "call_module":
            target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
            raise ValueError(
                f"model is a {kind} whose forward has {node.op} '{target}' (node '{node.name}'); {_EXPECTED}"
            )
        name, mod = node.target, modules[node.target]
        if node.args != (prev,) or node.kwargs:
            raise ValueError(f"module '{name}' does not take the previous module's output alone; {_EXPECTED}")
        if isinstance(mod, nn.Linear):
            if linears and linears[-1][1].out_features != mod.in_features:
                raise ValueError(
                    f"Linear '{name}' takes {mod.in_features} inputs but the Linear '{linears[-1][0]}' "
                    f"before it gives {linears[-1][1].out_features}"
                )
            linears.append((name, mod))
        elif not (
            (isinstance(mod, nn.Flatten) and not chain)
            or isinstance(mod, ELEMENTWISE)
            or (isinstance(mod, nn.PReLU) and mod.num_parameters == 1)
        ):
            where = " after the first module" if isinstance(mod, nn.Flatten) else ""
            raise ValueError(f"module '{name}' is a {type(mod).__name__}{where}; {_EXPECTED}")
        prev = node
        chain.append((name, mod))
    if not linears:
        raise ValueError(f"model has no Linear layer; {_EXPECTED}")
    return Chain(chain)


# ---------------------------------------------------------------------------- GPT-2's module tree
_GPT2 = ("GPT2LMHeadModel", "GPT2Model")


def _is_gpt2(model: nn.Module) -> bool:
    """Whether ``model`` is Hugging Face's GPT-2 (which ``torch.fx`` cannot trace)."""
    cls = type(model)
    return cls.__name__ in _GPT2 and cls.__module__.startswith("transformers.")


def _gpt2_read(model: nn.Module, aliases: Mapping[str, str]) -> tuple[list[Group], dict[str, tuple[str, int]]]:
    """The groups of a Hugging Face GPT-2 read from its module tree and config (see the
    module docs), and ``{module name: (group name, -1)}`` of the modules whose outputs hold
    a group's channels (on the last axis)."""
    cfg = model.config
    p = "transformer." if hasattr(model, "transformer") else ""
    if getattr(cfg, "add_cross_attention", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} with cross-attention; expected GPT-2 blocks of self-attention"
        )
    mods = dict(model.named_modules())
    d_model, heads = cfg.n_embd, cfg.n_head
    stream = Group(f"{p}wte", d_model, [Part(f"{p}wte.weight", 1), Part(f"{p}wpe.weight", 1)])
    groups, acts = [stream], {f"{p}wte": (stream.name, -1), f"{p}wpe": (stream.name, -1)}

    def norm(name: str) -> None:
        stream.parts += [Part(f"{name}.weight", 0), Part(f"{name}.bias", 0)]
        acts[name] = (stream.name, -1)

    for i in range(cfg.n_layer):
        b = f"{p}h.{i}"
        norm(f"{b}.ln_1")
        stream.parts += [Part(f"{b}.attn.c_attn.weight", 0, role="in")]
        fused = (f"{b}.attn.c_attn.weight", 1, f"{b}.attn.c_attn.bias")
        for name, size, parts in _attention_groups(
            f"{b}.attn", heads, d_model // heads, fused, (f"{b}.attn.c_proj.weight", 0)
        ):
            groups.append(Group(name, size, parts))
        stream.parts += [Part(f"{b}.attn.c_proj.weight", 1), Part(f"{b}.attn.c_proj.bias", 0)]
        acts[f"{b}.attn.c_proj"] = (stream.name, -1)
        norm(f"{b}.ln_2")
        stream.parts.append(Part(f"{b}.mlp.c_fc.weight", 0, role="in"))
        mlp = Group(f"{b}.mlp.c_fc", mods[f"{b}.mlp.c_fc"].nf)
        mlp.parts += [
            Part(f"{b}.mlp.c_fc.weight", 1),
            Part(f"{b}.mlp.c_fc.bias", 0),
            Part(f"{b}.mlp.c_proj.weight", 0, role="in"),
        ]
        groups.append(mlp)
        acts.update(
            {f"{b}.mlp.c_fc": (mlp.name, -1), f"{b}.mlp.act": (mlp.name, -1), f"{b}.mlp.c_proj": (stream.name, -1)}
        )
        stream.parts += [Part(f"{b}.mlp.c_proj.weight", 1), Part(f"{b}.mlp.c_proj.bias", 0)]
    norm(f"{p}ln_f")
    if "lm_head" in mods:
        stream.parts.append(Part(aliases.get("lm_head.weight", "lm_head.weight"), 1, role="in"))
    for g in groups:
        g.parts = _ordered(g.parts)
    return groups, acts


# ---------------------------------------------------------------------------- the structure
class Structure:
    """What connections read from a model's trace: its permutation groups and MLP view.

    Made by :func:`structure` (once per model). The groups are read on first use, so a model
    whose chain is known but whose channels cannot be followed still has a :attr:`chain`.

    Attributes
    ----------
    graph : torch.fx.GraphModule or None
        The model's trace (:func:`traced`); None for a Hugging Face GPT-2, whose structure is
        read from its module tree (see the module docs).
    chain : Chain or None
        The MLP view, or None when the graph is not a plain chain of ``Linear`` layers and
        elementwise activations.
    chain_error : str or None
        Why :attr:`chain` is None (the first module outside such a chain).
    """

    def __init__(self, model: nn.Module):
        sd = model.state_dict(keep_vars=True)
        named = [*sd.items(), *model.named_parameters(), *model.named_buffers()]
        self._shapes = {k: tuple(v.shape) for k, v in named}  # the model's tensors (not kept alive)
        first: dict[int, str] = {}
        self._aliases = {k: first.setdefault(id(v), k) for k, v in sd.items() if first.setdefault(id(v), k) != k}
        self._signature = _signature(model)
        self._groups: list[Group] | None = None
        self._node_groups: dict[str, tuple[str, int]] = {}
        self._module_groups: dict[str, tuple[str, int]] | None = None
        if _is_gpt2(model):  # torch.fx cannot trace it: its module tree instead
            self.graph: torch.fx.GraphModule | None = None
            self.chain: Chain | None = None
            self.chain_error: str | None = f"model is a {type(model).__name__} (a transformer); {_EXPECTED}"
            self._groups, self._module_groups = _gpt2_read(model, self._aliases)
            _check_spans(self._groups, self._shapes)
            return
        self.graph = traced(model)
        try:
            self.chain = _read_chain(self.graph, type(model).__name__)
            self.chain_error = None
        except ValueError as e:
            self.chain, self.chain_error = None, str(e)

    @property
    def groups(self) -> list[Group]:
        """The permutation groups, in forward order (see the module docs).

        Raises
        ------
        UnsupportedModelError
            A node whose channel flow cannot be followed (named in the message).
        """
        if self._groups is None:
            self._groups, self._node_groups = _read(self.graph, self._shapes, self._aliases)
        return self._groups

    @property
    def activation_modules(self) -> dict[str, tuple[str, int]]:
        """``{module name: (group name, axis)}``: the modules whose outputs hold a group's
        channels on ``axis``, for forward hooks; the same for traced models and for GPT-2.

        Examples
        --------
        >>> import landscape as ls
        >>> structure(ls.build_model("mlp", {"widths": [8]})).activation_modules
        {'1': ('1', -1), '2': ('1', -1)}
        """
        if self._module_groups is None:
            self.groups  # noqa: B018 - read on first use
            targets = {n.name: n.target for n in self.graph.graph.nodes if n.op == "call_module"}
            self._module_groups = {targets[k]: v for k, v in self._node_groups.items() if k in targets}
        return self._module_groups

    def require_chain(self) -> Chain:
        """:attr:`chain`, or ValueError saying why the model is not a plain MLP chain."""
        if self.chain is None:
            raise ValueError(self.chain_error)
        return self.chain

    def group(self, name: str) -> Group:
        """The group called ``name`` (for an MLP: a hidden layer), or ValueError."""
        for g in self.groups:
            if g.name == name:
                return g
        names = [g.name for g in self.groups]
        raise ValueError(
            f"layer {name!r} is not a hidden layer of this model; expected one of its permutation groups {names}"
        )

    def check_weights(self, weights, what: str = "weights") -> None:
        """Raise unless ``weights`` hold every tensor of the model's structure with its shape
        (for an MLP: every Linear layer's weight, see :meth:`Chain.check_weights`)."""
        if self.chain is not None:
            self.chain.check_weights(weights, what)
            return
        if not isinstance(weights, Weights):
            raise TypeError(f"{what} should be a landscape Weights, got {type(weights).__name__}")
        for g in self.groups:
            for p in g.parts:
                if p.name not in weights.layout:
                    raise ValueError(f"{what} have no entry '{p.name}' of the model's group '{g.name}'")
                shape, want = tuple(weights[p.name].shape), self._shapes[p.name]
                if shape != want:
                    raise ValueError(f"{what} entry '{p.name}' has shape {shape}; the model's tensor has {want}")


#: model -> Structure, valid while the model's trace is
_STRUCTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def structure(model: nn.Module) -> Structure:
    """The :class:`Structure` of ``model``, made once per trace of it (see :func:`traced`).

    Raises
    ------
    UnsupportedModelError
        ``torch.fx`` cannot trace the model.

    Examples
    --------
    >>> import landscape as ls
    >>> s = structure(ls.build_model("mlp", {"widths": [32, 16]}))
    >>> s.chain.names, [g.name for g in s.groups]
    (['1', '3', '5'], ['1', '3'])
    >>> s = structure(ls.build_model("small_cnn", {"width": 4}))
    >>> s.chain is None, s.chain_error.split(";")[0]
    (True, "module '0' is a Conv2d")
    >>> g = s.groups[0]
    >>> g.name, g.size, [p.name for p in g.parts]
    ('0', 4, ['0.weight', '1.weight', '1.bias', '1.running_mean', '1.running_var', '3.weight'])
    """
    hit = _STRUCTURES.get(model)
    if _is_gpt2(model):
        if hit is not None and hit._signature == _signature(model):
            return hit
    else:
        gm = traced(model)
        if hit is not None and hit.graph is gm:
            return hit
    s = Structure(model)
    _STRUCTURES[model] = s
    return s
