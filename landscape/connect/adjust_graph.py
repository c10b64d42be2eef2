"""Weight adjustment (WA) for residual networks: transitional networks at the graph's cuts.

The transitional network :math:`\\Theta_k^{AB}` of Anokhin & Yarotsky (ICML 2020) runs ``B``
up to layer ``k``, maps ``B``'s features onto ``A``'s output of layer ``k`` by a
least-squares layer, and runs ``A`` from there. In a residual network a single layer cannot
hand over: the identity shortcut carries ``B``'s stream past it. What can hand over is a
**cut** of the graph, a node that every path from the input to the output goes through
(a block's residual sum, the stem's BatchNorm, the logits), together with all the layers
whose outputs reach that node through nothing but BatchNorm and additions (its *writers*:
the block's last convolution and its shortcut convolution). The value at the cut is linear
in the writers' weights,

.. math::

    u = \\sum_j \\mathrm{BN}_j\\bigl(W_j * h_j\\bigr) + r,

with :math:`h_j` the writers' inputs and :math:`r` what is added without a writer (the
identity shortcut). With BatchNorm normalising by the statistics of the batch it is given
(as ``bn="recompute"`` evaluation does), each :math:`\\mathrm{BN}_j` is made the identity on
the fitted outputs (weight :math:`\\sqrt{\\sigma_j^2 + \\epsilon}`, bias :math:`\\mu_j`, running
statistics :math:`\\mu_j, \\sigma_j^2`), and the writers are fitted jointly by least squares over
patches, one shared intercept:

.. math::

    [W_1 | W_2 | \\dots | b]^\\top = \\bigl[P(h_1) \\,|\\, P(h_2) \\,|\\, \\dots \\,|\\,
    \\mathbf 1\\bigr]^+ (u^\\star - r).

Cuts are numbered ``1..m`` from the input; the writers of cut 1 read the input itself. The
transitional network :math:`\\Theta_k` (``k = 2..m``) has ``B``'s modules before cut ``k``,
cut ``k``'s writers fitted to ``A``'s value at cut ``k`` from ``B``'s features, and ``A``'s
modules after it; :math:`\\Theta_1 = A`, :math:`\\Theta_{m+1} = B`. Step ``k < m`` of the path
goes from :math:`\\Theta_k` to :math:`\\Theta_{k+1}`: every entry that differs, except cut
``k+1``'s writers, follows the base connection (Linear or Arc), and cut ``k+1``'s writers are
fitted at every ``t`` to :math:`(1-t)\\,u_{\\Theta_k} + t\\,u_{\\Theta_{k+1}}` (both close to
``A``'s value there). The last step (only the logits' writers change, on fixed features) is
the straight line. For a sequential network the cuts are its layers' outputs and this is the
construction of :mod:`landscape.connect.adjust`.

OT + WA matches ``B``'s channels to ``A``'s first (every residual stream permuted as a whole,
:func:`~landscape.connect.ot_path`), runs the steps from ``A`` to the matched ``B'`` with
Linear as the base, and ends with OT's stage 2 (``B'`` to ``B`` by swaps of two channels).

Supported: ``Conv2d`` (numeric padding, zero padding mode, no channel groups) and ``Linear``
layers, affine BatchNorm, parameter-free activations, pooling, flatten and additions, each
module called once; ``torch.fx`` must trace the model. Anything else raises
:class:`~landscape.connect.graph.UnsupportedModelError` naming the node.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn

from ..pointset import PointSet
from ..weights import Weights
from .lstsq import assemble, weight_adjustment
from .matching import match_neurons, transposition_path
from .neurons import permute
from .paths import arc_path, as_t, concatenate_paths, linear_path, same_layout
from .result import Path
from .structure import BATCHNORMS, UnsupportedModelError, traced

__all__ = ["Cut", "residual_transitional_network", "residual_wa_path", "steps_path", "wa_cuts"]

_ADD = (operator.add, operator.iadd, torch.add)
_WEIGHTED = (nn.Conv2d, nn.Linear)


@dataclass
class Cut:
    """A node every input-output path goes through, and the layers that write to it.

    Attributes
    ----------
    node : str
        The fx node whose value is fitted (a residual sum, a BatchNorm output, a layer output).
    writers : list of str
        Names of the Conv2d/Linear modules whose outputs reach ``node`` through BatchNorm and
        additions only.
    bn : dict of str to str or None
        The BatchNorm module right after each writer.
    inputs, ends : dict of str to str
        Each writer's input node and the node where its term enters the sum (its BatchNorm
        output, or its own output).
    modules : list of str
        Every module with entries between the previous cut and this one (writers included).
    """

    node: str
    writers: list[str]
    bn: dict[str, str | None]
    inputs: dict[str, str]
    ends: dict[str, str]
    modules: list[str] = field(default_factory=list)

    def writer_modules(self) -> list[str]:
        """The writers and their BatchNorms."""
        return self.writers + [b for b in self.bn.values() if b is not None]


def _is_add(node) -> bool:
    if node.op == "call_function" and node.target in _ADD:
        return len(node.args) == 2 and not node.kwargs
    return (
        node.op == "call_method"
        and node.target in ("add", "add_", "__add__")
        and len(node.args) == 2
        and not node.kwargs
    )


class _GraphNet:
    """The cuts of a traced network and a float64 evaluator that captures node values."""

    def __init__(self, model: nn.Module):
        gm = traced(model)  # shared: read here, copied (not changed) for the evaluator
        self.model = model
        mods = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        pos = {n: i for i, n in enumerate(nodes)}

        def fail(node, why: str) -> UnsupportedModelError:
            return UnsupportedModelError(
                f"weight adjustment of a residual network: node '{node.name}' ({node.op} {node.target}): {why}"
            )

        def is_int(n) -> bool:  # nodes that carry sizes, not tensors
            return (n.op == "call_method" and n.target == "size") or (
                n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] == "shape"
            )

        # a node is a cut when no tensor edge jumps over it
        span = np.zeros(len(nodes) + 1, np.int64)
        for b in nodes:
            if is_int(b):
                continue
            for a in b.all_input_nodes:
                if a.op == "get_attr" or is_int(a):
                    continue
                if pos[b] - pos[a] > 1:
                    span[pos[a] + 1] += 1
                    span[pos[b]] -= 1
        spanned = np.cumsum(span)[: len(nodes)] > 0

        seen: set[str] = set()
        writers = []
        for n in nodes:
            if n.op != "call_module":
                continue
            mod = mods[n.target]
            if n.target in seen and any(True for _ in mod.parameters(recurse=False)):
                raise fail(n, "the module is called more than once")
            seen.add(n.target)
            if isinstance(mod, _WEIGHTED):
                if isinstance(mod, nn.Conv2d):
                    if mod.groups != 1:
                        raise fail(n, "grouped convolution")
                    if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
                        raise fail(n, f"padding {mod.padding!r} ({mod.padding_mode}); WA needs numeric zero padding")
                writers.append(n)
            elif isinstance(mod, BATCHNORMS):
                pass
            elif any(True for _ in mod.parameters(recurse=False)):
                raise fail(n, f"module {type(mod).__name__} has parameters; WA handles Conv2d, Linear and BatchNorm")

        def tensor_users(n):
            return [u for u in n.users if not is_int(u)]

        cuts: dict = {}
        for w in writers:
            cur, bn = w, None
            users = tensor_users(cur)
            if len(users) == 1 and users[0].op == "call_module" and isinstance(mods[users[0].target], BATCHNORMS):
                bn = users[0]
                cur = bn
            while True:
                users = tensor_users(cur)
                if len(users) == 1 and _is_add(users[0]):
                    cur = users[0]
                else:
                    break
            if spanned[pos[cur]]:
                continue  # not a cut: a layer inside a block
            c = cuts.setdefault(cur, Cut(node=cur.name, writers=[], bn={}, inputs={}, ends={}))
            if bn is not None and not mods[bn.target].affine:
                raise fail(bn, "BatchNorm without affine parameters after a layer that WA fits")
            c.writers.append(w.target)
            c.bn[w.target] = None if bn is None else bn.target
            c.ends[w.target] = (bn or w).name
            x = w.args[0]
            if not isinstance(x, torch.fx.Node):
                raise fail(w, "its input is not a tensor of the graph")
            c.inputs[w.target] = x.name
        order = sorted(cuts, key=lambda n: pos[n])
        if len(order) < 2:
            raise UnsupportedModelError(
                f"weight adjustment needs at least two cuts (points every path goes through) after a "
                f"Conv2d/Linear layer; {type(model).__name__} has {len(order)}"
            )
        self.cuts: list[Cut] = [cuts[n] for n in order]
        # every module with entries belongs to the segment that ends at the first cut at or after it
        bounds = [pos[n] for n in order]
        for n in nodes:
            if n.op != "call_module":
                continue
            mod = mods[n.target]
            if not any(True for _ in mod.parameters(recurse=False)) and not any(
                True for _ in mod.buffers(recurse=False)
            ):
                continue
            k = int(np.searchsorted(bounds, pos[n], side="left"))
            if k >= len(bounds):
                raise fail(n, "a module with parameters after the last Conv2d/Linear layer")
            self.cuts[k].modules.append(n.target)
        for c in self.cuts:
            if len({self._rows_shape(mods[w]) for w in c.writers}) > 1:
                raise UnsupportedModelError(f"cut '{c.node}': its writers mix Linear and Conv2d layers")
        self.mods = mods
        # the evaluator: float64, BatchNorm on batch statistics (momentum 0 keeps the buffers)
        self.gm = copy.deepcopy(gm).to(torch.float64).eval()
        for m in self.gm.modules():
            if isinstance(m, BATCHNORMS):
                m.train()
                m.momentum = 0.0

    @staticmethod
    def _rows_shape(mod: nn.Module) -> str:
        return "conv" if isinstance(mod, nn.Conv2d) else "linear"

    # ------------------------------------------------------------------ entries
    def entries(self, modules, layout) -> list[str]:
        prefixes = tuple(f"{m}." for m in modules)
        return [e.name for e in layout if e.name.startswith(prefixes)]

    def check_weights(self, w: Weights, what: str) -> None:
        if not isinstance(w, Weights):
            raise TypeError(f"{what} should be a landscape Weights, got {type(w).__name__}")
        for c in self.cuts:
            for name in c.writers:
                key, mod = f"{name}.weight", self.mods[name]
                if key not in w.layout or tuple(w[key].shape) != tuple(mod.weight.shape):
                    raise ValueError(f"{what} entry '{key}' is missing or has another shape than the model's layer")

    # ------------------------------------------------------------------ evaluation
    def run(self, w: Weights, x: torch.Tensor, want: set[str]) -> dict[str, torch.Tensor]:
        """Values of the nodes ``want`` on the batch ``x`` with the weights ``w`` (float64)."""
        self.gm.load_state_dict(dict(w.tensors), strict=False)
        got: dict[str, torch.Tensor] = {}

        class Done(Exception):
            pass

        class Capture(torch.fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if n.name in want:
                    got[n.name] = out
                    if len(got) == len(want):  # nothing later is needed
                        raise Done
                return out

        with torch.no_grad():
            try:
                Capture(self.gm).run(x)
            except Done:
                pass
        missing = set(want) - set(got)
        if missing:
            raise ValueError(f"nodes {sorted(missing)} are not in the traced graph")
        return got

    def want(self, cut: Cut) -> set[str]:
        return {cut.node, *cut.inputs.values(), *cut.ends.values()}

    def design(self, name: str, h: torch.Tensor) -> torch.Tensor:
        mod = self.mods[name]
        if isinstance(mod, nn.Conv2d):
            cols = torch.nn.functional.unfold(h, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
            return cols.transpose(1, 2).reshape(-1, cols.shape[1])
        if h.dim() != 2:
            raise UnsupportedModelError(
                f"layer '{name}': WA needs a [N, d] input to a Linear layer, got {list(h.shape)}"
            )
        return h

    @staticmethod
    def rows(z: torch.Tensor) -> torch.Tensor:
        return z if z.dim() == 2 else z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1])

    def fit(self, cut: Cut, caps: dict, target: torch.Tensor, like: Weights, ridge: float) -> dict[str, torch.Tensor]:
        """Entries of the cut's writers (and their BatchNorms) whose sum at the cut is ``target``
        on the captured inputs, by least squares."""
        D = [self.design(w, caps[cut.inputs[w]]) for w in cut.writers]
        offset = caps[cut.node] - sum(caps[cut.ends[w]] for w in cut.writers)
        Y = self.rows(target - offset)
        carrier = next((w for w in cut.writers if cut.bn[w] is not None), None)
        if carrier is None:
            carrier = next((w for w in cut.writers if f"{w}.bias" in like.layout), None)
        W, b = weight_adjustment(torch.cat(D, 1), Y, bias=carrier is not None, ridge=ridge)
        upd: dict[str, torch.Tensor] = {}
        lo = 0
        for w, d in zip(cut.writers, D):
            Wj = W[:, lo : lo + d.shape[1]]
            lo += d.shape[1]
            upd[f"{w}.weight"] = Wj.reshape(self.mods[w].weight.shape)
            bn = cut.bn[w]
            own = b if w == carrier else None
            if f"{w}.bias" in like.layout:
                upd[f"{w}.bias"] = own if (own is not None and bn is None) else torch.zeros(Wj.shape[0], dtype=W.dtype)
            if bn is not None:
                o = d @ Wj.T
                mu, var = o.mean(0), o.var(0, unbiased=False)
                eps = self.mods[bn].eps
                upd[f"{bn}.weight"] = torch.sqrt(var + eps)
                upd[f"{bn}.bias"] = mu + (own if own is not None else 0.0)
                if f"{bn}.running_mean" in like.layout:
                    upd[f"{bn}.running_mean"] = mu
                    upd[f"{bn}.running_var"] = var
        return upd

    def input(self, X) -> torch.Tensor:
        x = getattr(X, "x", X)
        if not torch.is_tensor(x):
            x = torch.as_tensor(np.asarray(x))
        return x.to(torch.float64)

    def theta(self, A: Weights, B: Weights, k: int, x: torch.Tensor, ridge: float, target=None) -> Weights:
        """:math:`\\Theta_k`, ``k`` 0-based here: cut ``k``'s writers fitted to ``A``'s value
        (``target``, when the caller has it)."""
        cut = self.cuts[k]
        before = self.entries([m for c in self.cuts[: k + 1] for m in c.modules], A.layout)
        base = assemble(A, [{e: B[e] for e in before}])[0]
        caps = self.run(base, x, self.want(cut))
        if target is None:
            target = self.run(A, x, {cut.node})[cut.node]
        return assemble(base, [self.fit(cut, caps, target, base, ridge)])[0]


def wa_cuts(model: nn.Module) -> list[Cut]:
    """The cuts where weight adjustment hands a residual network over (see the module notes).

    Examples
    --------
    >>> import landscape as ls
    >>> cuts = wa_cuts(ls.build_model("resnet20", {"in_channels": 1}))
    >>> len(cuts), cuts[1].writers, cuts[4].writers
    (11, ['layer1.0.conv2'], ['layer2.0.conv2', 'layer2.0.downsample.0'])
    """
    return _GraphNet(model).cuts


def _check(A: Weights, B: Weights, model: nn.Module) -> _GraphNet:
    same_layout(A, B)
    g = _GraphNet(model)
    g.check_weights(A, "A")
    g.check_weights(B, "B")
    return g


def residual_transitional_network(
    A: Weights, B: Weights, model: nn.Module, k: int, X, *, ridge: float = 0.0
) -> Weights:
    """:math:`\\Theta_k^{AB}` of a residual network: ``B`` before cut ``k``, its writers fitted
    to ``A``'s value at cut ``k``, ``A`` after (``k = 1..m+1``; ``1`` gives ``A``, ``m + 1``
    gives ``B``). See the module notes and :func:`wa_cuts`."""
    g = _check(A, B, model)
    m = len(g.cuts)
    if int(k) != k or not 1 <= k <= m + 1:
        raise ValueError(f"k should be an integer in 1..{m + 1} for a model with {m} cuts, got {k!r}")
    k = int(k)
    if k == 1:
        return A
    if k == m + 1:
        return B
    return g.theta(A, B, k - 1, g.input(X), ridge)


def _step(g: _GraphNet, start: Weights, end: Weights, k: int, x, t: np.ndarray, method: str, ridge: float, snap: bool):
    """Step from :math:`\\Theta_k` to :math:`\\Theta_{k+1}` (``k`` 0-based: the fitted cut is ``k``)."""
    cut = g.cuts[k]
    fitted = set(g.entries(cut.writer_modules(), start.layout))
    moving = [
        e.name for e in start.layout if e.flat and e.name not in fitted and not torch.equal(start[e.name], end[e.name])
    ]
    base = arc_path(start, end, g.model, t) if method == "arc" else linear_path(start, end, t)
    u0 = g.run(start, x, {cut.node})[cut.node]
    u1 = g.run(end, x, {cut.node})[cut.node]
    points = []
    for i, tv in enumerate(t):
        if snap and tv == 0.0:
            points.append(start)
            continue
        if snap and tv == 1.0:
            points.append(end)
            continue
        p = base.point(i, dtype=torch.float64)
        w = assemble(start, [{e: p[e] for e in moving}])[0]
        caps = g.run(w, x, g.want(cut))
        target = (1.0 - tv) * u0 + tv * u1
        points.append(assemble(w, [g.fit(cut, caps, target, w, ridge)])[0])
    return PointSet.explicit(points)


def residual_wa_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    X,
    t_per_step=None,
    method: str = "linear",
    *,
    ridge: float = 0.0,
    snap_ends: bool = False,
    solver: str = "emd",
    swap_points: int = 1,
) -> Path:
    """WA connection of residual networks through the transitional networks at the cuts.

    See the module notes. Arguments and result are those of
    :func:`~landscape.connect.multilayer_wa_path` (a :class:`~landscape.connect.result.Path`
    that unpacks as ``t, points, bounds``), with cuts in place of layers: step ``k`` (of
    ``m``, the number of cuts) covers ``[(k-1)/s, k/s]`` and is stage ``k``, where ``s = m``
    (``s = m + 1`` for OT, whose last part, stage ``m + 1``, is OT's stage 2 of swaps).
    """
    if method not in ("linear", "arc", "ot"):
        raise ValueError(f"method should be one of ('linear', 'arc', 'ot'), got {method!r}")
    g = _check(A, B, model)
    t_step = as_t(np.linspace(0.0, 1.0, 6) if t_per_step is None else t_per_step)
    if t_step[0] != 0.0 or t_step[-1] != 1.0 or np.any(np.diff(t_step) <= 0):
        raise ValueError("t_per_step should increase from 0 to 1 (each step runs from one network to the next)")
    x = g.input(X)
    end, tail = B, None
    if method == "ot":
        perms = match_neurons(A, B, model, neuron="bl", solver=solver)  # WA re-fits the outgoing parts
        end = permute(B, model, perms)
        stage2, t2, _ = transposition_path(B, model, perms, swap_points=swap_points)
        tail = (stage2, np.asarray(t2, np.float64))
    base = "linear" if method == "ot" else method
    m = len(g.cuts)
    at_a = g.run(A, x, {c.node for c in g.cuts[1:]})  # A's value at every cut, in one pass
    thetas = [A] + [g.theta(A, end, k, x, ridge, at_a[g.cuts[k].node]) for k in range(1, m)] + [end]
    parts, ts = [], []
    for k in range(1, m):
        parts.append(_step(g, thetas[k - 1], thetas[k], k, x, t_step, base, ridge, snap_ends))
        ts.append(t_step)
    parts.append(linear_path(thetas[m - 1], end, t_step))
    ts.append(t_step)
    if tail is not None:
        parts.append(tail[0])
        ts.append(tail[1])
    t, points = concatenate_paths(parts, ts)
    labels = [f"step {k}: cut {k + 1} ('{g.cuts[k].node}') adjusted" for k in range(1, m)]
    labels += [f"step {m}: the logits' writers on the line"] + (["OT stage 2: swaps"] if tail is not None else [])
    return steps_path(t, points, np.arange(len(parts) + 1) / len(parts), labels, method)


def steps_path(t, points: PointSet, bounds: np.ndarray, labels: list[str], method: str) -> Path:
    """The result of a WA path in steps (:func:`residual_wa_path`,
    :func:`~landscape.connect.multilayer_wa_path`): step ``k`` on ``[bounds[k-1], bounds[k]]``
    is stage ``k`` (a joint belongs to the step it ends); method ``"wa-<method>"``; it unpacks
    as ``t, points, bounds``."""
    t = np.asarray(t, dtype=np.float64)
    stage = np.clip(np.searchsorted(bounds, t, side="left"), 1, len(bounds) - 1)
    return Path(points, t, stage, labels, method=f"wa-{method}", unpack=("t", "points", "bounds"), bounds=bounds)
