"""Linear and Arc connections between two networks (Anokhin & Yarotsky, ICML 2020).

Both paths are point sets over a fixed basis, so they evaluate like any line or plane:

.. math::

    \\psi_{\\rm Linear}(t) = (1-t)\\,A + t\\,B, \\qquad
    \\psi_{\\rm Arc}(t) = \\mu + \\cos(\\tfrac{\\pi t}{2})(A-\\mu) + \\sin(\\tfrac{\\pi t}{2})(B-\\mu)
    = (1-c-s)\\,\\mu + c\\,A + s\\,B.

If the neurons :math:`\\theta^A_i, \\theta^B_i` are i.i.d. from a distribution with mean
:math:`\\mu` and covariance :math:`\\Sigma`, the Arc keeps both at every ``t`` (and the whole
distribution when it is Gaussian), while the Linear path keeps the mean but shrinks the
covariance to :math:`((1-t)^2 + t^2)\\Sigma` (half of it at ``t = 1/2``).

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..pointset import PointSet
from ..weights import Weights
from .graph import group_mean
from .result import Path
from .structure import structure

__all__ = [
    "arc_coefficients",
    "arc_path",
    "concatenate_paths",
    "linear_coefficients",
    "linear_path",
    "neuron_mean",
]

_SNAP = 1e-15


def as_t(t) -> np.ndarray:
    """``t`` as a finite, non-empty ``ndarray[T]`` of float64."""
    t = np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("t should hold at least one value, got an empty array")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"t should be finite, got {t[~np.isfinite(t)][:3].tolist()}")
    return t


def _snap(x: np.ndarray) -> np.ndarray:
    """Round values within 1e-15 of -1, 0 or 1 to them (cos(pi/2) = 6e-17 becomes 0)."""
    x = x.copy()
    for v in (-1.0, 0.0, 1.0):
        x[np.abs(x - v) < _SNAP] = v
    return x


def same_layout(a: Weights, b: Weights) -> None:
    """Raise unless ``a`` and ``b`` are :class:`~landscape.weights.Weights` of one layout
    with equal shapes."""
    for name, w in (("A", a), ("B", b)):
        if not isinstance(w, Weights):
            raise TypeError(f"{name} should be a landscape Weights, got {type(w).__name__}")
    if a.layout.names() != b.layout.names():
        raise ValueError(
            f"A and B have different layouts ({len(a.layout)} and {len(b.layout)} entries); expected the same model"
        )
    for e in a.layout.flat_entries():
        if tuple(a[e.name].shape) != tuple(b[e.name].shape):
            raise ValueError(
                f"entry '{e.name}' has shape {tuple(a[e.name].shape)} in A and {tuple(b[e.name].shape)} in B"
            )


def linear_coefficients(t) -> np.ndarray:
    """Coefficients ``[1 - t, t]`` of the Linear path over the basis ``[A, B]``.

    Returns
    -------
    ndarray[T, 2]

    Examples
    --------
    >>> linear_coefficients([0.0, 0.25, 1.0]).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.0, 1.0]]
    """
    t = as_t(t)
    return np.stack([1.0 - t, t], 1)


def arc_coefficients(t) -> np.ndarray:
    """Coefficients ``[1 - c - s, c, s]`` of the Arc over the basis ``[mu, A, B]``.

    .. math::

        c = \\cos(\\tfrac{\\pi t}{2}), \\qquad s = \\sin(\\tfrac{\\pi t}{2})

    Values within 1e-15 of -1, 0 or 1 are rounded to them, so the rows at ``t = 0`` and
    ``t = 1`` are exactly ``[0, 1, 0]`` and ``[0, 0, 1]`` and reproduce ``A`` and ``B`` bit
    for bit.

    Returns
    -------
    ndarray[T, 3]

    Examples
    --------
    >>> arc_coefficients([0.0, 1.0]).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    t = as_t(t)
    c = _snap(np.cos(0.5 * np.pi * t))
    s = _snap(np.sin(0.5 * np.pi * t))
    return np.stack([_snap(1.0 - c - s), c, s], 1)


def linear_path(A: Weights, B: Weights, t) -> Path:
    """The straight line :math:`\\psi(t) = (1-t)A + tB` at the given ``t``.

    Parameters
    ----------
    A, B : Weights
        Two weight points of one model.
    t : array-like [T], non-decreasing
        Path parameters; ``t = 0`` gives ``A`` and ``t = 1`` gives ``B`` exactly.

    Returns
    -------
    Path
        Method ``"linear"``, one stage; a point set with basis ``[A, B]`` (names ``"A"``,
        ``"B"``) and coefficients ``[T, 2]``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> a, b = ls.Weights.from_module(torch.nn.Linear(3, 2)), ls.Weights.from_module(torch.nn.Linear(3, 2))
    >>> torch.equal(linear_path(a, b, [0.0, 0.5, 1.0]).point(2)["weight"], b["weight"])
    True
    """
    same_layout(A, B)
    t = as_t(t)
    return Path(PointSet.from_weights([A, B], linear_coefficients(t), names=["A", "B"]), t, method="linear")


def neuron_mean(A: Weights, B: Weights, model: nn.Module) -> Weights:
    """The mean neuron :math:`\\mu` of the Arc, pooled over ``A`` and ``B``, in weight form.

    For a hidden layer of width ``n`` the ``2n`` neurons of ``A`` and ``B`` are averaged and
    every neuron of :math:`\\mu` is that mean:

    .. math::

        \\mu_i = \\frac{1}{2n} \\sum_{j=1}^{n} (\\theta^A_j + \\theta^B_j), \\qquad i = 1..n.

    In a network with one hidden layer the neuron is :math:`(b_i, l_i, c_i)` as in the paper:
    the hidden bias and weight rows are averaged over rows, the output weight columns over
    columns. In deeper networks a weight matrix between two hidden layers would belong to the
    neurons of both; each entry is given to the neuron it feeds (its incoming part
    :math:`(b_i, l_i)`), and the output layer's columns are the outgoing part
    :math:`c_i` of the last hidden layer. Entries outside any neuron (the output bias,
    entries of modules outside the chain) are :math:`(A + B)/2`, an arc on a "neuron" of one.

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`), or any network
        :func:`~landscape.connect.graph.trace_groups` follows (see
        :func:`~landscape.connect.graph.group_mean`: filters, biases and BatchNorm channels
        are averaged over the channels of their group).

    Returns
    -------
    Weights
        Same layout; non-float entries are taken from ``A``.
    """
    same_layout(A, B)
    s = structure(model)
    chain = s.chain
    if chain is None:  # convolutional / residual networks
        return group_mean(A, B, s.groups)
    chain.check_weights(A, "A")
    chain.check_weights(B, "B")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for e in A.layout:
        if e.flat:
            a, b = A[e.name], B[e.name]
            out[e.name] = (0.5 * (a.to(torch.float64) + b.to(torch.float64))).to(a.dtype)
        else:
            out[e.name] = A[e.name]

    def pooled(name: str, dim: int) -> torch.Tensor:
        a, b = A[name], B[name]
        m = torch.cat([a, b], dim).to(torch.float64).mean(dim, keepdim=True)
        return m.expand_as(a).to(a.dtype).clone()

    for layer in chain.hidden:
        out[f"{layer}.weight"] = pooled(f"{layer}.weight", 0)
        if f"{layer}.bias" in A.layout:
            out[f"{layer}.bias"] = pooled(f"{layer}.bias", 0)
    if chain.hidden:
        last = chain.names[-1]
        out[f"{last}.weight"] = pooled(f"{last}.weight", 1)
    return Weights(out, A.layout)


def arc_path(A: Weights, B: Weights, model: nn.Module, t) -> Path:
    """The Arc connection of Anokhin & Yarotsky (2020) at the given ``t``.

    .. math::

        \\psi(t) = \\mu + \\cos(\\tfrac{\\pi t}{2})(A-\\mu) + \\sin(\\tfrac{\\pi t}{2})(B-\\mu)

    with :math:`\\mu` the mean neuron of each hidden layer (:func:`neuron_mean`). For i.i.d.
    neurons it keeps the mean and covariance of the neuron distribution along the path.

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`) or any network
        :func:`~landscape.connect.graph.trace_groups` follows (see :func:`neuron_mean`).
    t : array-like [T], non-decreasing
        Path parameters; ``t = 0`` and ``t = 1`` reproduce ``A`` and ``B`` bit for bit.

    Returns
    -------
    Path
        Method ``"arc"``, one stage; a point set with basis ``[mu, A, B]`` (names ``"mu"``,
        ``"A"``, ``"B"``) and coefficients :func:`arc_coefficients` ``[T, 3]``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [16]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [16]}))
    >>> arc = arc_path(a, b, model, [0.0, 0.5, 1.0])
    >>> arc.K, arc.names, arc.method
    (3, ['mu', 'A', 'B'], 'arc')
    >>> torch.equal(arc.point(0)["1.weight"], a["1.weight"])
    True
    """
    mu = neuron_mean(A, B, model)
    t = as_t(t)
    return Path(PointSet.from_weights([mu, A, B], arc_coefficients(t), names=["mu", "A", "B"]), t, method="arc")


def concatenate_paths(parts: Sequence[PointSet], ts: Sequence, *, drop_joints: bool = True):
    """Join paths end to end with one parameter ``t`` in ``[0, 1]``.

    Part ``i`` of ``m`` is mapped affinely from its own ``t`` range onto
    ``[i/m, (i+1)/m]``; the basis is the concatenation of the parts' bases and the
    coefficients are block diagonal, so one-hot rows (checkpoints) stay exact.

    Parameters
    ----------
    parts : sequence of PointSet
        Paths of one layout; each ends where the next begins.
    ts : sequence of array-like
        The parameters of each part's points (increasing).
    drop_joints : bool
        Drop the first point of every part after the first (the same weights as the last
        point of the part before).

    Returns
    -------
    t : ndarray[K]
    points : PointSet
    """
    if len(parts) != len(ts) or not parts:
        raise ValueError(f"concatenate_paths needs as many t arrays as parts (>= 1), got {len(parts)} and {len(ts)}")
    layout = parts[0].layout
    for i, p in enumerate(parts):
        if p.layout.names() != layout.names():
            raise ValueError(f"part {i} has a different layout from part 0")
        if len(as_t(ts[i])) != p.K:
            raise ValueError(f"part {i} has {p.K} points but {len(as_t(ts[i]))} values of t")
    m = len(parts)
    J = sum(p.J for p in parts)
    rows, t_all, names = [], [], []
    col = 0
    for i, (p, t) in enumerate(zip(parts, ts)):
        t = as_t(t)
        lo, hi = float(t[0]), float(t[-1])
        span = (t - lo) / (hi - lo) if hi > lo else np.ones_like(t)
        keep = slice(1, None) if (drop_joints and i > 0 and p.K > 1) else slice(None)
        C = np.zeros((p.K, J))
        C[:, col : col + p.J] = p.coeffs.numpy()
        rows.append(C[keep])
        t_all.append(((i + span) / m)[keep])
        names += [f"{i}:{n}" for n in p.names]
        col += p.J
    dtype = parts[0].basis.dtype
    basis = torch.cat([p.basis.to(dtype) for p in parts])
    return np.concatenate(t_all), PointSet(basis, np.concatenate(rows), layout, extras=parts[0].extras, names=names)
