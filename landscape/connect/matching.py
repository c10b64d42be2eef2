"""Connection by optimal transport of hidden neurons (Anokhin & Yarotsky, ICML 2020).

Stage 1 treats the neurons of each hidden layer of ``A`` and ``B`` as two unordered sets,
matches them by optimal transport (a permutation :math:`\\pi`, since both sets are uniform
with ``n`` atoms) and interpolates the matched neurons linearly:

.. math::

    \\psi_i(t) = (1-t)\\,\\theta^A_i + t\\,\\theta^B_{\\pi(i)} ,

i.e. the straight line from ``A`` to ``B' = B`` with its neurons reordered to match ``A``
(``B'`` computes the same function as ``B``). Stage 2 goes from ``B'`` to ``B``
"permuting the neurons one by one to get the right order": the permutation is written as a
product of transpositions, and each transposition moves two neurons linearly into each
other's slots while all other neurons stay. Between two swaps the network is an exact
reordering of ``B``; during a swap only two neurons differ from it.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..pointset import PointSet
from ..weights import Weights
from .graph import Group, permute_groups, slot_index
from .neurons import check_permutation, permute
from .paths import as_t, concatenate_paths, linear_path, same_layout
from .result import Path
from .structure import structure

__all__ = [
    "NEURONS",
    "OT_LABELS",
    "SOLVERS",
    "OTPath",
    "assignment",
    "check_neuron",
    "match_groups",
    "match_neurons",
    "ot_path",
    "sq_dist",
    "transposition_path",
    "two_stage_path",
]

#: What a neuron is in the matching cost: ``"blc"``, the paper's :math:`\theta_i = (b_i, l_i, c_i)`
#: (bias, incoming and outgoing weights; the default), or ``"bl"``, its bias and incoming
#: weights alone.
NEURONS = ("blc", "bl")

#: Assignment solvers: POT's exact transport (network simplex) or SciPy's Hungarian method.
SOLVERS = ("emd", "lsa")


def assignment(cost, solver: str = "emd") -> torch.Tensor:
    """The permutation minimising :math:`\\sum_i C_{i, \\pi(i)}`.

    With uniform weights on ``n`` atoms on each side, the optimal transport plan of
    :func:`ot.emd` is a permutation matrix divided by ``n`` (a vertex of the Birkhoff
    polytope), so OT matching and the linear assignment problem
    (:func:`scipy.optimize.linear_sum_assignment`) give the same cost.

    Parameters
    ----------
    cost : Tensor[n, n] or ndarray[n, n]
        :math:`C_{ij}`, the cost of sending neuron ``i`` of ``A`` to neuron ``j`` of ``B``.
    solver : {"emd", "lsa"}
        ``"emd"``: :func:`ot.emd` (POT); ``"lsa"``: SciPy's Hungarian algorithm.

    Returns
    -------
    LongTensor[n]
        ``perm[i]`` is the neuron of ``B`` matched to neuron ``i`` of ``A``.

    Examples
    --------
    >>> assignment(torch.tensor([[5.0, 0.0], [0.0, 5.0]])).tolist()
    [1, 0]
    """
    C = np.asarray(cost.detach().cpu().numpy() if torch.is_tensor(cost) else cost, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
        raise ValueError(f"cost should be a non-empty square matrix [n, n], got shape {list(C.shape)}")
    if not np.all(np.isfinite(C)):
        raise ValueError("cost holds NaN or Inf; expected finite distances between neurons")
    n = C.shape[0]
    if solver == "lsa":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(C)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        return torch.from_numpy(perm)
    if solver != "emd":
        raise ValueError(f"solver should be one of {SOLVERS}, got {solver!r}")
    import ot

    a = np.full(n, 1.0 / n)
    plan = ot.emd(a, a, C, numItermax=max(100_000, 50 * n * n))
    perm = plan.argmax(1)
    if len(np.unique(perm)) != n or not np.allclose(plan[np.arange(n), perm], 1.0 / n, rtol=1e-6, atol=0):
        raise RuntimeError(f"ot.emd returned a transport plan that is not a permutation for n={n}; try solver='lsa'")
    return torch.from_numpy(perm.astype(np.int64))


def sq_dist(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``Tensor[n, n]`` in float64."""
    X, Y = X.to(torch.float64), Y.to(torch.float64)
    D = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * X @ Y.T
    return D.clamp_min_(0.0)


def check_neuron(neuron: str) -> str:
    """``neuron`` if it is one of :data:`NEURONS`, else ValueError."""
    if neuron not in NEURONS:
        raise ValueError(f"neuron should be one of {NEURONS}, got {neuron!r}")
    return neuron


def _owner_axes(groups: list[Group]) -> dict[tuple[str, int], str]:
    """``(tensor, axis) -> group`` for every axis that belongs to a group."""
    return {(p.name, p.axis): g.name for g in groups for p in g.parts}


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


def match_neurons(
    A: Weights,
    B: Weights,
    model: nn.Module,
    *,
    neuron: str = "blc",
    solver: str = "emd",
    max_sweeps: int = 20,
) -> dict[str, torch.Tensor]:
    """Match the hidden neurons of ``B`` to those of ``A``, layer by layer (OT stage 1).

    The neuron of the paper is :math:`\\theta_i = (b_i, l_i, c_i)`: bias, incoming row and
    outgoing column. Hidden layer ``k`` is matched with the cost

    .. math::

        C_{ij} = \\lVert (b^A_i, l^A_i, c^A_i) - (b^B_j,\\; l^B_j P_{k-1},\\; P_{k+1} c^B_j) \\rVert^2

    where :math:`l^B_j P_{k-1}` is ``B``'s incoming row with its columns in the order of the
    permutation found for layer ``k-1`` and :math:`P_{k+1} c^B_j` its outgoing column with
    the rows in the order of layer ``k+1``: both are written in ``A``'s order of the
    neighbouring layers, as in the transitional network of the paper's code, whose next
    layer is ``A``'s. The parts are concatenated as they are (no scaling); the assignment is
    solved exactly (:func:`assignment`). For the last hidden layer :math:`c_i` is the column
    of the output layer, whose rows (the classes) need no matching; with one hidden layer
    the cost is the paper's exactly.

    With more hidden layers the order of layer ``k+1`` is not known yet when layer ``k`` is
    matched on the first sweep (from the input up); there the first sweep uses
    :math:`(b_i, l_i)` only, and further sweeps, with the latest permutations of both
    neighbours, repeat until nothing changes. Each sweep is coordinate descent on
    :math:`\\lVert A - \\pi(B) \\rVert^2`, so it stops.

    With ``neuron="bl"`` the cost is :math:`\\lVert (b^A_i, l^A_i) - (b^B_j, l^B_j P_{k-1}) \\rVert^2`
    (incoming weights only), one sweep.

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`), or any network
        :func:`~landscape.connect.graph.trace_groups` follows (then
        :func:`match_groups`: perms keyed by group name; a channel's
        outgoing part is the slices of the layers that read it).
    neuron : {"blc", "bl"}
        ``"blc"``: the paper's :math:`(b_i, l_i, c_i)` (default); ``"bl"``: bias and
        incoming weights only (:data:`NEURONS`).
    solver : {"emd", "lsa"}
        See :func:`assignment`.
    max_sweeps : int
        Upper bound on the sweeps with ``neuron="blc"``.

    Returns
    -------
    dict of str to LongTensor[n]
        For each hidden layer, ``perm[i]`` = the neuron of ``B`` matched to neuron ``i`` of
        ``A``; ``permute(B, model, perms)`` is ``B`` reordered to match ``A``.

    Notes
    -----
    On two ``64-128-10`` MLPs trained on digits the default gives the transport plan of the
    authors' code (``ot.dist`` of ``[l_i, b_i, c_i]``, ``ot.emd``) exactly, for all 128
    neurons; ``"bl"`` agreed on 76. Both costs recover planted permutations of a copy of ``A`` exactly. With Gaussian
    noise added to the permuted copy (per tensor, relative to its standard deviation) both
    recovered every neuron of trained digits MLPs (widths [64], [64, 32], [48, 48, 48]) up
    to noise 0.6x the weights' spread (at least 99% at 1x); beyond that ``"bl"`` did better
    with one hidden layer (82% vs 69% of neurons at 2x) and ``"blc"`` with two or three
    (83% vs 72% at 2x, three layers).
    """
    same_layout(A, B)
    check_neuron(neuron)
    outgoing = neuron == "blc"
    st = structure(model)
    chain = st.chain
    if chain is None:  # convolutional / residual networks: traced channel groups
        return match_groups(A, B, st.groups, solver=solver, max_sweeps=max_sweeps, neuron=neuron)
    chain.check_weights(A, "A")
    chain.check_weights(B, "B")
    hidden = chain.hidden
    perms: dict[str, torch.Tensor] = {}

    def incoming(w: Weights, layer: str, prev: torch.Tensor | None) -> list[torch.Tensor]:
        W = w[f"{layer}.weight"].detach().cpu()
        if prev is not None:
            W = W[:, prev]
        b = w.get(f"{layer}.bias")
        return [W] if b is None else [b.detach().cpu()[:, None], W]

    def outgoing_part(w: Weights, layer: str, nxt_perm: torch.Tensor | None) -> torch.Tensor:
        Wn = w[f"{chain.next(layer)}.weight"].detach().cpu()
        return (Wn if nxt_perm is None else Wn[nxt_perm]).T

    sweeps = max_sweeps if (outgoing and len(hidden) > 1) else 1
    for _ in range(sweeps):
        changed = False
        for k, layer in enumerate(hidden):
            prev = perms.get(hidden[k - 1]) if k > 0 else None
            xa, xb = incoming(A, layer, None), incoming(B, layer, prev)
            nxt = chain.next(layer)
            if outgoing and (nxt not in hidden or nxt in perms):
                xa.append(outgoing_part(A, layer, None))
                xb.append(outgoing_part(B, layer, perms.get(nxt)))
            p = assignment(sq_dist(torch.cat(xa, 1), torch.cat(xb, 1)), solver)
            if layer not in perms or not torch.equal(perms[layer], p):
                changed = True
            perms[layer] = p
        if not changed:
            break
    return perms


def _swap_coefficients(M: int, swap_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``[K, M + 1]`` over the states ``S_0..S_M`` and ``t[K]`` of ``M`` swaps
    with ``swap_points`` points inside each."""
    if M == 0:
        return np.ones((1, 1)), np.array([1.0])
    s = np.arange(swap_points + 1) / (swap_points + 1)
    K = M * (swap_points + 1) + 1
    coeffs = np.zeros((K, M + 1))
    t = np.zeros(K)
    for m in range(M):
        r = m * (swap_points + 1) + np.arange(swap_points + 1)
        coeffs[r, m] = 1.0 - s
        coeffs[r, m + 1] = s
        t[r] = (m + s) / M
    coeffs[-1, M] = 1.0
    t[-1] = 1.0
    return coeffs, t


def _swap_states(state: torch.Tensor, groups: list[Group], perms: dict[str, torch.Tensor], layout):
    """Undo ``perms`` on the flat vector ``state`` one transposition at a time (in place).

    Returns the states after every swap (``state`` first, cloned) and the swaps
    ``(group, i, j)``."""
    swaps: list[tuple[str, int, int]] = []
    states = [state.clone()]
    for g in groups:
        if g.name not in perms:
            continue
        idx = slot_index(layout, g)  # flat indices of every entry of each slot (channel)
        cur = perms[g.name].clone()  # cur[i]: the neuron of B in slot i
        pos = torch.argsort(cur)  # pos[v]: the slot holding neuron v of B
        for i in range(len(cur)):
            if int(cur[i]) == i:
                continue
            j = int(pos[i])
            ii, jj = idx[i], idx[j]
            vi = state[ii].clone()
            state[ii] = state[jj]
            state[jj] = vi
            vc = int(cur[i])
            cur[i], cur[j] = i, vc
            pos[i], pos[vc] = i, j
            swaps.append((g.name, i, j))
            states.append(state.clone())
    return states, swaps


def transposition_path(B: Weights, model: nn.Module, perms: dict[str, torch.Tensor], *, swap_points: int = 1) -> Path:
    """From ``permute(B, model, perms)`` back to ``B``, swapping two neurons at a time.

    Each hidden layer's permutation is written as the fewest transpositions (``n`` minus the
    number of its cycles). Swap ``m`` exchanges the neurons in slots ``i`` and ``j`` of one
    layer along the straight line

    .. math::

        S_m(s) = (1-s)\\,S_m + s\\,S_{m+1}, \\qquad s \\in [0, 1],

    where the states :math:`S_m` are reorderings of ``B`` (each computes ``B``'s function)
    and :math:`S_{m+1} - S_m` is non-zero only in the two neurons' entries (rows, biases and
    outgoing columns; for a channel group every entry of its parts). The point set's basis
    is the ``M + 1`` states, so it takes ``M + 1`` flat weight vectors of memory.

    Parameters
    ----------
    B : Weights
        Weights of ``model`` (the end of the path).
    model : nn.Module
        A plain MLP stack or any network :func:`~landscape.connect.graph.trace_groups`
        follows (a slot is then a channel of a group).
    perms : dict of str to LongTensor[n]
        The start is ``permute(B, model, perms)``.
    swap_points : int
        Points inside each swap, at ``s = q / (swap_points + 1)``, ``q = 1..swap_points``.

    Returns
    -------
    Path
        Method ``"transpositions"``; unpacks as ``points, t, swaps``:

        points : PointSet
            ``M (swap_points + 1) + 1`` points: each state, then the points inside its swap;
            the first is ``permute(B, model, perms)`` and the last is ``B``, bit for bit.
        t : ndarray[K]
            ``(m + s) / M`` in ``[0, 1]`` (a single point at ``t = 1`` when there is no swap).
        swaps : list of (str, int, int)
            ``(layer, i, j)`` of every swap, in order (also the attribute ``swaps``).
    """
    if int(swap_points) != swap_points or swap_points < 0:
        raise ValueError(f"swap_points should be a non-negative integer, got {swap_points!r}")
    st = structure(model)
    st.check_weights(B, "B")
    perms = {layer: check_permutation(p, st.group(layer).size, layer) for layer, p in perms.items()}
    start = permute(B, model, perms)
    end = B.flatten()
    states, swaps = _swap_states(start.flatten(), st.groups, perms, B.layout)
    if not torch.equal(states[-1], end):  # pragma: no cover - guards the index arithmetic
        raise RuntimeError("transposition_path did not arrive at B; this is a bug")
    states[-1] = end
    M = len(swaps)
    coeffs, t = _swap_coefficients(M, int(swap_points))
    extras = {e.name: B[e.name] for e in B.layout if not e.flat}
    names = [f"S{m}" for m in range(M + 1)]
    points = PointSet(torch.stack(states), coeffs, B.layout, extras=extras, names=names)
    return Path(
        points,
        t,
        labels=(OT_LABELS[1],),
        method="transpositions",
        unpack=("points", "t", "swaps"),
        swaps=swaps,
    )


#: The stages of an OT connection: stage 1 in the matched neurons, stage 2 of swaps.
OT_LABELS = ("linear in the matched neurons", "swaps of two neurons")

#: The result of :func:`ot_path`, kept under its former name: an OT connection is a
#: :class:`~landscape.connect.result.Path` with the attributes ``stage1``, ``t1``, ``stage2``,
#: ``t2``, ``permutations`` and ``swaps``.
OTPath = Path


def two_stage_path(
    stage1: PointSet,
    t1,
    stage2: PointSet,
    t2,
    *,
    permutations: dict[str, torch.Tensor],
    swaps: list[tuple[str, int, int]],
    method: str = "ot",
    labels: tuple[str, str] = OT_LABELS,
    **attrs: Any,
) -> Path:
    """Two stages joined into one :class:`~landscape.connect.result.Path`, as OT makes them.

    The points are both stages end to end (:func:`~landscape.connect.concatenate_paths`:
    stage 1 on ``t in [0, 1/2]``, stage 2 on ``[1/2, 1]``, the shared point once), ``stage``
    is 1 or 2 per point, and the stages stay attributes: ``stage1``, ``t1``, ``stage2``,
    ``t2``, with ``permutations`` and ``swaps``. A flat stage 2 (the swaps) is kept as rows
    of the joined basis, so the swaps are held once.

    Parameters
    ----------
    stage1, stage2 : PointSet
        Stage 1 ends where stage 2 begins.
    t1, t2 : array-like
        Their parameters (increasing).
    permutations : dict of str to LongTensor[n]
        The matching: stage 1 ends at ``permute(B, model, permutations)``.
    swaps : list of (str, int, int)
        The transpositions of stage 2.
    method : str
        The method's registered name.
    labels : (str, str)
        A word for each stage.
    **attrs
        More attributes of the path (REPAIR's ``sites`` and ``unrepaired``).
    """
    t1, t2 = as_t(t1), as_t(t2)
    stage1, stage2 = getattr(stage1, "points", stage1), getattr(stage2, "points", stage2)
    t, joined = concatenate_paths([stage1, stage2], [t1, t2])
    basis = joined.basis
    if stage2._flat is not None and stage2._flat.dtype == basis.dtype:  # share the swaps' states
        stage2 = PointSet(basis[stage1.J :], stage2.coeffs, stage2.layout, extras=stage2.extras, names=stage2.names)
    stage = np.where(np.arange(joined.K) < stage1.K, 1, 2)
    return Path(
        joined,
        t,
        stage,
        labels,
        method=method,
        stage1=stage1,
        t1=t1,
        stage2=stage2,
        t2=t2,
        permutations=permutations,
        swaps=list(swaps),
        **attrs,
    )


def ot_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    t=None,
    *,
    neuron: str = "blc",
    solver: str = "emd",
    swap_points: int = 1,
    permutations: dict[str, torch.Tensor] | None = None,
) -> Path:
    """OT connection of Anokhin & Yarotsky (2020): match neurons, interpolate, reorder.

    .. math::

        \\text{stage 1: } \\psi(t) = (1-t)A + tB', \\quad B' = \\pi(B); \\qquad
        \\text{stage 2: } B' \\to B \\text{ by single transpositions.}

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`), or a
        convolutional / residual network (channels as neurons, see
        :func:`~landscape.connect.graph.trace_groups`).
    t : array-like [T], optional
        Stage-1 parameters (default ``linspace(0, 1, 11)``).
    neuron, solver
        See :func:`match_neurons`: the neuron is the paper's :math:`(b_i, l_i, c_i)` by
        default, ``neuron="bl"`` matches on bias and incoming weights alone.
    swap_points : int
        Points inside each swap of stage 2 (:func:`transposition_path`).
    permutations : dict, optional
        A matching to use instead of computing one.

    Returns
    -------
    Path
        Method ``"ot"``, labels :data:`OT_LABELS` (made by :func:`two_stage_path`): the points
        of both stages joined (stage 1 on ``t in [0, 1/2]``, stage 2 on ``[1/2, 1]``),
        ``stage`` 1 or 2 per point, and the attributes ``stage1`` (``A`` to ``B'``, linear in
        the matched neurons, starting at ``A`` bit for bit), ``t1``, ``stage2`` (``B'`` to
        ``B`` by swaps of two neurons, :func:`transposition_path`, ending at ``B`` bit for
        bit), ``t2``, ``permutations`` (``B' = permute(B, model, permutations)``) and
        ``swaps``. Evaluate the stages separately (the paper reports each) or the whole
        path. :data:`OTPath` is another name of :class:`~landscape.connect.result.Path`.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = permute(a, model, {"1": torch.tensor([3, 1, 2, 0, 4, 5, 7, 6])})
    >>> path = ot_path(a, b, model, [0.0, 1.0])
    >>> path.permutations["1"].tolist(), path.swaps
    ([3, 1, 2, 0, 4, 5, 7, 6], [('1', 0, 3), ('1', 6, 7)])
    >>> path.K, path.stage.tolist(), path.t.tolist()
    (6, [1, 1, 2, 2, 2, 2], [0.0, 0.5, 0.625, 0.75, 0.875, 1.0])
    """
    t1 = as_t(np.linspace(0.0, 1.0, 11) if t is None else t)
    same_layout(A, B)
    perms = permutations if permutations is not None else match_neurons(A, B, model, neuron=neuron, solver=solver)
    Bp = permute(B, model, perms)
    stage1 = linear_path(A, Bp, t1).points
    stage2 = transposition_path(B, model, perms, swap_points=swap_points)
    return two_stage_path(stage1, t1, stage2.points, stage2.t, permutations=perms, swaps=stage2.swaps)
