"""Git Re-Basin: aligning two networks by permutations before connecting them linearly.

Two networks trained from different seeds differ, among other things, by a permutation of
the hidden channels of every group (:mod:`landscape.connect.structure`). Git Re-Basin
(Ainsworth, Hayase & Srinivasa, ICLR 2023) chooses those permutations so that ``B`` permuted,
``B' = P(B)``, lies close to ``A``; ``B'`` computes the same function as ``B`` and the
straight line from ``A`` to ``B'`` often has a much lower loss barrier than the line to ``B``.
Two ways of choosing them are here:

* :func:`weight_matching` maximises the inner product of the weights,

  .. math::

      \\max_{P} \\sum_l \\langle W^A_l, P_l W^B_l P_{l-1}^\\top \\rangle ,

  by coordinate descent over the groups: with every other group's permutation fixed the
  objective is linear in one group's permutation, a linear assignment problem whose cost is
  the sum over the group's tensors of ``A``'s channel rows times ``B``'s (their other axes
  already permuted); groups are visited in a seeded random order until a sweep changes none.
* :func:`activation_matching` runs both networks on the same data and pairs each channel of
  ``A`` with the channel of ``B`` whose activations correlate most with it, one assignment
  per group (activations do not depend on the permutations of other groups).

:func:`aligned_path` is the straight line from ``A`` to ``B'``; :func:`weight_matching_connection`
and :func:`activation_matching_connection` are the registered methods ``"weight-matching"``
and ``"activation-matching"`` (:mod:`landscape.connect.registry`).

Reference: S. K. Ainsworth, J. Hayase, S. Srinivasa, "Git Re-Basin: Merging Models modulo
Permutation Symmetries", ICLR 2023.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..batches import as_source
from ..pointset import PointSet
from ..weights import Weights
from .graph import Group, Part, permute_groups
from .paths import as_t, linear_coefficients, same_layout
from .result import Path
from .structure import structure

__all__ = [
    "activation_matching",
    "activation_matching_connection",
    "aligned_path",
    "channel_correlation",
    "weight_matching",
    "weight_matching_connection",
]

#: Samples per forward pass of :func:`activation_matching` when ``data`` is one tensor.
BATCH_SIZE = 256


def _maximize(score: torch.Tensor) -> torch.Tensor:
    """The permutation maximising :math:`\\sum_i S_{i, \\pi(i)}` (SciPy's Hungarian method)."""
    from scipy.optimize import linear_sum_assignment

    S = score.detach().cpu().numpy()
    rows, cols = linear_sum_assignment(S, maximize=True)
    perm = np.empty(S.shape[0], dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm)


def _checked_groups(A: Weights, B: Weights, model: nn.Module, groups) -> list[Group]:
    """The groups to match (default: the model's), once ``A`` and ``B`` are checked to be
    weights of ``model``."""
    same_layout(A, B)
    s = structure(model)
    s.check_weights(A, "A")
    s.check_weights(B, "B")
    if groups is None:
        return list(s.groups)
    groups = list(groups)
    for g in groups:
        if not isinstance(g, Group):
            raise TypeError(f"groups should be a list of Group (trace_groups(model)), got a {type(g).__name__}")
        for p in g.parts:
            want = g.size * p.block if p.plain else (p.total or p.span(g.size))
            if (
                p.name not in A.layout
                or A[p.name].shape[p.axis] < want
                or (p.plain and A[p.name].shape[p.axis] != want)
            ):
                raise ValueError(
                    f"group '{g.name}': part {p.name}[{p.axis}] does not fit the weights "
                    f"(expected {want} entries on that axis)"
                )
    return groups


class _WeightObjective:
    """The weight-matching objective of one pair ``(A, B)``, group by group, in float64.

    ``owners[(tensor, axis)]`` lists the groups and parts on that axis (several for the fused
    query/key/value axis of a transformer: the heads and the dimensions inside them, whose
    permutations commute); :meth:`score` is a group's assignment matrix with every other
    group's permutation applied to ``B``.
    """

    def __init__(self, A: Weights, B: Weights, groups: list[Group]):
        self.groups = groups
        self.owners: dict[tuple[str, int], list[tuple[Group, Part]]] = {}
        for g in groups:
            for p in g.parts:
                hits = self.owners.setdefault((p.name, p.axis), [])
                if all(q != p for _, q in hits):
                    hits.append((g, p))
        names = {p.name for g in groups for p in g.parts}
        self.A = {k: A[k].detach().to(torch.float64) for k in names}
        self.B = {k: B[k].detach().to(torch.float64) for k in names}

    def _aligned(self, name: str, skip: Group, perms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``B[name]`` with the permutation of every group but ``skip`` applied to its axes."""
        b = self.B[name]
        for ax in range(b.dim()):
            for h, q in self.owners.get((name, ax), ()):
                if h is not skip:
                    b = b.index_select(ax, h.index(perms[h.name], q, b.shape[ax]).to(b.device))
        return b

    def score(self, g: Group, perms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``S[i, j]``: the objective's share of putting channel ``j`` of ``B`` in slot ``i``,
        ``sum over parts of <A rows i, B rows j>`` with the other groups' permutations applied."""
        S = torch.zeros(g.size, g.size, dtype=torch.float64)
        for p in dict.fromkeys(g.parts):  # each part once (a tied tensor is one part)
            a_rows, b_rows = g.neuron_rows(self.A[p.name], p), g.neuron_rows(self._aligned(p.name, g, perms), p)
            S += (a_rows @ b_rows.T).cpu()
        return S


def weight_matching(
    A: Weights,
    B: Weights,
    model: nn.Module,
    *,
    max_iter: int = 100,
    seed: int = 0,
    groups: Sequence[Group] | None = None,
) -> dict[str, torch.Tensor]:
    """Permutations of ``B``'s channels that bring its weights closest to ``A``'s (Git Re-Basin's
    weight matching, Ainsworth et al. 2023, Algorithm 1).

    Maximises :math:`\\sum_l \\langle W^A_l, P_l W^B_l P_{l-1}^\\top \\rangle` over every tensor
    of every permutation group, by coordinate descent: each sweep visits the groups in a random
    order (seeded); for a group, with the others fixed, the objective is linear in its
    permutation, and one linear assignment (:func:`scipy.optimize.linear_sum_assignment`)
    maximises the sum over its parts (a layer's output rows, its bias and BatchNorm channel,
    the input slices of the layers that read it, in blocks where the tensor is flattened) of
    ``A``'s channel rows times ``B``'s, every other axis of those tensors permuted by the
    current permutation of its group. A group's permutation changes only when the objective
    increases, so the descent stops: when a whole sweep changes no group, or after
    ``max_iter`` sweeps. The groups of the dimensions inside attention heads join once the
    other groups have converged (a head's inner order means something only once the head is
    matched); the sweeps are shared. Sums are formed in float64.

    Parameters
    ----------
    A, B : Weights
        Two weight points of ``model``.
    model : nn.Module
        Any network whose channels :func:`~landscape.connect.structure.structure` follows.
    max_iter : int
        Most sweeps over the groups.
    seed : int
        Seed of the order the groups are visited in; the same seed gives the same result.
    groups : list of Group, optional
        The groups to permute (default: every group of ``model``); the axes of other groups
        stay as they are.

    Returns
    -------
    dict of str to LongTensor[n]
        For every group, ``perm[i]`` is the channel of ``B`` put in slot ``i``:
        :func:`~landscape.connect.graph.permute_groups` ``(B, groups, perms)`` is ``B``
        aligned to ``A``, computing the same function as ``B``.

    Raises
    ------
    ValueError
        ``A`` and ``B`` are not weights of ``model`` (layouts or shapes differ), or
        ``max_iter < 1``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect.graph import permute_groups, trace_groups
    >>> model = ls.build_model("mlp", {"widths": [16, 8]})
    >>> A = ls.Weights.from_module(model)
    >>> planted = {"1": torch.randperm(16), "3": torch.randperm(8)}
    >>> B = permute_groups(A, trace_groups(model), planted)
    >>> perms = weight_matching(A, B, model)
    >>> all(torch.equal(planted[k][perms[k]], torch.arange(len(perms[k]))) for k in perms)
    True
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter should be at least 1, got {max_iter}")
    groups = _checked_groups(A, B, model, groups)
    objective = _WeightObjective(A, B, groups)
    perms = {g.name: torch.arange(g.size) for g in groups}
    rng = np.random.default_rng(int(seed))
    # the dimensions inside attention heads (parts repeated once per head) join once the other
    # groups, the heads among them, have converged: a head's inner order is only defined once
    # the head is matched, and matched first the inner orders lock the heads in place
    inner = [g for g in groups if any(p.repeat > 1 for p in g.parts)]
    outer = [g for g in groups if g not in inner]
    sweeps = int(max_iter)
    for phase in [outer, outer + inner] if inner else [groups]:
        sweeps = _descend(objective, phase, perms, rng, sweeps)
    return perms


def _descend(objective: _WeightObjective, groups: list[Group], perms: dict, rng, sweeps: int) -> int:
    """Coordinate descent over ``groups`` (updating ``perms``) until a sweep changes none or
    ``sweeps`` are spent; the sweeps left."""
    while sweeps > 0:
        sweeps -= 1
        changed = False
        for k in rng.permutation(len(groups)):
            g = groups[int(k)]
            S = objective.score(g, perms)
            new = _maximize(S)
            rows = torch.arange(g.size)
            gain = float(S[rows, new].sum() - S[rows, perms[g.name]].sum())
            if gain > 1e-12 * max(1.0, float(S.abs().max())) and not torch.equal(new, perms[g.name]):
                perms[g.name] = new
                changed = True
        if not changed:
            break
    return sweeps


# ---------------------------------------------------------------------------- activations
class _Recorder:
    """Forward hooks on the modules whose outputs carry the wanted groups' channels
    (:attr:`~landscape.connect.structure.Structure.activation_modules`): the same for traced
    networks and for the transformers read from their module tree."""

    def __init__(self, model: nn.Module, wanted: dict[str, tuple[str, int]]):
        self.values: list[tuple[str, int, torch.Tensor]] = []
        self.handles = [
            model.get_submodule(name).register_forward_hook(self._hook(grp, axis))
            for name, (grp, axis) in wanted.items()
        ]

    def _hook(self, grp: str, axis: int):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            self.values.append((grp, axis, out))

        return hook

    def take(self) -> list[tuple[str, int, torch.Tensor]]:
        out, self.values = self.values, []
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _input_batches(data, batches: int | None) -> Iterator[tuple[tuple, dict]]:
    """``(args, kwargs)`` of the model for every batch of ``data`` (at most ``batches``)."""
    if batches is not None and int(batches) < 1:
        raise ValueError(f"batches should be at least 1 (or None for all), got {batches}")
    if torch.is_tensor(data):
        chunks = (((x,), {}) for x in data.split(BATCH_SIZE)) if data.dim() else iter(())
    else:
        chunks = ((b.args, b.kwargs) for b in as_source(data).batches(BATCH_SIZE, "cpu", split=True))
    for i, item in enumerate(chunks):
        if batches is not None and i >= int(batches):
            return
        yield item


def _channel_samples(x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """An activation with its ``C`` channels on ``axis`` (1 for ``[N, C, ...]``, -1 for
    ``[N, ..., C]``) as ``[N * positions, C]`` samples of the channels."""
    if x.dim() < 2:
        raise ValueError(f"an activation of shape {list(x.shape)} has no channel axis {axis}")
    x = x.detach().to(torch.float64).movedim(axis, -1)
    return x.reshape(-1, x.shape[-1])


class _Moments:
    """Sums that give the Pearson correlation of two sets of channels, accumulated in float64."""

    def __init__(self, n: int):
        self.count = 0
        self.sa = torch.zeros(n, dtype=torch.float64)
        self.sb = torch.zeros(n, dtype=torch.float64)
        self.saa = torch.zeros(n, dtype=torch.float64)
        self.sbb = torch.zeros(n, dtype=torch.float64)
        self.sab = torch.zeros(n, n, dtype=torch.float64)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.cpu(), b.cpu()
        self.count += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab += a.T @ b

    def correlation(self) -> torch.Tensor:
        n = max(self.count, 1)
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - ma[:, None] * mb[None, :]
        va = (self.saa / n - ma * ma).clamp_min(0.0)
        vb = (self.sbb / n - mb * mb).clamp_min(0.0)
        scale = float(torch.cat([va, vb]).max()) if self.count else 0.0
        eps = 1e-12 * scale + 1e-300  # a constant channel correlates with nothing
        return cov / torch.sqrt((va[:, None] + eps) * (vb[None, :] + eps))


def channel_correlation(
    A: Weights, B: Weights, model: nn.Module, data, *, batches: int | None = None, groups=None
) -> dict[str, torch.Tensor]:
    """The Pearson correlation of every channel of ``A`` with every channel of ``B``, per group.

    Both networks run on the same inputs in eval mode (the model's own mode is restored);
    every module whose output carries a group's channels
    (:attr:`~landscape.connect.structure.Structure.activation_modules`: a layer, its BatchNorm
    or LayerNorm, activation and pooling modules; channels on axis 1 of a convnet's
    ``[N, C, H, W]``, last in a transformer's ``[N, T, d]``) gives one sample per example and
    position; a group's samples from all its modules are pooled. Moments are summed in float64.

    Returns
    -------
    dict of str to Tensor[n, n] (float64)
        ``C[i, j]``: correlation of channel ``i`` of ``A`` with channel ``j`` of ``B``; a
        channel that is constant on the data correlates 0 with everything.
    """
    groups = _checked_groups(A, B, model, groups)
    s = structure(model)
    names = {g.name for g in groups}
    wanted = {m: (grp, axis) for m, (grp, axis) in s.activation_modules.items() if grp in names}
    missing = names - {grp for grp, _ in wanted.values()}
    if missing:
        raise ValueError(f"groups {sorted(missing)} have no activation to match on")
    moments = {g.name: _Moments(g.size) for g in groups}
    modes = {m: m.training for m in model.modules()}
    rec = _Recorder(model, wanted)
    model.eval()
    try:
        ta, tb = dict(A.tensors), dict(B.tensors)
        like = next((v for v in ta.values() if v.is_floating_point()), torch.zeros(()))

        def put(v):  # inputs on the weights' device, floating ones in their dtype
            if not torch.is_tensor(v):
                return v
            return v.to(like.device, like.dtype if v.is_floating_point() else None)

        with torch.no_grad():
            for args, kwargs in _input_batches(data, batches):
                args, kwargs = tuple(put(a) for a in args), {k: put(v) for k, v in kwargs.items()}
                functional_call(model, ta, args, kwargs)
                outs_a = rec.take()
                functional_call(model, tb, args, kwargs)
                for (grp, axis, xa), (_, _, xb) in zip(outs_a, rec.take()):
                    moments[grp].add(_channel_samples(xa, axis), _channel_samples(xb, axis))
    finally:
        rec.close()
        for m, mode in modes.items():
            m.train(mode)
    if any(m.count == 0 for m in moments.values()):
        raise ValueError("activation matching got no data (0 samples); expected inputs to run both networks on")
    return {g.name: moments[g.name].correlation() for g in groups}


def activation_matching(
    A: Weights,
    B: Weights,
    model: nn.Module,
    data,
    *,
    batches: int | None = None,
    groups: Sequence[Group] | None = None,
) -> dict[str, torch.Tensor]:
    """Permutations of ``B``'s channels that pair each channel of ``A`` with the channel of
    ``B`` whose activations correlate most with it (Git Re-Basin's activation matching,
    Ainsworth et al. 2023).

    For every group one linear assignment maximises the total Pearson correlation
    (:func:`channel_correlation`) between ``A``'s channels and the channels of ``B`` put in
    their slots. No iteration is needed: a group's activations do not depend on the other
    groups' permutations.

    Parameters
    ----------
    A, B : Weights
        Two weight points of ``model``.
    model : nn.Module
        Any network whose channels :func:`~landscape.connect.structure.structure` follows.
    data : Tensor, TensorData, (x, y), DataLoader or iterable of batches
        The inputs both networks run on (a tensor: the model's inputs, in batches of
        :data:`BATCH_SIZE`; otherwise anything :func:`landscape.evaluate` takes).
    batches : int, optional
        Use the first ``batches`` batches only (default: all).
    groups : list of Group, optional
        The groups to permute (default: every group of ``model``).

    Returns
    -------
    dict of str to LongTensor[n]
        As :func:`weight_matching`: :func:`~landscape.connect.graph.permute_groups`
        ``(B, groups, perms)`` is ``B`` aligned to ``A``.

    Raises
    ------
    ValueError
        ``A`` and ``B`` are not weights of ``model``, or ``data`` gives no batch.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.connect.graph import permute_groups, trace_groups
    >>> model = ls.build_model("mlp", {"widths": [16]})
    >>> A = ls.Weights.from_module(model)
    >>> B = permute_groups(A, trace_groups(model), {"1": torch.randperm(16)})
    >>> perms = activation_matching(A, B, model, torch.randn(200, 64))
    >>> torch.equal(permute_groups(B, trace_groups(model), perms)["1.weight"], A["1.weight"])
    True
    """
    corr = channel_correlation(A, B, model, data, batches=batches, groups=groups)
    return {name: _maximize(C) for name, C in corr.items()}


# ---------------------------------------------------------------------------- paths
def aligned_path(A: Weights, B: Weights, model: nn.Module, perms: dict[str, torch.Tensor], t, *, method: str) -> Path:
    """The straight line from ``A`` to ``B' = permute_groups(B, groups, perms)``.

    Returns
    -------
    Path
        One stage, method ``method``; basis ``[A, B']`` (names ``"A"``, ``"B'"``),
        coefficients ``[1 - t, t]``; attribute ``permutations`` (``perms``). Its last point is
        ``B'``, which computes the same function as ``B`` (BatchNorm statistics move with
        their channels).
    """
    same_layout(A, B)
    t = as_t(t)
    aligned = permute_groups(B, structure(model).groups, perms)
    points = PointSet.from_weights([A, aligned], linear_coefficients(t), names=["A", "B'"])
    return Path(points, t, method=method, permutations=dict(perms))


def weight_matching_connection(
    A: Weights, B: Weights, model: nn.Module, data=None, *, t, max_iter: int = 100, seed: int = 0, **options: Any
) -> Path:
    """The registered ``"weight-matching"``: the line from ``A`` to ``B`` aligned by
    :func:`weight_matching` (:func:`aligned_path`)."""
    perms = weight_matching(A, B, model, max_iter=max_iter, seed=seed)
    return aligned_path(A, B, model, perms, t, method="weight-matching")


def activation_matching_connection(
    A: Weights, B: Weights, model: nn.Module, data, *, t, batches: int | None = None, **options: Any
) -> Path:
    """The registered ``"activation-matching"``: the line from ``A`` to ``B`` aligned by
    :func:`activation_matching` on ``data`` (the batch :func:`~landscape.connect.compare_connections`
    passes: the inputs of the first split, or ``wa_data``)."""
    if data is None:
        raise ValueError("activation-matching needs data (inputs to run both networks on); got None")
    perms = activation_matching(A, B, model, data, batches=batches)
    return aligned_path(A, B, model, perms, t, method="activation-matching")
