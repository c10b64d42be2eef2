"""REPAIR and RESET: renormalising the points of a linear path (Jordan et al., ICLR 2023).

The straight line :math:`w_t = (1-t)\\,A + t\\,B'` between two networks (``B'``: ``B`` aligned
to ``A`` by a permutation, or ``B`` itself) shrinks the variance of the hidden activations
towards its middle ("variance collapse"), and with it the accuracy. Two corrections act on
each point of the line, from statistics on data:

RESET (:func:`reset_path`)
    Recompute the BatchNorm running statistics of the point on the data, exactly as
    :func:`landscape.evaluate` does with ``bn="recompute"`` (:func:`landscape.bn.recompute_bn`:
    batches of ``batch_size``, each weighted by its sample count, or equally with
    ``weighting="batches"``) and store them in the point. Evaluating the RESET points with
    ``bn="running"`` then gives what the plain line gives with ``bn="recompute"`` on the
    same data; the difference is that the statistics come from the data REPAIR and RESET
    see (in :func:`~landscape.connect.compare_connections`, the inputs of the first split or
    ``wa_data``), whatever split is evaluated. A model without BatchNorm has nothing to
    reset: its path is returned unchanged.
REPAIR (:func:`repair_path`)
    For every channel of every corrected layer output (:func:`repair_sites`), with
    :math:`\\mu, \\sigma` the mean and standard deviation of the channel over the data (every
    sample and spatial position), rescale and shift the channel of :math:`w_t` so that

    .. math::

        \\mu(w_t) = (1-t)\\,\\mu(A) + t\\,\\mu(B'), \\qquad
        \\sigma(w_t) = (1-t)\\,\\sigma(A) + t\\,\\sigma(B').

    The correction :math:`y \\mapsto a y + b` (:math:`a > 0`) is folded into the point's
    weights in float64, so a REPAIR point is a plain set of weights the engine evaluates:

    - a ``Linear`` or ``Conv`` layer that writes a channel without a BatchNorm after it:
      its weight rows times :math:`a`, its bias :math:`a\\,\\text{bias} + b` (GPT-2's
      ``Conv1D``, whose weight is ``[in, out]``: its weight columns);
    - a ``BatchNorm`` (the output of the layer before it is corrected there): its running
      statistics become the mean and unbiased variance of its input over the data (as
      RESET's, so that ``bn="recompute"`` on the same data changes the point little) and its
      weight and bias are set so that its output in eval mode has the target mean and
      standard deviation (the weight keeps its sign).

    Outputs are corrected in forward order, since a correction changes the statistics of
    everything after it: the outputs are taken in levels (those with no corrected output
    upstream first), one pass over the data per level, measured by forward hooks on the
    corrected modules (the pass stops after the level's last one). Channels whose standard
    deviation is 0 are only shifted. The points at ``t = 0`` and ``t = 1`` are ``A`` and
    ``B'`` unchanged.

Which outputs are corrected comes from the model's one trace
(:func:`~landscape.connect.structure.structure`): the hidden channels of its permutation
groups, written by the parts of role ``"out"`` of ``Linear``, ``Conv1d/2d/3d`` and BatchNorm
layers; the classifier's outputs (fixed) are not. Writers that cannot take the correction
(a layer without bias and without a BatchNorm after it, such as the convolutions that add
into a pre-activation ResNet's stream; a BatchNorm without affine parameters; a module
called twice; other kinds of layers) are left as they are, with a warning
(:func:`unrepaired_layers`); a model with nothing to correct, or one the trace does not
follow, raises :class:`~landscape.connect.UnsupportedModelError`.

A Hugging Face GPT-2 (whose structure is read from its module tree) is corrected, block by
block, at the value channels of its attention (the third part of the fused ``c_attn``: the
attention averages values with weights summing to 1, so the correction of a value channel is
the same affine change of the attention's output) and at its MLP's hidden channels (``c_fc``,
before the GELU). Queries and keys (an affine change of them does not pass affinely through
the softmax) and the residual stream (which every block adds into) are left, with a warning;
there is no BatchNorm, so nothing to RESET.

Both apply to any *linear-type* connection (:func:`renormalized`): a method whose path is the
line from ``A`` to ``B'``, with ``B'`` = ``B`` permuted by the path's ``permutations``
attribute when it has one (weight or activation matching), else ``B``. The registry names
them ``"<base>+repair"`` and ``"<base>+reset"``. OT's path (Anokhin & Yarotsky) has two
stages: a line from ``A`` to ``B'`` (``B`` with the matched permutation), then swaps of two
neurons from ``B'`` to ``B``. ``"ot+repair"`` and ``"ot+reset"`` renormalise its stage 1
(:func:`stage_one`) and keep stage 2 as OT makes it: its states are reorderings of ``B``
(its function, its running statistics permuted with the channels), and only the two
neurons of a swap move. REPAIR keeps the line's ends, so the repaired stage 1 still ends
where stage 2 begins; RESET recomputes the statistics of stage 1's end too, so its stage 2
starts from ``B'`` with its own statistics again (the BatchNorm buffers change there, the
weights do not), as the ends of every ``+reset`` line are ``A`` and ``B'`` with
recomputed statistics.

Reference: K. Jordan, H. Sedghi, O. Saukh, R. Entezari, B. Neyshabur, "REPAIR: REnormalizing
Permuted Activations for Interpolation Repair", ICLR 2023.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from ..batches import as_source, call_model, first_inputs
from ..bn import WEIGHTINGS, batchnorm_modules, recompute_bn
from ..pointset import PointSet
from ..weights import Weights
from .graph import permute_groups
from .matching import two_stage_path
from .result import Path
from .structure import BATCHNORMS, CONVOLUTIONS, UnsupportedModelError, structure

__all__ = [
    "RENORMALIZATIONS",
    "Site",
    "line_ends",
    "renormalized",
    "repair_path",
    "repair_sites",
    "reset_path",
    "stage_one",
    "unrepaired_layers",
]

#: The renormalisations of a linear path, by suffix: ``"<base>+repair"``, ``"<base>+reset"``.
RENORMALIZATIONS = ("repair", "reset")


# ---------------------------------------------------------------------------- the sites
@dataclass(frozen=True)
class Site:
    """One layer output REPAIR corrects.

    Attributes
    ----------
    module : str
        The module whose tensors take the correction (a ``Linear``/``Conv`` layer, or a
        BatchNorm).
    group : str
        The permutation group whose channels it writes.
    norm : bool
        Whether ``module`` is a BatchNorm (the correction sets its statistics, weight and
        bias) or a layer (its weight's output channels and bias).
    measure : {"output", "input"}
        Which values of ``module``'s call are measured (by a forward hook): its output for
        a layer, its input for a BatchNorm (its output follows from it in closed form).
    axis : int
        The channel axis of the measured values (``-1`` for ``Linear`` and GPT-2's
        ``Conv1D``, ``1`` otherwise).
    level : int
        1 + the largest level of the sites upstream of it (1: none upstream); the sites of
        one level are measured in one pass.
    eps : float
        A BatchNorm's ``eps`` (0 for a layer).
    span : (int, int) or None
        The corrected channels ``[lo, hi)`` of the output when the layer writes several
        things side by side (GPT-2's fused ``c_attn``: its values); None for all of them.
    weight_axis : int
        The axis of the layer's weight that indexes its output channels: 0 for ``Linear``
        and convolutions (``[out, in, ...]``), 1 for GPT-2's ``Conv1D`` (``[in, out]``).
    """

    module: str
    group: str
    norm: bool
    measure: str
    axis: int
    level: int
    eps: float = 0.0
    span: tuple[int, int] | None = None
    weight_axis: int = 0


def repair_sites(model: nn.Module) -> list[Site]:
    """The layer outputs REPAIR corrects in ``model``, in forward order (see the module notes);
    the writers of hidden channels it cannot correct are :func:`unrepaired_layers`.

    Raises
    ------
    UnsupportedModelError
        The trace cannot follow the model, or it has no output REPAIR can correct (the
        message names why each writer was left out).

    Examples
    --------
    >>> import landscape as ls
    >>> [(s.module, s.norm, s.level) for s in repair_sites(ls.build_model("small_cnn", {"width": 4}))]
    [('1', True, 1), ('4', True, 2)]
    >>> [s.module for s in repair_sites(ls.build_model("mlp", {"widths": [8, 8]}))]
    ['1', '3']

    A Hugging Face GPT-2 (read from its module tree) is corrected at the value channels of
    every attention (its fused ``c_attn``'s third part) and at the MLP's hidden channels
    (``c_fc``, before the GELU); see :func:`unrepaired_layers` for the rest.
    """
    sites, left = _plan(model)
    if not sites:
        why = "".join(f"; '{m}': {reason}" for m, reason in left.items())
        raise UnsupportedModelError(
            f"REPAIR found no hidden Linear, Conv or BatchNorm output to correct in {type(model).__name__}{why}"
        )
    return sites


def unrepaired_layers(model: nn.Module) -> dict[str, str]:
    """``{module: why}``: the modules that write hidden channels of ``model`` but whose
    outputs REPAIR leaves as they are (a layer without bias and without a BatchNorm after it
    has nowhere to put the shift; a BatchNorm without affine parameters or running
    statistics; a module called twice; a kind of layer it does not correct).

    Examples
    --------
    >>> import landscape as ls
    >>> unrepaired_layers(ls.build_model("preresnet20", {"width": 2, "in_channels": 1}))["conv1"]
    'no bias and no BatchNorm after it: the shift of its channels has nowhere to go'
    """
    return _plan(model)[1]


def _plan(model: nn.Module) -> tuple[list[Site], dict[str, str]]:
    """The sites of ``model`` and the writers left out, with why."""
    s = structure(model)
    if s.graph is None:  # a transformer read from its module tree
        return _gpt2_plan(model)
    writers = {
        p.name[: -len(".weight")]: g.name
        for g in s.groups
        for p in g.parts
        if p.role == "out" and p.name.endswith(".weight")
    }
    modules = dict(s.graph.named_modules())
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in s.graph.graph.nodes:
        if node.op == "call_module" and node.target in writers:
            calls.setdefault(node.target, []).append(node)
    sites: list[Site] = []
    left: dict[str, str] = {}
    level_of: dict[str, int] = {}  # fx node -> the largest level of the sites at or above it
    for node in s.graph.graph.nodes:
        above = max((level_of.get(a.name, 0) for a in node.all_input_nodes), default=0)
        level_of[node.name] = above
        name = node.target if node.op == "call_module" else None
        if name not in calls:
            continue
        site = _site(name, modules[name], node, writers, modules, above + 1)
        if len(calls[name]) > 1:
            site = "called more than once: one correction cannot fit every call"
        if isinstance(site, Site):
            sites.append(site)
            level_of[node.name] = site.level
        elif site is not None:
            left[name] = site
    return sites, left


def _site(name: str, mod: nn.Module, node: torch.fx.Node, writers, modules, level: int) -> Site | str | None:
    """The :class:`Site` of the call ``node`` of module ``name``; None when its output is
    corrected at the BatchNorm after it; why, when it cannot be corrected."""
    group = writers[name]
    if isinstance(mod, BATCHNORMS):
        if not mod.affine or not mod.track_running_stats:
            return "a BatchNorm without affine parameters or running statistics"
        return Site(name, group, True, "input", 1, level, float(mod.eps))
    if not isinstance(mod, (nn.Linear, *CONVOLUTIONS)):
        return f"a {type(mod).__name__}; REPAIR corrects Linear, Conv and BatchNorm outputs"
    users = list(node.users)
    if (
        len(users) == 1
        and users[0].op == "call_module"
        and isinstance(modules[users[0].target], BATCHNORMS)
        and writers.get(users[0].target) == group
    ):
        return None  # corrected at its BatchNorm
    if mod.bias is None:
        return "no bias and no BatchNorm after it: the shift of its channels has nowhere to go"
    return Site(name, group, False, "output", -1 if isinstance(mod, nn.Linear) else 1, level)


#: Why REPAIR leaves GPT-2's other writers of hidden channels as they are.
_GPT2_LEFT = {
    "stream": "writes the residual stream, which every block adds into",
    "qk": "queries and keys: an affine correction of them is not an affine change of the attention's output "
    "(the scores go through a softmax)",
}


def _gpt2_plan(model: nn.Module) -> tuple[list[Site], dict[str, str]]:
    """The sites of a Hugging Face GPT-2, in forward order, and the writers left out.

    Per block: the value channels of the fused ``c_attn`` (the attention averages the
    values with weights that sum to 1, so an affine correction of a value channel is the
    same affine change of the attention's output channel) and the MLP's hidden channels
    written by ``c_fc``. Each reads the residual stream, which every correction upstream
    changes: one level per site.
    """
    s = structure(model)
    p = "transformer." if hasattr(model, "transformer") else ""
    names = {g.name for g in s.groups}
    d = model.config.n_embd
    sites: list[Site] = []
    left: dict[str, str] = {f"{p}wte": _GPT2_LEFT["stream"], f"{p}wpe": _GPT2_LEFT["stream"]}
    for i in range(model.config.n_layer):
        b = f"{p}h.{i}"
        vo = f"{b}.attn.vo"
        if vo not in names:
            raise UnsupportedModelError(f"GPT-2 block '{b}' has no value group '{vo}' in its structure")
        sites.append(
            Site(f"{b}.attn.c_attn", vo, False, "output", -1, len(sites) + 1, span=(2 * d, 3 * d), weight_axis=1)
        )
        sites.append(Site(f"{b}.mlp.c_fc", f"{b}.mlp.c_fc", False, "output", -1, len(sites) + 1, weight_axis=1))
        left[f"{b}.attn.c_attn (queries, keys)"] = _GPT2_LEFT["qk"]
        for m in (f"{b}.ln_1", f"{b}.attn.c_proj", f"{b}.ln_2", f"{b}.mlp.c_proj"):
            left[m] = _GPT2_LEFT["stream"]
    left[f"{p}ln_f"] = _GPT2_LEFT["stream"]
    return sites, left


# ---------------------------------------------------------------------------- statistics
class _Stop(Exception):
    pass


class _Probe:
    """Forward hooks on the modules of ``sites`` that add each site's measured values (its
    module's output, or its input) to the site's moments, and stop the pass after the last
    site (in forward order) is measured."""

    def __init__(self, net: nn.Module, sites: list[Site]):
        self.acc: dict[str, Any] = {}
        last = sites[-1].module
        self.handles = [
            net.get_submodule(s.module).register_forward_hook(self._hook(s, s.module == last)) for s in sites
        ]

    def _hook(self, site: Site, last: bool):
        def hook(module, inputs, output):
            values = inputs[0] if site.measure == "input" else output
            if site.span is not None:
                values = values.narrow(site.axis, site.span[0], site.span[1] - site.span[0])
            self.acc[site.module] = _merge(self.acc.get(site.module), _moments(values, site.axis))
            if last:
                raise _Stop

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _moments(values: torch.Tensor, axis: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(count, mean, M2)`` per channel (``axis``) of ``values``, in float64."""
    x = values.to(torch.float64).movedim(axis, -1)
    x = x.reshape(-1, x.shape[-1])
    mean = x.mean(0)
    return x.shape[0], mean, (x - mean).pow(2).sum(0)


def _merge(acc, new):
    """Chan et al.'s merge of two ``(count, mean, M2)`` accumulators."""
    if acc is None:
        return new
    (n_a, m_a, q_a), (n_b, m_b, q_b) = acc, new
    n = n_a + n_b
    delta = m_b - m_a
    return n, m_a + delta * (n_b / n), q_a + q_b + delta.pow(2) * (n_a * n_b / n)


def _measure(net: nn.Module, X: torch.Tensor, sites: list[Site], batch_size: int) -> dict[str, tuple]:
    """``{site.module: (count, mean, M2)}`` of every site's measured values over ``X``
    (``sites`` in forward order; the pass stops after the last)."""
    probe = _Probe(net, sites)
    try:
        with torch.no_grad():
            for start in range(0, X.shape[0], batch_size):
                try:
                    net(X[start : start + batch_size])
                except _Stop:
                    pass
    finally:
        probe.close()
    return probe.acc


def _output_stats(site: Site, moments, point: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (over all values) of the site's output channels, from the
    moments of its measured values and, for a BatchNorm, its tensors in ``point``."""
    n, mean, m2 = moments
    std = (m2 / n).sqrt()
    if not site.norm:
        return mean, std
    p = site.module
    scale = point[f"{p}.weight"] / (point[f"{p}.running_var"] + site.eps).sqrt()  # eval mode
    return scale * (mean - point[f"{p}.running_mean"]) + point[f"{p}.bias"], scale.abs() * std


# ---------------------------------------------------------------------------- the corrections
def _fold(site: Site, moments, target_mean, target_std, point: dict[str, torch.Tensor]) -> None:
    """Fold the correction of ``site`` into ``point`` (float64 tensors, changed in place)."""
    n, mean, m2 = moments
    std = (m2 / n).sqrt()
    live = std > 0
    p = site.module
    if site.norm:
        w = point[f"{p}.weight"]
        var = m2 / max(n - 1, 1)
        point[f"{p}.running_mean"] = mean
        point[f"{p}.running_var"] = var
        # eval-mode output: w (x - mean) / sqrt(var + eps) + bias, of mean bias and std |w| std / s
        s = (var + site.eps).sqrt()
        sign = torch.where(w < 0, -1.0, 1.0).to(w)
        point[f"{p}.weight"] = torch.where(live, sign * target_std * s / torch.where(live, std, 1.0), w)
        point[f"{p}.bias"] = target_mean.clone()
        return
    a = torch.where(live, target_std / torch.where(live, std, 1.0), torch.ones_like(std))
    b = target_mean - a * mean
    lo, hi = site.span if site.span is not None else (0, a.numel())
    w = point[f"{p}.weight"].clone()
    out = w.movedim(site.weight_axis, 0)  # a view: the output channels first
    out[lo:hi] = out[lo:hi] * a.view(-1, *([1] * (w.dim() - 1)))
    bias = point[f"{p}.bias"].clone()
    bias[lo:hi] = a * bias[lo:hi] + b
    point[f"{p}.weight"], point[f"{p}.bias"] = w, bias


def _load(net: nn.Module, point: dict[str, torch.Tensor]) -> None:
    keys = net.state_dict().keys()
    net.load_state_dict({k: point[k] for k in keys})


def _float64(weights: Weights, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of ``weights`` on ``device``, floating ones in float64 (copies)."""
    return {
        k: (v.to(device, torch.float64, copy=True) if v.is_floating_point() else v.to(device))
        for k, v in weights.items()
    }


def _endpoint_stats(net, X, sites, weights: Weights, batch_size: int) -> dict[str, tuple]:
    point = _float64(weights, X.device)
    _load(net, point)
    moments = _measure(net, X, sites, batch_size)
    return {s.module: _output_stats(s, moments[s.module], point) for s in sites}


def _repair_point(net, X, sites, point, t: float, ends, batch_size: int) -> None:
    """REPAIR one interior point (float64 tensors, changed in place)."""
    (stats_a, stats_b) = ends
    for level in sorted({s.level for s in sites}):
        now = [s for s in sites if s.level == level]
        _load(net, point)
        moments = _measure(net, X, now, batch_size)
        for s in now:
            (mu_a, sd_a), (mu_b, sd_b) = stats_a[s.module], stats_b[s.module]
            _fold(s, moments[s.module], (1 - t) * mu_a + t * mu_b, (1 - t) * sd_a + t * sd_b, point)


# ---------------------------------------------------------------------------- the two paths
def line_ends(path: Path, A: Weights, B: Weights, model: nn.Module, *, what: str = "REPAIR") -> Weights:
    """``B'``, the end of the linear-type ``path`` from ``A``: ``B`` permuted by the path's
    ``permutations`` when it has them, else ``B``; checked to be the line's end.

    Raises
    ------
    ValueError
        ``path`` is not a Path of one stage whose points are :math:`(1-t)A + tB'`.
    """
    if not isinstance(path, Path):
        raise TypeError(f"{what} takes a connection Path, got {type(path).__name__}")
    if len(path.stages) != 1:
        raise ValueError(
            f"{what} applies to linear-type paths of one stage; the {path.method or 'given'} path has stages "
            f"{path.stages}"
        )
    perms = getattr(path, "permutations", None)
    Bp = B if perms is None else permute_groups(B, structure(model).groups, perms)
    for k in range(path.K):
        t = float(path.t[k])
        point = path.point(k, dtype=torch.float64)
        for e in path.layout.flat_entries():
            a, b = A[e.name].to(torch.float64), Bp[e.name].to(torch.float64)
            line = (1 - t) * a + t * b
            scale = 1.0 + float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 1.0
            if not torch.allclose(point[e.name], line, rtol=0.0, atol=1e-5 * scale):
                raise ValueError(
                    f"{what} applies to linear-type paths: point {k} (t={t:g}) of the {path.method or 'given'} path "
                    f"is not (1-t) A + t B' at '{e.name}' (B' = B permuted by the path's permutations, if any)"
                )
    return Bp


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size should be a positive int, got {batch_size!r}")
    return int(batch_size)


def _inputs(data, what: str) -> torch.Tensor:
    if data is None:
        raise ValueError(f"{what} needs data (inputs to measure the activations on), got None")
    X = first_inputs(data, what=what)
    if not torch.is_tensor(X) or X.dim() == 0 or X.shape[0] == 0:
        raise ValueError(f"{what} needs a non-empty batch of inputs, got {type(X).__name__}")
    return X


def _explicit(path: Path, points: list[Weights], method: str, **attrs: Any) -> Path:
    keep = {k: getattr(path, k) for k in ("permutations",) if hasattr(path, k)}
    keep.update(attrs)
    return Path(PointSet.explicit(points), path.t, path.stage, path.labels, method=method, **keep)


def repair_path(
    path: Path,
    A: Weights,
    B: Weights,
    model: nn.Module,
    data,
    *,
    batch_size: int = 256,
    device=None,
    method: str | None = None,
) -> Path:
    """REPAIR the points of a linear-type path (see the module notes).

    Parameters
    ----------
    path : Path
        The line from ``A`` to ``B'`` (one stage; ``B'`` = ``B`` permuted by
        ``path.permutations`` when present), e.g. :func:`~landscape.connect.linear_path`.
    A, B : Weights
        The two networks the path was made from.
    model : nn.Module
        The model (its trace says which outputs to correct, :func:`repair_sites`).
    data : Tensor, TensorData, tuple, DataLoader or iterable of batches
        The inputs the statistics are measured on (all of them,
        :func:`landscape.batches.first_inputs`).
    batch_size : int
        Samples per forward pass.
    device : str or torch.device, optional
        Where the passes run (default the CPU); always in float64.
    method : str, optional
        The path's method name (default ``path.method + "+repair"``).

    Returns
    -------
    Path
        The REPAIRed points, explicit (identity coefficients; computed in float64 on
        ``device``, stored in the dtype and on the device of the path's points), with the
        path's ``t``, stage and labels, its ``permutations`` if any, ``sites`` (the
        corrected modules) and ``unrepaired`` (:func:`unrepaired_layers`, warned about).

    Raises
    ------
    ValueError
        ``path`` is not linear-type, or no data.
    UnsupportedModelError
        See :func:`repair_sites`.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect import linear_path
    >>> model = ls.build_model("mlp", {"widths": [16]})
    >>> A = ls.Weights.from_module(model)
    >>> B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [16]}))
    >>> rep = repair_path(linear_path(A, B, [0.0, 0.5, 1.0]), A, B, model, torch.randn(64, 64))
    >>> rep.method, rep.sites, torch.equal(rep.point(2)["1.weight"], B["1.weight"])
    ('linear+repair', ['1'], True)
    """
    batch_size = _check_batch_size(batch_size)
    Bp = line_ends(path, A, B, model, what="REPAIR")
    X = _inputs(data, "REPAIR")
    X = X.to(torch.device(device) if device is not None else "cpu", torch.float64 if X.is_floating_point() else None)
    sites = repair_sites(model)
    left = unrepaired_layers(model)
    if left:
        warnings.warn(
            f"REPAIR leaves the outputs of {len(left)} module(s) uncorrected: "
            + "; ".join(f"'{m}': {why}" for m, why in left.items()),
            UserWarning,
            stacklevel=2,
        )
    net = copy.deepcopy(model).to(X.device, torch.float64).eval()
    ends = (_endpoint_stats(net, X, sites, A, batch_size), _endpoint_stats(net, X, sites, Bp, batch_size))
    points = []
    for k in range(path.K):
        t = float(path.t[k])
        w = path.weights(k)
        if t in (0.0, 1.0):
            points.append(w)
            continue
        point = _float64(w, X.device)
        _repair_point(net, X, sites, point, t, ends, batch_size)
        points.append(Weights(OrderedDict((n, point[n].to(w[n].device, w[n].dtype)) for n in w), w.layout))
    name = method if method is not None else f"{path.method or 'path'}+repair"
    return _explicit(path, points, name, sites=[s.module for s in sites], unrepaired=left)


def reset_path(
    path: Path,
    model: nn.Module,
    data,
    *,
    batch_size: int = 128,
    weighting: str = "samples",
    method: str | None = None,
) -> Path:
    """RESET the points of a path: their BatchNorm statistics recomputed on ``data``.

    The statistics are those :func:`landscape.evaluate` recomputes with ``bn="recompute"``
    (``weighting="samples"``) or ``"recompute-batches"`` (``"batches"``) and
    ``bn_batch_size=batch_size`` (:func:`landscape.bn.recompute_bn`, BatchNorm layers alone in
    train mode), computed in the points' dtype on their device; evaluating the result with
    ``bn="running"`` gives what the path gives with that mode on ``data`` (to rounding).
    RESET needs no straight line, but the registry applies it to linear-type methods.

    Parameters
    ----------
    path : Path
        Any connection path of ``model``.
    model : nn.Module
        The model (not changed: a private copy runs the passes).
    data : Tensor, TensorData, tuple, DataLoader or iterable of batches
        The data the statistics are recomputed on (a Tensor is read as the inputs).
    batch_size : int
        Samples per batch (``bn_batch_size`` of :func:`landscape.evaluate`).
    weighting : {"samples", "batches"}
        How batches are weighted (:data:`landscape.bn.WEIGHTINGS`).
    method : str, optional
        The path's method name (default ``path.method + "+reset"``).

    Returns
    -------
    Path
        The points with recomputed statistics, explicit, with the path's ``t``, stage,
        labels and ``permutations`` if any. A model without BatchNorm has nothing to reset:
        the same points (under the new method name).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect import linear_path
    >>> model = ls.build_model("small_cnn", {"width": 4})
    >>> A = ls.Weights.from_module(model)
    >>> B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 4}))
    >>> path = reset_path(linear_path(A, B, [0.0, 0.5, 1.0]), model, torch.randn(20, 1, 8, 8))
    >>> path.method, bool(torch.allclose(path.point(1)["1.running_var"], torch.ones(4)))
    ('linear+reset', False)
    """
    if not isinstance(path, Path):
        raise TypeError(f"RESET takes a connection Path, got {type(path).__name__}")
    batch_size = _check_batch_size(batch_size)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting should be one of {WEIGHTINGS}, got {weighting!r}")
    name = method if method is not None else f"{path.method or 'path'}+reset"
    if data is None:
        raise ValueError("RESET needs data (inputs to recompute the statistics on), got None")
    if not batchnorm_modules(model):
        return _explicit(path, [path.weights(k) for k in range(path.K)], name)
    src = as_source((data, torch.zeros(data.shape[0])) if torch.is_tensor(data) else data)
    work = copy.deepcopy(model).to(path.device, path.dtype).eval()

    def run(tensors, batch):
        return call_model(work, {n: v[0] for n, v in tensors.items()}, batch)

    points = []
    for k in range(path.K):
        tensors = recompute_bn(
            run, work, path.tensors([k]), src.batches(batch_size, path.device, path.dtype, split=False), weighting
        )
        w = path.weights(k)
        out = OrderedDict((n, tensors[n][0].clone() if n in tensors else w[n]) for n in w)
        points.append(Weights(out, w.layout))
    return _explicit(path, points, name)


# ---------------------------------------------------------------------------- the suffixes
def stage_one(path: Path) -> Path:
    """Stage 1 of a two-stage path (OT: the line from ``A`` to ``B'``), as a path of its own
    at its own parameter ``t1`` in ``[0, 1]``, with the path's ``permutations``."""
    keep = {"permutations": path.permutations} if hasattr(path, "permutations") else {}
    return Path(path.stage1, path.t1, labels=path.labels[:1], method=path.method, **keep)


def _rejoined(path: Path, stage1: Path, name: str, extra: dict[str, Any]) -> Path:
    """``path`` (two stages, as :func:`~landscape.connect.matching.two_stage_path` makes them)
    with its stage 1 replaced by ``stage1``, under the method name ``name``."""
    return two_stage_path(
        stage1.points,
        path.t1,
        path.stage2,
        path.t2,
        permutations=path.permutations,
        swaps=path.swaps,
        method=name,
        labels=path.labels,
        **extra,
    )


def renormalized(base: Callable[..., Path], how: str, name: str, *, base_needs_data: bool = False) -> Callable:
    """The connection method ``<base>+<how>``: ``base``'s path, then REPAIR or RESET.

    Parameters
    ----------
    base : callable
        A registered method's ``connect(A, B, model, data, **options) -> Path`` returning a
        linear-type path.
    how : {"repair", "reset"}
        The renormalisation (:data:`RENORMALIZATIONS`).
    name : str
        The combined method's registered name (the path's ``method``).
    base_needs_data : bool
        Whether ``base`` takes ``data`` too (activation matching); otherwise it gets None.

    Returns
    -------
    callable
        ``connect(A, B, model, data, *, t, repair_batch_size=256, reset_batch_size=128,
        reset_weighting="samples", **options) -> Path`` for the registry; ``data`` are the
        inputs the statistics are measured on. A base path in two stages (OT: ``stage1``,
        ``stage2``) has its stage 1 renormalised and its stage 2 kept (see the module notes).
    """
    if how not in RENORMALIZATIONS:
        raise ValueError(f"how should be one of {RENORMALIZATIONS}, got {how!r}")

    def connect(
        A: Weights,
        B: Weights,
        model: nn.Module,
        data,
        *,
        t,
        repair_batch_size: int = 256,
        reset_batch_size: int = 128,
        reset_weighting: str = "samples",
        **options: Any,
    ) -> Path:
        path = base(A, B, model, data if base_needs_data else None, t=t, **options)
        staged = hasattr(path, "stage1") and hasattr(path, "stage2")
        line = stage_one(path) if staged else path
        if how == "repair":
            fixed = repair_path(line, A, B, model, data, batch_size=repair_batch_size, method=name)
        else:
            line_ends(line, A, B, model, what="RESET")
            fixed = reset_path(line, model, data, batch_size=reset_batch_size, weighting=reset_weighting, method=name)
        if not staged:
            return fixed
        # OT: the renormalised stage 1, then stage 2 (the swaps from B' to B) as OT makes it
        extra = {k: getattr(fixed, k) for k in ("sites", "unrepaired") if hasattr(fixed, k)}
        return _rejoined(path, fixed, name, extra)

    connect.__name__ = connect.__qualname__ = name.replace("+", "_").replace("-", "_") + "_connection"
    connect.__doc__ = f"``{name}``: the base method's line, then {how.upper()} (:mod:`landscape.connect.repair`)."
    return connect
