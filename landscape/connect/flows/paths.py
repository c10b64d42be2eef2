"""The Flow and Bijection connections' paths: :func:`flow_path`, :func:`aligned_flow_path` and
the differentiable point :func:`flow_path_tensors` that :func:`~landscape.connect.flows.fit_bijection`
trains on.

Every neuron of a group is mixed in the latent space of the group's flow,

.. math::

    \\psi_i(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A_i)
    + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B_i)\\bigr];

floating-point entries outside every group follow the line :math:`(1-t)A + tB`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...pointset import PointSet
from ...weights import Weights
from ..matching import match_neurons, transposition_path, two_stage_path
from ..neurons import invert_permutation, permute
from ..paths import as_t
from ..result import Path
from .checks import check_model, check_pair, dtype_device
from .groups import NeuronGroup, check_groups

__all__ = ["FLOW_LABELS", "aligned_flow_path", "flow_path", "flow_path_tensors"]

_SNAP = 1e-15
#: The stages of :func:`aligned_flow_path`: the flow path between matched networks, then OT's swaps.
FLOW_LABELS = ("flow between the matched networks", "swaps of two neurons")


# ============================================================================ paths
def _snap(v: float) -> float:
    """Round values within 1e-15 of -1, 0 or 1 to them (cos(pi/2) = 6e-17 becomes 0)."""
    for r in (-1.0, 0.0, 1.0):
        if abs(v - r) < _SNAP:
            return r
    return v


def _arc(t: float) -> tuple[float, float]:
    """``(cos(pi t / 2), sin(pi t / 2))``, snapped."""
    return _snap(math.cos(0.5 * math.pi * t)), _snap(math.sin(0.5 * math.pi * t))


def _group_path(A, B, g: NeuronGroup, flow: nn.Module, c: Tensor, s: Tensor) -> OrderedDict[str, Tensor]:
    """The group's entries along the path for coefficients ``c, s`` of shape ``[T]`` (or ``[]``)."""
    dtype, device = dtype_device(flow)
    MA = g.matrix(A).to(device=device, dtype=dtype)
    MB = g.matrix(B).to(device=device, dtype=dtype)
    n, D = MA.shape
    zA, _ = flow(MA)
    zB, _ = flow(MB)
    c = c.to(device=device, dtype=dtype)
    s = s.to(device=device, dtype=dtype)
    batch = tuple(c.shape)
    z = c.reshape(*batch, 1, 1) * zA + s.reshape(*batch, 1, 1) * zB
    psi = flow.inverse(z.reshape(-1, D)).reshape(*batch, n, D)
    ref = A[g.parts[0][0]]
    return OrderedDict((k, v.to(ref.device)) for k, v in g.pieces(psi, A).items())


def flow_path_tensors(
    A: Mapping[str, Tensor],
    B: Mapping[str, Tensor],
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    t: float | Tensor,
) -> OrderedDict[str, Tensor]:
    """The point :math:`\\psi(t)` of the flow path, differentiable in the flows' parameters.

    .. math::

        \\psi_i(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A_i)
        + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B_i)\\bigr]

    for every neuron ``i`` of every group (``nu = flows[group.name]``, computed in the flow's
    dtype and device); other floating-point entries are :math:`(1-t)A + tB`, non-float
    entries are ``A``'s.

    Parameters
    ----------
    A, B : Weights or mapping of str to Tensor
        Two weight points of one model.
    groups : list of NeuronGroup
        Disjoint neuron groups (e.g. :func:`mlp_groups`).
    flows : dict of str to RealNVP or IAF
        One flow per group name, of dimension ``group.dim(A)``.
    t : float or Tensor[]
        One path parameter. A tensor ``t`` may itself carry gradients.

    Returns
    -------
    OrderedDict of str to Tensor
        In ``A``'s order, dtypes and devices; the group entries keep the autograd graph
        through the flows (use with :func:`torch.func.functional_call`).

    Notes
    -----
    The ends are not snapped: at ``t = 0`` the group entries are
    :math:`\nu^{-1}(\nu(\theta^A))`, equal to ``A`` up to rounding; :func:`flow_path`
    returns ``A`` and ``B`` exactly there.
    """
    check_pair(A, B)
    groups = check_groups(groups, A, flows)
    if torch.is_tensor(t):
        if t.numel() != 1:
            raise ValueError(f"t should be one value (a float or a 0-d tensor), got a tensor of shape {list(t.shape)}")
        t = t.reshape(())
        tv = float(t.detach())
        c, s = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    else:
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
            raise ValueError(f"t should be a float in [0, 1], got {type(t).__name__}")
        tv = float(t)
        cf, sf = _arc(tv)
        c, s = torch.tensor(cf, dtype=torch.float64), torch.tensor(sf, dtype=torch.float64)
    if not (0.0 <= tv <= 1.0):
        raise ValueError(f"t should be in [0, 1], got {tv}")
    grouped: dict[str, Tensor] = {}
    for g in groups:
        grouped.update(_group_path(A, B, g, flows[g.name], c, s))
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, a in A.items():
        if k in grouped:
            out[k] = grouped[k]
        elif torch.is_tensor(a) and a.is_floating_point():
            b = B[k]
            tt = t.to(a.device) if torch.is_tensor(t) else tv
            out[k] = ((1 - tt) * a.to(torch.float64) + tt * b.to(torch.float64)).to(a.dtype)
        else:
            out[k] = a
    return out


def _as_t(t) -> np.ndarray:
    """:func:`~landscape.connect.paths.as_t`, in ``[0, 1]`` (a flow path has no extrapolation)."""
    t = as_t(t)
    bad = t[~((t >= 0) & (t <= 1))]
    if bad.size:
        raise ValueError(f"t should lie in [0, 1], got {bad[:3].tolist()}")
    return t


def flow_path(
    A: Weights,
    B: Weights,
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    t,
) -> Path:
    """The Flow (or Bijection) connection of Anokhin & Yarotsky (2020) at the given ``t``.

    .. math::

        \\psi_i(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A_i)
        + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B_i)\\bigr]

    for every neuron ``i`` (row of ``group.matrix``) of every group, with that group's flow
    ``nu = flows[group.name]`` (computed in the flow's dtype and device, cast back to the
    weights' dtype). Floating-point entries outside every group follow the line
    :math:`(1-t)A + tB`; non-float entries (BatchNorm ``num_batches_tracked``) are ``A``'s.
    If :math:`\\nu` maps the neuron distribution to :math:`\\mathcal N(0, I)`, every point of
    the path has neurons from that distribution.

    Parameters
    ----------
    A, B : Weights
        Two weight points of one model.
    groups : list of NeuronGroup
        Disjoint neuron groups (e.g. :func:`mlp_groups`).
    flows : dict of str to RealNVP or IAF
        One flow per group name (:func:`fit_flows_for`, :func:`fit_bijection`,
        :func:`load_connection_model`).
    t : array-like [T]
        Path parameters in ``[0, 1]``; ``t = 0`` and ``t = 1`` give ``A`` and ``B`` bit for bit.

    Returns
    -------
    Path
        Method ``"flow"``, one stage: explicit points (identity coefficients), one per ``t``,
        named ``"t=..."``, with ``path.t`` the given ``t`` (non-decreasing).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect.flows import RealNVP, mlp_groups
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
    >>> groups = mlp_groups(model)
    >>> flows = {g.name: RealNVP(g.dim(a), n_couplings=2, hidden=8) for g in groups}
    >>> path = flow_path(a, b, groups, flows, [0.0, 0.5, 1.0])
    >>> path.K, path.method, torch.equal(path.point(2)["1.weight"], b["1.weight"])
    (3, 'flow', True)
    """
    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Weights):
            raise ValueError(f"{name} should be a landscape Weights, got {type(w).__name__}")
    check_pair(A, B)
    if A.layout.names() != B.layout.names():
        raise ValueError("A and B have different layouts; expected weights of the same model")
    groups = check_groups(groups, A, flows)
    ts = _as_t(t)
    cs = np.array([_arc(v) for v in ts], dtype=np.float64)  # [T, 2]
    c, s = torch.from_numpy(cs[:, 0]), torch.from_numpy(cs[:, 1])
    grouped: dict[str, Tensor] = {}
    with torch.no_grad():
        for g in groups:
            grouped.update(_group_path(A, B, g, flows[g.name], c, s))
    points = []
    for k, tv in enumerate(ts):
        if tv == 0.0 or tv == 1.0:
            src = A if tv == 0.0 else B
            tensors = {name: v.clone() for name, v in src.items()}
            for e in A.layout:
                if not e.flat:
                    tensors[e.name] = A[e.name].clone()
        else:
            tensors = {}
            for e in A.layout:
                a = A[e.name]
                if e.name in grouped:
                    tensors[e.name] = grouped[e.name][k]
                elif e.flat:
                    tensors[e.name] = ((1 - tv) * a.to(torch.float64) + tv * B[e.name].to(torch.float64)).to(a.dtype)
                else:
                    tensors[e.name] = a.clone()
        points.append(Weights(tensors, A.layout))
    return Path(PointSet.explicit(points, names=[f"t={v:.6g}" for v in ts]), ts, method="flow")


def aligned_flow_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    template: Mapping[str, Tensor],
    t=None,
    *,
    swap_points: int = 1,
    permutations: Mapping[str, Tensor] | None = None,
    neuron: str = "blc",
):
    """The Flow (or Bijection) connection between matched networks, in two stages.

    Stage 1 is :func:`flow_path` from ``A`` to :math:`B' = \\pi(B)`, ``B`` reordered to
    match ``A`` (as in the OT connection), computed in the template's frame: with
    :math:`\\sigma` the reordering that matches ``A`` to ``template``,

    .. math::

        \\psi(t) = \\sigma^{-1}\\Bigl(\\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,
        \\nu(\\sigma A) + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\sigma B')\\bigr]\\Bigr),

    neuron by neuron, so the flows see neurons whose input slices are ordered as in the
    aligned pool they were fitted to (:func:`align_pool`). Reordering a whole point does not
    change its function, so :math:`\\sigma` only fixes which coordinates the flows read.
    Stage 2 goes from :math:`B'` back to ``B`` by swapping two neurons at a time
    (:func:`~landscape.connect.transposition_path`, the OT connection's stage 2).

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        An MLP stack or a network :func:`~landscape.connect.graph.trace_groups` follows.
    groups : list of NeuronGroup
        The flows' groups (:func:`flow_groups`).
    flows : dict of str to RealNVP or IAF
        Fitted to the aligned pool.
    template : Weights or mapping of str to Tensor
        The template of :func:`align_pool` (same entries as ``A``).
    t : array-like [T], optional
        Stage-1 parameters (default ``linspace(0, 1, 11)``).
    swap_points : int
        Points inside each swap of stage 2.
    permutations : dict of str to LongTensor[n], optional
        The matching of ``B`` to ``A`` (default :func:`~landscape.connect.match_neurons`).
    neuron : {"blc", "bl"}
        What the matchings (``B`` to ``A``, ``A`` to ``template``) compare.

    Returns
    -------
    Path
        Method ``"flow"``, as an OT connection: the points are both stages end to end
        (stage 1 on ``t in [0, 1/2]``, stage 2 on ``[1/2, 1]``, the shared point once, as
        :func:`~landscape.connect.concatenate_paths` joins them), ``stage`` is 1 or 2 per
        point (labels :data:`FLOW_LABELS`), and the stages are attributes: ``stage1``
        (PointSet) and ``t1``, ``stage2`` and ``t2``, ``permutations`` (the matching of
        ``B`` to ``A``) and ``swaps``. ``stage1`` starts at ``A`` and ``stage2`` ends at
        ``B``, bit for bit; the stage-1 end equals the stage-2 start (:math:`B'`) bit for bit.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect.flows import align_pool, fit_flows_for, flow_groups
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
    >>> aligned, template = align_pool(model, [a, b])
    >>> groups = flow_groups(model)
    >>> flows = fit_flows_for(model, aligned, groups, epochs=0, base="gaussian")
    >>> path = aligned_flow_path(a, b, model, groups, flows, template, [0.0, 0.5, 1.0])
    >>> torch.equal(path.stage1.point(0)["1.weight"], a["1.weight"])
    True
    >>> torch.equal(path.stage2.point(path.stage2.K - 1)["1.weight"], b["1.weight"])
    True
    >>> path.stages, torch.equal(path.point(path.K - 1)["1.weight"], b["1.weight"])
    ([1, 2], True)
    """
    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Weights):
            raise ValueError(f"{name} should be a landscape Weights, got {type(w).__name__}")
    check_pair(A, B)
    check_model(model, A)
    if not isinstance(template, Mapping):
        raise ValueError(f"template should be a Weights or a mapping of str to Tensor, got {type(template).__name__}")
    check_pair(A, template)
    template = template if isinstance(template, Weights) else Weights(OrderedDict(template.items()), A.layout)
    groups = check_groups(groups, A, flows)
    t1 = _as_t(np.linspace(0.0, 1.0, 11) if t is None else t)
    perms = dict(permutations) if permutations is not None else match_neurons(A, B, model, neuron=neuron)
    Bp = permute(B, model, perms)
    sigma = match_neurons(template, A, model, neuron=neuron)
    back = invert_permutation(sigma)
    frame = flow_path(permute(A, model, sigma), permute(Bp, model, sigma), groups, flows, t1)
    points = [permute(Weights(frame.point(k), A.layout), model, back) for k in range(frame.K)]
    if t1[0] == 0.0:
        points[0] = A
    if t1[-1] == 1.0:
        points[-1] = Bp
    stage1 = PointSet.explicit(points, names=[f"t={v:.6g}" for v in t1])
    stage2, t2, swaps = transposition_path(B, model, perms, swap_points=swap_points)
    return two_stage_path(stage1, t1, stage2, t2, permutations=perms, swaps=swaps, method="flow", labels=FLOW_LABELS)
