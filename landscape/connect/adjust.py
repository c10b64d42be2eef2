"""Weight Adjustment (WA) connections and transitional networks (Anokhin & Yarotsky, ICML 2020).

Two-layer block
---------------
For a block :math:`Y = W_2\\,\\phi(W_1 X + b_1) + b_2` the first layer is connected by any
path :math:`W_1(t), b_1(t)` (Linear, Arc, OT), and the second layer is *adjusted* on a data
batch :math:`X` (rows are samples) by least squares, the pseudo-inverse solution
(:func:`weight_adjustment`), in one of two formulations (:data:`WA_FORMS`).

``"paper"`` (Anokhin & Yarotsky): the second layer keeps ``A``'s output :math:`Y_A` (the
logits on ``X``) with no bias column,

.. math::

    W_2(t) = (Y_A - b_2^A)^\\top \\bigl[\\phi(X W_1(t)^\\top + b_1(t))^\\top\\bigr]^+,
    \\qquad b_2(t) = b_2^A

(the paper's :math:`W_2(t) = Y [\\phi(W_1(t) X)]^+`, samples as columns), and the path has
two phases, each on half of ``[0, 1]``: phase 1 moves the first layer from ``A``'s to ``B``'s
with the adjusted second layer; phase 2 keeps ``B``'s first layer and moves the second from
:math:`(W_2(1), b_2^A)` to ``B``'s: the straight line for Linear and OT, the Arc for Arc
(around the mean row of the two matrices, as in the authors' code).

``"bias"``: one phase; a bias column is fitted with the weights and the block's output
follows the interpolated outputs of the two ends:

.. math::

    H(t) = \\bigl[\\phi(X W_1(t)^\\top + b_1(t)) \\;\\big|\\; \\mathbf 1\\bigr], \\qquad
    Y(s) = (1-s)\\,Y_A + s\\,Y_B, \\qquad
    [W_2(t) \\,|\\, b_2(t)]^\\top = H(t)^+\\, Y(s),

with :math:`s = t` for Linear and Arc; for OT, :math:`s` is the stage-1 parameter during
stage 1 (``A`` to ``B'``, ``B`` with its hidden neurons matched to ``A``'s) and 1 during
stage 2 (``B'`` to ``B``, the same function as ``B``). At :math:`t=0` the first layer is
:math:`W_1^A` exactly and :math:`Y_A = H_A [W_2^A | b_2^A]^\\top`, so the solution is
:math:`[W_2^A | b_2^A]` itself whenever :math:`H_A` has full column rank (more samples than
hidden units + 1 and no dead unit); likewise at :math:`t = 1`. With fewer samples the system
is under-determined: the minimum-norm solution still reproduces :math:`Y_A` on the batch but
not :math:`W_2^A` (nor the outputs on other inputs).

Multi-layer networks
--------------------
Layers are numbered by the network's ``nn.Linear`` modules, input to output:
layer 1 is the first Linear (``"1"`` in :class:`~landscape.models.mlp.MLP`), layer ``n`` the
last (the logits). :math:`h_0 = X` (after a leading ``Flatten``),
:math:`z_k = h_{k-1} W_k^\\top + b_k` is the output of layer ``k`` (pre-activation) and
:math:`h_k = \\phi(z_k)`. The transitional network :math:`\\Theta_k^{AB}` has ``B``'s layers
``1..k-1``, a transitional layer ``k`` fitted by WA to map ``B``'s features
:math:`h^B_{k-1}` to ``A``'s layer-``k`` output :math:`z^A_k`, and ``A``'s layers
``k+1..n``:

.. math::

    [W_k^{AB} \\,|\\, b_k^{AB}]^\\top = \\bigl[h^B_{k-1} \\,|\\, \\mathbf 1\\bigr]^+ z^A_k,
    \\qquad \\Theta_1^{AB} = A, \\quad \\Theta_{n+1}^{AB} = B.

The path :math:`A = \\Theta_1^{AB} \\to \\Theta_2^{AB} \\to \\dots \\to \\Theta_n^{AB} \\to B`
changes two adjacent layers per step: step ``k < n`` connects layers ``(k, k+1)`` of
:math:`\\Theta_k^{AB}` and :math:`\\Theta_{k+1}^{AB}` as a two-layer block on the fixed input
:math:`h^B_{k-1}` (layer ``k`` by Linear/Arc/OT, layer ``k+1`` by WA); the last step only
changes layer ``n``, on fixed features :math:`h^B_{n-1}`, where the WA solution
:math:`((1-t) Y_{\\Theta_n} + t Y_B) H^+` is the straight line between the two last layers
(when :math:`H` has full column rank), so that step is the straight line.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..pointset import PointSet
from ..weights import Weights
from .adjust_graph import residual_transitional_network, residual_wa_path, steps_path
from .lstsq import assemble, weight_adjustment
from .matching import assignment, match_neurons, ot_path, sq_dist
from .paths import arc_coefficients, arc_path, as_t, concatenate_paths, linear_coefficients, linear_path
from .result import Path
from .stack import LayerStack, NotSequentialError
from .structure import UnsupportedModelError

__all__ = [
    "WA_FORMS",
    "WA_METHODS",
    "LayerStack",
    "NotSequentialError",
    "check_form",
    "layer_outputs",
    "multilayer_wa_path",
    "transitional_network",
    "wa_layer_count",
    "wa_path",
    "weight_adjustment",
]

#: First-layer connections that WA can be combined with.
WA_METHODS = ("linear", "arc", "ot")

#: Formulations of the adjustment: ``"paper"`` (Anokhin & Yarotsky: no bias column, the
#: adjusted layer keeps ``A``'s bias and reproduces ``A``'s output; one hidden layer: two
#: phases) and ``"bias"`` (a bias column fitted with the weights, the output interpolated
#: between the two ends; one phase).
WA_FORMS = ("paper", "bias")


def check_form(wa_form: str) -> str:
    if wa_form not in WA_FORMS:
        raise ValueError(f"wa_form should be one of {WA_FORMS}, got {wa_form!r}")
    return wa_form


#: Elements of ``T * N * (m + 1)`` feature matrices solved at once (float64: 256 MiB).
_CHUNK_ELEMENTS = 1 << 25


def wa_layer_count(model: nn.Module) -> int:
    """The number of weighted layers ``L`` that weight adjustment works through.

    The layers of an MLP stack, or the ``Conv2d`` / ``Linear`` layers of a sequential
    convolutional network (BatchNorm, activations, pooling and ``flatten`` between them).
    WA-ensembles (:func:`~landscape.connect.wa_ensemble`) take head sizes ``1..L``
    (``L``: the ordinary ensemble); multilayer WA paths have ``L - 1`` transitional steps.

    Raises
    ------
    UnsupportedModelError
        The network is not sequential (residual additions; :class:`NotSequentialError`)
        or cannot be traced.
    ValueError
        A layer weight adjustment cannot pass through (an activation with parameters).

    Examples
    --------
    >>> import landscape as ls
    >>> wa_layer_count(ls.build_model("mlp", {"in_features": 4, "widths": [8, 8], "num_classes": 3}))
    3
    """
    return LayerStack(model).n


def layer_outputs(weights: Weights, model: nn.Module, X) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and features of every layer of a plain MLP stack, in float64.

    .. math::

        h_0 = X, \\qquad z_k = h_{k-1} W_k^\\top + b_k, \\qquad h_k = \\phi_k(z_k), \\qquad k = 1..n

    Parameters
    ----------
    weights : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`); only its structure
        and activations are used.
    X : Tensor[N, ...] or TensorData
        Inputs (a leading ``Flatten`` of the model is applied).

    Returns
    -------
    z : list of Tensor[N, d_k]
        ``z[k-1]`` is the output of layer ``k`` (``z[-1]``: the logits).
    h : list of Tensor[N, d_k]
        ``h[k]`` is the input of layer ``k+1`` (``h[0]``: the flattened input).
    """
    st = LayerStack(model)
    st.check_weights(weights, "weights")
    h = [st.input(X)]
    z = []
    for k in range(1, st.n + 1):
        z.append(st.linear(weights, k, h[-1]))
        if k < st.n:
            h.append(st.act(k, z[-1], weights))
    return z, h


# ---------------------------------------------------------------------------- blocks
def _layer_points(points: PointSet, st: LayerStack, k: int) -> dict[str, torch.Tensor]:
    """Layer ``k``'s weight, bias and following BatchNorm parameters at every point, float64."""
    name = st.layer(k)
    keys = [f"{name}.weight", f"{name}.bias", *st.bn_entries(k)]
    return {e: points.entry(e, dtype=torch.float64) for e in keys if e in points.layout}


def _first_layer_path(
    start: Weights,
    end: Weights,
    model: nn.Module,
    st: LayerStack,
    k: int,
    t,
    method: str,
    *,
    solver: str,
    swap_points: int,
    permutations,
    neuron: str,
):
    """Points of the block's first layer ``k``; returns (t_out, s, P) with ``P`` the layer's
    entries (weight, bias, BatchNorm parameters after it) at every point, ``Tensor[T, ...]``.

    ``s`` is the interpolation parameter of the outputs: ``t`` for Linear and Arc; for OT the
    stage-1 parameter during stage 1 and 1 during stage 2 (a reordering of ``end``).
    """
    name = st.layer(k)
    if method == "linear":
        t = as_t(t)
        return t, t, _layer_points(linear_path(start, end, t), st, k)
    if method == "arc":
        t = as_t(t)
        return t, t, _layer_points(arc_path(start, end, model, t), st, k)
    if method == "ot":
        if permutations is None:
            if st.n == 2:
                permutations = match_neurons(start, end, model, neuron=neuron, solver=solver)
            else:
                permutations = {name: _match_layer(start, end, st, k, solver)}
        path = ot_path(start, end, model, t, swap_points=swap_points, permutations=permutations)
        t_out, joined = path.joined()
        n1 = path.stage1.K
        s = np.concatenate([path.t1, np.ones(len(t_out) - n1)])
        return t_out, s, _layer_points(joined, st, k)
    raise ValueError(f"method should be one of {WA_METHODS}, got {method!r}")


def _match_layer(start: Weights, end: Weights, st: LayerStack, k: int, solver: str) -> torch.Tensor:
    """Match the neurons (filters) of layer ``k`` by their incoming weights, bias and
    BatchNorm parameters (the layers below are shared, so no permutation of the inputs is
    needed)."""
    name = st.layer(k)
    keys = [f"{name}.weight", f"{name}.bias", *st.bn_entries(k)]

    def rows(w: Weights) -> torch.Tensor:
        parts = [w[e].detach().cpu().reshape(w[e].shape[0], -1) for e in keys if e in w.layout]
        return torch.cat(parts, 1)

    return assignment(sq_dist(rows(start), rows(end)), solver)


def _reorderings(P1: dict[str, torch.Tensor], s: np.ndarray) -> tuple[np.ndarray, list]:
    """Points whose first layer is a row reordering of an earlier point's at the same ``s``.

    ``P1`` holds the layer's entries (weight, bias, BatchNorm parameters) at every point;
    row ``r`` of a point is neuron ``r``'s values in all of them. Returns ``src[T]`` (``-1``,
    or the earlier point) and ``perm[T]`` (for a reordering: ``perm[i][r]`` is the row of
    point ``src[i]`` equal to row ``r`` of point ``i``). The states
    of OT's stage 2 are such reorderings, and their least-squares second layers are the
    same columns reordered (the minimum-norm solution commutes with column permutations of
    the features), so only one of them needs solving.
    """
    import hashlib

    first = next(iter(P1.values()))
    T, m = first.shape[0], first.shape[1]
    src, perm = np.full(T, -1, np.int64), [None] * T
    rows = torch.cat([v.reshape(T, m, -1) for v in P1.values()], -1)
    seen: dict[tuple[float, bytes], tuple[int, dict[bytes, list[int]]]] = {}
    for i in range(T):
        keys = [r.tobytes() for r in rows[i].contiguous().numpy()]
        digest = hashlib.sha1(b"".join(sorted(keys))).digest()
        ref = seen.get((float(s[i]), digest))
        if ref is None:
            where: dict[bytes, list[int]] = {}
            for r, key in enumerate(keys):
                where.setdefault(key, []).append(r)
            seen[(float(s[i]), digest)] = (i, where)
            continue
        j, where = ref
        used = {key: 0 for key in where}
        p = []
        for key in keys:
            slots = where.get(key)
            if slots is None or used[key] >= len(slots):  # pragma: no cover - a digest collision
                p = None
                break
            p.append(slots[used[key]])
            used[key] += 1
        if p is not None:
            src[i], perm[i] = j, torch.as_tensor(p)
    return src, perm


def _wa_block(st: LayerStack, k: int, h_in: torch.Tensor, P1: dict, Y0, Y1, s, *, bias: bool, ridge: float):
    """WA layer ``k + 1`` for every point of layer ``k``: W2[T, *shape], b2[T, o] (float64).

    ``P1``: layer ``k``'s entries at every point; ``Y0``, ``Y1``: the two ends' outputs of
    layer ``k + 1`` as least-squares targets (:meth:`LayerStack.targets`)."""
    name = st.layer(k)
    W1, b1 = P1[f"{name}.weight"], P1.get(f"{name}.bias")
    T, m = W1.shape[0], W1.shape[1]
    shape2 = st.weight_shape(k + 1)
    s_np = np.asarray(s, dtype=np.float64)
    # reordered states reuse a solution by permuting its input channels (not through flatten)
    src, perm = _reorderings(P1, s_np) if shape2[1] == m else (np.full(T, -1, np.int64), [None] * T)
    solve = np.flatnonzero(src < 0)
    s = torch.as_tensor(s_np)
    rows = st.design(k + 1, st.act(k, st.linear({f"{name}.weight": W1[0]}, k, h_in[:1]), _at(P1, 0))).shape
    per_point = Y0.shape[0] * (rows[1] + 1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, per_point))
    fast = st.mlp  # MLP: every point's features in one product
    W2s, b2s = [], []
    for lo in range(0, len(solve), chunk):
        idx = torch.as_tensor(solve[lo : lo + chunk])
        if fast:
            z = torch.einsum("nd,tmd->tnm", h_in, W1[idx])
            if b1 is not None:
                z = z + b1[idx, None, :]
            H = st.act(k, z)
        else:
            H = torch.stack(
                [st.design(k + 1, st.act(k, st.linear(_at(P1, i), k, h_in), _at(P1, i))) for i in idx.tolist()]
            )
        sc = s[idx, None, None]
        Y = (1.0 - sc) * Y0 + sc * Y1
        W2, b2 = weight_adjustment(H, Y, bias=bias, ridge=ridge)
        W2s.append(W2.reshape(len(idx), *shape2))
        b2s.append(b2)
    W2u = torch.cat(W2s)
    W2 = W2u.new_empty(T, *shape2)
    W2[torch.as_tensor(solve)] = W2u
    b2 = None
    if bias:
        b2u = torch.cat(b2s)
        b2 = b2u.new_empty(T, *b2u.shape[1:])
        b2[torch.as_tensor(solve)] = b2u
    for i in np.flatnonzero(src >= 0):  # reorderings: the earlier solution's input channels
        W2[i] = W2[src[i]][:, perm[i]]
        if bias:
            b2[i] = b2[src[i]]
    return W2, b2


def _at(P: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Point ``i`` of per-point entries."""
    return {e: v[i] for e, v in P.items()}


def _wa_step(
    start: Weights,
    end: Weights,
    model: nn.Module,
    st: LayerStack,
    k: int,
    h_in: torch.Tensor,
    t,
    method: str,
    *,
    ridge: float,
    solver: str,
    swap_points: int,
    permutations,
    neuron: str,
    snap_ends: bool,
    wa_form: str = "bias",
    target: torch.Tensor | None = None,
    snap_last: bool = True,
):
    """Connect ``start`` to ``end`` (equal outside layers ``k``, ``k+1``) as a two-layer block.

    ``wa_form="bias"``: layer ``k+1`` with a bias column, fitted to the interpolation of the
    two ends' block outputs. ``"paper"``: no bias column; layer ``k+1`` keeps ``start``'s
    bias :math:`b` and its weight is :math:`(Y - b)\\,H(t)^+` with ``Y = target`` (the
    block output to keep, as least-squares targets; default ``start``'s). ``snap_last``:
    the last point may be replaced by ``end`` (with ``snap_ends``)."""
    l2 = st.layer(k + 1)
    t_out, s, P1 = _first_layer_path(
        start,
        end,
        model,
        st,
        k,
        t,
        method,
        solver=solver,
        swap_points=swap_points,
        permutations=permutations,
        neuron=neuron,
    )
    feats = lambda w: st.act(k, st.linear(w, k, h_in), w)  # noqa: E731
    has_b2 = st.has_bias(start, k + 1)
    if wa_form == "paper":
        Y = st.targets(k + 1, st.linear(start, k + 1, feats(start))) if target is None else target
        b_fixed = start[f"{l2}.bias"].to(torch.float64) if has_b2 else None
        if b_fixed is not None:
            Y = Y - b_fixed
        W2, _ = _wa_block(st, k, h_in, P1, Y, Y, np.zeros(len(t_out)), bias=False, ridge=ridge)
        b2 = None if b_fixed is None else b_fixed.expand(len(t_out), -1)
    else:
        Y0 = st.targets(k + 1, st.linear(start, k + 1, feats(start)))
        Y1 = st.targets(k + 1, st.linear(end, k + 1, feats(end)))
        W2, b2 = _wa_block(st, k, h_in, P1, Y0, Y1, s, bias=has_b2, ridge=ridge)
    updates = []
    for i in range(len(t_out)):
        u = {**_at(P1, i), f"{l2}.weight": W2[i]}
        if has_b2:
            u[f"{l2}.bias"] = b2[i]
        updates.append(u)
    points = assemble(start, updates)
    if snap_ends:
        for i, tv in enumerate(t_out):
            if tv == 0.0:
                points[i] = start
            elif tv == 1.0 and snap_last and (method != "ot" or i == len(t_out) - 1):
                points[i] = end
    return np.asarray(t_out, dtype=np.float64), points


def _second_layer_path(start: Weights, end: Weights, st: LayerStack, t, method: str) -> list[Weights]:
    """Phase 2 of the paper's WA for one hidden layer: only layer 2 moves, from ``start``'s
    (the adjusted layer, ``A``'s bias) to ``end``'s, by the straight line (Linear, OT) or
    the Arc. The Arc's centre is, as in the authors' code, the mean row of the two weight
    matrices (the layer's neurons are its rows) and the mean of the two biases."""
    t = as_t(t)
    name = st.layer(2)
    keys = [e for e in (f"{name}.weight", f"{name}.bias") if e in start.layout]
    if method == "arc":
        C = arc_coefficients(t)
    else:
        C = np.concatenate([np.zeros((len(t), 1)), linear_coefficients(t)], 1)
    C = torch.as_tensor(C, dtype=torch.float64)
    updates = [{} for _ in range(len(t))]
    for e in keys:
        a, b = start[e].to(torch.float64), end[e].to(torch.float64)
        mu = torch.cat([a, b]).mean(0, keepdim=True).expand_as(a) if a.dim() >= 2 else 0.5 * (a + b)
        for i in range(len(t)):
            updates[i][e] = C[i, 0] * mu + C[i, 1] * a + C[i, 2] * b
    points = assemble(start, updates)
    for i, tv in enumerate(t):  # the ends bit for bit
        if tv == 0.0:
            points[i] = start
        elif tv == 1.0:
            points[i] = end
    return points


def _residual_or_raise(error: Exception) -> None:
    """Re-raise ``error`` unless it says the network is not sequential because of a residual
    addition or branching (weight adjustment then goes through the cuts of its graph)."""
    if not isinstance(error, NotSequentialError):
        raise error


def wa_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    X,
    t=None,
    *,
    method: str = "linear",
    wa_form: str = "paper",
    ridge: float = 0.0,
    snap_ends: bool = False,
    solver: str = "emd",
    swap_points: int = 1,
    permutations: dict[str, torch.Tensor] | None = None,
    neuron: str = "bl",
) -> Path:
    """Linear + WA, Arc + WA or OT + WA between two networks with one hidden layer.

    The first layer :math:`(W_1(t), b_1(t))` follows :func:`~landscape.connect.linear_path`,
    :func:`~landscape.connect.arc_path` or the two stages of :func:`~landscape.connect.ot_path`
    and the second layer is fitted by least squares on the batch ``X`` in one of the two
    formulations of the module notes: ``wa_form="paper"`` (default), the second layer keeps
    ``A``'s output with ``A``'s bias and no bias column, then a second phase moves it to
    ``B``'s; ``wa_form="bias"``, a bias column is fitted and the target follows the two
    ends' outputs, in one phase. All ``t`` are solved in batches (float64).

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack with exactly two Linear layers (``ls.build_model("mlp",
        {"widths": [H]})``) and parameter-free activations, or a sequential convnet with two
        weighted layers.
    X : Tensor[N, ...] or TensorData
        The data batch of the adjustment. The ends are reproduced when the hidden features
        ``phi(X W_1^T + b_1)`` of ``A`` and ``B`` have full column rank (``N > H``).
    t : array-like [T], optional
        Parameters of the first layer's path (default ``linspace(0, 1, 11)``; for OT the
        stage-1 parameters); the paper's phase 2 takes the same ``t``.
    method : {"linear", "arc", "ot"}
        Connection of the first layer.
    wa_form : {"paper", "bias"}
        :data:`WA_FORMS`, see the module notes.
    ridge : float
        :math:`\\lambda` of :func:`weight_adjustment` (0: pseudo-inverse).
    snap_ends : bool
        Replace the points at ``t = 0`` and ``t = 1`` by ``A`` and ``B`` bit for bit (by
        default they are the WA solutions, equal to ``A`` and ``B`` up to the least-squares
        precision when the features have full rank).
    solver, swap_points, permutations
        OT options, see :func:`~landscape.connect.ot_path`.
    neuron : {"bl", "blc"}
        The neuron OT matches on (:func:`~landscape.connect.match_neurons`). Default
        ``"bl"``: the paper connects the first layer alone (its outgoing weights are
        re-fitted), as the authors' code matches on the first layer's weights.

    Returns
    -------
    Path
        Explicit points (identity coefficients) in ``A``'s dtypes, method ``"wa-linear"``,
        ``"wa-arc"`` or ``"wa-ot"``; it unpacks as ``t, points``. ``"paper"``: phase 1 on
        ``[0, 1/2]`` (for OT its stage 1 on ``[0, 1/4]`` and stage 2 on ``[1/4, 1/2]``) is
        stage 1, phase 2 on ``(1/2, 1]`` stage 2. ``"bias"``: the given ``t`` in one stage for
        Linear and Arc; for OT stage 1 on ``[0, 1/2]`` and stage 2 (the swaps) on
        ``(1/2, 1]``, as :meth:`~landscape.connect.OTPath.joined`.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from torch.func import functional_call
    >>> _ = torch.manual_seed(0)
    >>> model = ls.build_model("mlp", {"widths": [16]}).double()
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [16]}).double())
    >>> x = ls.load_data("digits", "train", max_samples=200).x.double()
    >>> t, path = wa = wa_path(a, b, model, x, [0.0, 0.5, 1.0], method="arc")
    >>> f = lambda w: functional_call(model, dict(w), (x,))
    >>> t.tolist(), wa.stage.tolist(), wa.method
    ([0.0, 0.25, 0.5, 0.75, 1.0], [1, 1, 1, 2, 2], 'wa-arc')
    >>> mid = path.weights(2)  # the end of phase 1: B's first layer, A's output bias, W2 fitted
    >>> bool(torch.equal(mid["1.weight"], b["1.weight"])), bool(torch.equal(mid["3.bias"], a["3.bias"]))
    (True, True)
    >>> path.K, bool(torch.allclose(f(path.weights(4)), f(b), rtol=0, atol=1e-8))
    (5, True)
    """
    st = LayerStack.for_pair(A, B, model)
    if st.n != 2:
        raise ValueError(
            f"wa_path connects networks with one hidden layer (two Linear layers); this model has {st.n}. "
            f"Use multilayer_wa_path"
        )
    if method not in WA_METHODS:
        raise ValueError(f"method should be one of {WA_METHODS}, got {method!r}")
    check_form(wa_form)
    t = np.linspace(0.0, 1.0, 11) if t is None else t
    ot = {"solver": solver, "swap_points": swap_points, "permutations": permutations, "neuron": neuron}
    step = {"ridge": ridge, "snap_ends": snap_ends, "wa_form": wa_form, "snap_last": wa_form == "bias"}
    t_out, points = _wa_step(A, B, model, st, 1, st.input(X), t, method, **step, **ot)
    if wa_form == "bias":
        return _one_block_path(t_out, PointSet.explicit(points), method, wa_form)
    t2 = as_t(t)
    phase2 = _second_layer_path(points[-1], B, st, t2, method)
    t_all, joined = concatenate_paths([PointSet.explicit(points), PointSet.explicit(phase2)], [t_out, t2])
    return _one_block_path(t_all, joined, method, wa_form)


def _one_block_path(t, points: PointSet, method: str, wa_form: str) -> Path:
    """The result of :func:`wa_path`: the paper's two phases, or OT's two stages, split at
    ``t = 1/2`` (the joint ends the first); one stage otherwise."""
    t = np.asarray(t, dtype=np.float64)
    if wa_form == "paper":
        labels = ("phase 1: first layer moves, second adjusted", "phase 2: second layer moves")
    elif method == "ot":
        labels = ("stage 1: matched neurons, second layer adjusted", "stage 2: swaps, second layer adjusted")
    else:
        labels = (f"{method} first layer, second adjusted",)
    stage = np.where(t <= 0.5, 1, 2) if len(labels) == 2 else None
    return Path(points, t, stage, labels, method=f"wa-{method}", unpack=("t", "points"))


# ---------------------------------------------------------------------------- multi-layer
def transitional_network(
    A: Weights, B: Weights, model: nn.Module, k: int, X, *, ridge: float = 0.0, wa_form: str = "paper"
) -> Weights:
    """The transitional network :math:`\\Theta_k^{AB}`: ``B``'s layers below ``k``, a WA layer
    ``k``, ``A``'s layers above ``k``.

    Layers are the model's ``nn.Linear`` modules numbered from 1 (input side) to ``n``
    (logits). Layer ``k`` is fitted on the batch ``X`` to reproduce ``A``'s layer-``k``
    output (pre-activation) from ``B``'s features below it; as the paper does
    (``wa_form="paper"``, default) with no bias column, keeping ``A``'s bias,

    .. math::

        W_k^{AB\\top} = \\bigl[h^B_{k-1}\\bigr]^+ (z^A_k - b^A_k), \\qquad b_k^{AB} = b^A_k ,

    or with a bias column fitted too (``wa_form="bias"``):

    .. math::

        [W_k^{AB} \\,|\\, b_k^{AB}]^\\top = \\bigl[h^B_{k-1} \\,|\\, \\mathbf 1\\bigr]^+ z^A_k ,

    so the network computes ``A``'s layer-``k`` output, and hence ``A``'s logits, on ``X``
    (exactly when :math:`[h^B_{k-1} | \\mathbf 1]` has full column rank, to least squares
    otherwise). By definition :math:`\\Theta_1^{AB} = A` and :math:`\\Theta_{n+1}^{AB} = B`.

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack with parameter-free activations.
    k : int
        ``1..n+1``.
    X : Tensor[N, ...] or TensorData
        The data batch of the adjustment.
    ridge : float
        See :func:`weight_adjustment`.
    wa_form : {"paper", "bias"}
        :data:`WA_FORMS`; residual networks take ``"bias"`` only.

    Returns
    -------
    Weights
        Same layout and dtypes as ``A``; entries outside the Linear layers are ``A``'s
        (``k <= n``).
    """
    check_form(wa_form)
    try:
        st = LayerStack.for_pair(A, B, model)
    except UnsupportedModelError as e:
        _residual_or_raise(e)
        _residual_form(wa_form)
        return residual_transitional_network(A, B, model, k, X, ridge=ridge)
    if int(k) != k or not 1 <= k <= st.n + 1:
        raise ValueError(f"k should be an integer in 1..{st.n + 1} for a model with {st.n} Linear layers, got {k!r}")
    k = int(k)
    if k == 1:
        return A
    if k == st.n + 1:
        return B
    return st.transitional(A, B, k, st.input(X), ridge, paper=wa_form == "paper")


def _residual_form(wa_form: str) -> None:
    if wa_form != "bias":
        raise ValueError(
            f"wa_form={wa_form!r}: residual networks are adjusted at the cuts of their graph with a bias "
            f"column only; pass wa_form='bias'"
        )


def multilayer_wa_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    X,
    t_per_step=None,
    method: str = "linear",
    *,
    wa_form: str = "paper",
    ridge: float = 0.0,
    snap_ends: bool = False,
    solver: str = "emd",
    swap_points: int = 1,
) -> Path:
    """WA connection of multi-layer networks through transitional networks.

    .. math::

        A = \\Theta_1^{AB} \\to \\Theta_2^{AB} \\to \\cdots \\to \\Theta_n^{AB} \\to \\Theta_{n+1}^{AB} = B

    with :math:`\\Theta_k^{AB}` from :func:`transitional_network` (layers numbered 1..n from
    the input, the model's ``nn.Linear`` modules in order). Step ``k < n`` goes from
    :math:`\\Theta_k^{AB}` to :math:`\\Theta_{k+1}^{AB}`, which differ only in layers ``k``
    and ``k+1``: on the fixed input :math:`h^B_{k-1}` (``B``'s features, ``X`` for ``k=1``)
    it is a two-layer block, connected like :func:`wa_path` (layer ``k`` by ``method``,
    layer ``k+1`` by WA towards the interpolation of the block outputs of the two ends,
    both close to ``A``'s :math:`z^A_{k+1}`). Step ``n`` changes only layer ``n`` on the fixed
    features :math:`h^B_{n-1}`; it is the straight line, which is what WA gives there (see
    the module notes). Each step gets an equal share of ``[0, 1]``.

    With ``wa_form="paper"`` (default, as the authors' code does) every fit has no bias
    column and keeps ``A``'s bias of the layer, and the WA layer ``k+1`` of step ``k``
    keeps ``A``'s output all along: :math:`W_{k+1}(t)^\\top = [h(t)]^+ (z^A_{k+1} - b^A_{k+1})`.
    With ``wa_form="bias"`` the fits have a bias column and the target of step ``k`` is the
    interpolation of the block outputs of its two ends.

    For a network with one hidden layer (``n = 2``) the path is ``A`` to
    :math:`\\Theta_2^{AB}` (``B``'s first layer and a WA second layer reproducing ``A``'s
    logits) to ``B``; :func:`wa_path` is the direct one-step connection instead.

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack with parameter-free activations, at least two Linear layers.
    X : Tensor[N, ...] or TensorData
        The data batch of every adjustment.
    t_per_step : array-like [T], optional
        The points of each step in its own parameter (default ``linspace(0, 1, 6)``); for OT
        the stage-1 points of the step (stage 2 adds the swaps of layer ``k``).
    method : {"linear", "arc", "ot"}
        Connection of the first layer of each block. For OT the neurons of layer ``k`` are
        matched by their incoming weights and bias (the outgoing ones are re-fitted).
    wa_form : {"paper", "bias"}
        :data:`WA_FORMS`; residual networks take ``"bias"`` only.
    ridge : float
        :math:`\\lambda` of :func:`weight_adjustment`, for the transitional layers and the
        WA layers.
    snap_ends : bool
        Replace the WA solutions at the two ends of each step by the transitional networks
        (and ``A``, ``B``) bit for bit.
    solver, swap_points
        OT options (see :func:`~landscape.connect.ot_path`).

    Returns
    -------
    Path
        Method ``"wa-linear"``, ``"wa-arc"`` or ``"wa-ot"``; it unpacks as
        ``t, points, bounds``. ``t`` increases in ``[0, 1]``; step ``k`` covers
        ``[(k-1)/n, k/n]`` and is stage ``k`` (a joint belongs to the step it ends). The
        points are the steps' joined by :func:`~landscape.connect.concatenate_paths` (a basis
        of the per-``t`` weights of each WA step and the two ends of the last step, one-hot
        or straight-line coefficients; the joint of two steps once). Step ``k < n`` changes
        only the entries of layers ``k`` and ``k+1``; step ``n`` only layer ``n``.
        ``bounds`` (ndarray[n + 1]) is ``[0, 1/n, ..., 1]``: the values of ``t`` at
        :math:`\\Theta_1^{AB}, \\dots, \\Theta_{n+1}^{AB}`.
    """
    check_form(wa_form)
    try:
        st = LayerStack.for_pair(A, B, model)
    except UnsupportedModelError as e:
        _residual_or_raise(e)
        _residual_form(wa_form)
        ot = {"solver": solver, "swap_points": swap_points}
        return residual_wa_path(A, B, model, X, t_per_step, method, ridge=ridge, snap_ends=snap_ends, **ot)
    if st.n < 2:
        raise ValueError(f"multilayer_wa_path needs at least two Linear layers, this model has {st.n}")
    if method not in WA_METHODS:
        raise ValueError(f"method should be one of {WA_METHODS}, got {method!r}")
    t_step = as_t(np.linspace(0.0, 1.0, 6) if t_per_step is None else t_per_step)
    if t_step[0] != 0.0 or t_step[-1] != 1.0 or np.any(np.diff(t_step) <= 0):
        raise ValueError("t_per_step should increase from 0 to 1 (each step runs from one network to the next)")
    n = st.n
    h0 = st.input(X)
    paper = wa_form == "paper"
    thetas = [A] + [st.transitional(A, B, k, h0, ridge, paper=paper) for k in range(2, n + 1)] + [B]
    options = {"ridge": ridge, "solver": solver, "swap_points": swap_points, "snap_ends": snap_ends, "wa_form": wa_form}
    parts, ts = [], []
    h = h0  # B's features below layer k
    for k in range(1, n):
        target = st.outputs(A, h0, k + 1) if paper else None
        step = (thetas[k - 1], thetas[k], model, st, k, h, t_step, method)
        t_out, pts = _wa_step(*step, permutations=None, neuron="bl", target=target, **options)
        parts.append(PointSet.explicit(pts))
        ts.append(t_out)
        h = st.act(k, st.linear(B, k, h), B)
    parts.append(linear_path(thetas[n - 1], B, t_step))
    ts.append(t_step)
    t, points = concatenate_paths(parts, ts)
    labels = [f"step {k}: layer {k} by {method}, layer {k + 1} adjusted" for k in range(1, n)]
    return steps_path(t, points, np.arange(n + 1) / n, [*labels, f"step {n}: layer {n} on the line"], method)
