"""Directions and planes in weight space: random (filter/layer/weight-normalized), target,
the plane through three checkpoints, and the PCA plane of a training trajectory.

Every function returns :class:`~landscape.weights.Weights` (a direction) or a
:class:`Plane`, whose basis and coordinates turn a grid into a
:class:`~landscape.pointset.PointSet` (:meth:`Plane.grid`).

References
----------
Li, Xu, Taylor, Studer, Goldstein. "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018 (filter normalization, PCA of trajectories).
Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs", NeurIPS 2018 (the plane through three weight vectors).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .pointset import PointSet
from .threads import single_thread
from .weights import Layout, Weights

__all__ = [
    "NORMS",
    "Plane",
    "line_through",
    "normalize_direction",
    "pca_plane",
    "random_direction",
    "random_plane",
    "target_direction",
    "three_point_plane",
]

NORMS = ("filter", "layer", "weight", "none")
_STAT_KINDS = ("bn_running_mean", "bn_running_var")


def _is_small(kind: str, t: torch.Tensor) -> bool:
    """Bias, BatchNorm and other tensors with at most one dimension (the 'biasbn' group)."""
    return t.dim() <= 1 or kind in ("bias", "bn_weight", "bn_bias", "norm_weight", "norm_bias") or kind in _STAT_KINDS


def normalize_direction(
    direction: Weights, weights: Weights, *, norm: str = "filter", ignore: str | None = "biasbn", states: bool = False
) -> Weights:
    """Scale a direction to the weights it perturbs.

    .. math::

        d_{i,j} \\leftarrow \\frac{d_{i,j}}{\\lVert d_{i,j} \\rVert} \\lVert \\theta_{i,j} \\rVert

    for every filter j of every layer i (``norm="filter"``, Li et al. 2018); for every
    tensor as a whole (``"layer"``); entry by entry, :math:`d \\leftarrow d \\odot \\theta`
    (``"weight"``); or not at all (``"none"``). Filters run along each weight's filter
    dimension (dim 0 of conv and linear weights, dim 1 of transposed convolutions).

    Parameters
    ----------
    direction, weights : Weights
        Of one layout.
    norm : {"filter", "layer", "weight", "none"}
    ignore : {"biasbn", None}
        ``"biasbn"`` zeroes biases, BatchNorm parameters and every tensor with at most one
        dimension; ``None`` keeps them, set equal to the weights (as the loss-landscape code
        does: a bias "filter" is a single number).
    states : bool
        Whether running statistics move too; when False they are zero in the direction, so
        every point keeps the centre's statistics.

    Returns
    -------
    Weights
        The normalized direction (a new object).
    """
    if norm not in NORMS:
        raise ValueError(f"norm should be one of {NORMS}, got {norm!r}")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore should be 'biasbn' or None, got {ignore!r}")
    out = {}
    for e in weights.layout:
        d, w = direction[e.name], weights[e.name]
        if not e.flat:
            out[e.name] = w.clone()
            continue
        if e.kind in _STAT_KINDS or (not e.is_parameter):
            if not states or ignore == "biasbn":
                out[e.name] = torch.zeros_like(w)
            else:
                out[e.name] = w.clone()
            continue
        if _is_small(e.kind, w):
            out[e.name] = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
            continue
        if norm == "filter":
            fd = e.filter_dim if e.filter_dim is not None else 0
            dm, wm = d.movedim(fd, 0), w.movedim(fd, 0)
            dn = dm.reshape(dm.shape[0], -1).norm(dim=1)
            wn = wm.reshape(wm.shape[0], -1).norm(dim=1)
            scale = (wn / (dn + 1e-10)).view(-1, *([1] * (dm.dim() - 1)))
            out[e.name] = (dm * scale).movedim(0, fd).contiguous()
        elif norm == "layer":
            out[e.name] = d * (w.norm() / (d.norm() + 1e-10))
        elif norm == "weight":
            out[e.name] = d * w
        else:
            out[e.name] = d.clone()
    return Weights(out, weights.layout)


def random_direction(
    weights: Weights,
    *,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    states: bool = False,
    seed: int | torch.Generator = 0,
) -> Weights:
    """A Gaussian random direction normalized to ``weights`` (see :func:`normalize_direction`).

    Drawn on the CPU in float32 in layout order from ``seed``, so the same seed gives the
    same direction on every machine.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> w = ls.Weights.from_module(torch.nn.Conv2d(3, 4, 3))
    >>> d = ls.directions.random_direction(w, seed=0)
    >>> torch.allclose(d["weight"].flatten(1).norm(dim=1), w["weight"].flatten(1).norm(dim=1))
    True
    >>> float(d["bias"].abs().sum())
    0.0
    """
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    raw = {}
    for e in weights.layout:
        w = weights[e.name]
        if e.flat:
            raw[e.name] = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.dtype)
        else:
            raw[e.name] = w.clone()
    return normalize_direction(Weights(raw, weights.layout), weights, norm=norm, ignore=ignore, states=states)


def target_direction(start: Weights, end: Weights) -> Weights:
    """The direction ``end - start`` (non-float entries taken from ``start``)."""
    _same_layout(start, end)
    out = {}
    for e in start.layout:
        out[e.name] = end[e.name] - start[e.name] if e.flat else start[e.name].clone()
    return Weights(out, start.layout)


def _same_layout(*ws: Weights) -> Layout:
    names = ws[0].layout.names()
    for i, w in enumerate(ws[1:], 1):
        if w.layout.names() != names:
            raise ValueError(f"weights {i} have a different layout from weights 0")
    return ws[0].layout


@dataclass
class Plane:
    """A 2D (or 1D) affine subspace: ``point(x, y) = sum_j coeff_j(x, y) basis_j``.

    Attributes
    ----------
    basis : list of Weights
        J basis vectors.
    names : list of str
        Their names (stored in result files).
    kind : str
        ``"random"``, ``"three-checkpoints"``, ``"pca"``, ``"interpolation"``, ``"random-direction"``.
    to_coeffs : callable
        ``(x: ndarray[K], y: ndarray[K] or None) -> ndarray[K, J]``.
    anchors : ndarray[m, 2] or ndarray[m]
        Coordinates of marked points (checkpoints) on the plane.
    anchor_names : list of str
    arrays : dict
        Extra arrays for the result file (``trajectory``, ``explained-variance-ratio``).
    attrs : dict
        Extra attributes (labels, normalization, seeds, norms).
    """

    basis: list[Weights]
    names: list[str]
    kind: str
    to_coeffs: Any
    anchors: np.ndarray
    anchor_names: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return 1 if self.anchors.ndim == 1 else 2

    def points(self, x, y=None) -> PointSet:
        """Points at coordinates ``x`` (and ``y``), one per entry."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        yy = None if y is None else np.asarray(y, dtype=np.float64).reshape(-1)
        return PointSet.from_weights(self.basis, self.to_coeffs(x, yy), names=self.names)

    def grid(self, xs, ys=None) -> PointSet:
        """Points of the grid ``xs`` (x ``ys``), in C order: cell (i, j) is (xs[i], ys[j])."""
        xs = np.asarray(xs, dtype=np.float64)
        if ys is None:
            return self.points(xs)
        ys = np.asarray(ys, dtype=np.float64)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        return self.points(gx.reshape(-1), gy.reshape(-1))


def line_through(start: Weights, end: Weights) -> Plane:
    """1D interpolation :math:`w(a) = (1-a) w_1 + a w_2`; exact at a = 0 and a = 1."""
    _same_layout(start, end)
    return Plane(
        basis=[start, end],
        names=["w1", "w2"],
        kind="interpolation",
        to_coeffs=lambda x, y=None: np.stack([1.0 - x, x], 1),
        anchors=np.array([0.0, 1.0]),
        anchor_names=[_label(start, "w1"), _label(end, "w2")],
        attrs={"x-label": "interpolation coefficient α"},
    )


def random_plane(
    center: Weights,
    *,
    dims: int = 2,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    states: bool = False,
    seed: int = 0,
) -> Plane:
    """Filter-normalized random plane (or line, ``dims=1``) around ``center`` (Li et al. 2018):
    :math:`w(a, b) = \\theta + a\\,\\delta + b\\,\\eta`."""
    if dims not in (1, 2):
        raise ValueError(f"dims should be 1 or 2, got {dims}")
    gen = torch.Generator().manual_seed(int(seed))
    dirs = [random_direction(center, norm=norm, ignore=ignore, states=states, seed=gen) for _ in range(dims)]
    attrs = {"norm": norm, "ignore": ignore, "states": states, "direction-seed": int(seed)}
    label = "filter-normalized" if norm == "filter" else f"{norm}-normalized"
    if dims == 1:
        return Plane(
            basis=[center, dirs[0]],
            names=["w", "d1"],
            kind="random-direction",
            to_coeffs=lambda x, y=None: np.stack([np.ones_like(x), x], 1),
            anchors=np.array([0.0]),
            anchor_names=[_label(center, "w")],
            attrs={**attrs, "x-label": f"α ({label} direction)"},
        )
    return Plane(
        basis=[center, *dirs],
        names=["w", "d1", "d2"],
        kind="random",
        to_coeffs=lambda x, y: np.stack([np.ones_like(x), x, y], 1),
        anchors=np.array([[0.0, 0.0]]),
        anchor_names=[_label(center, "w")],
        attrs={**attrs, "x-label": f"α ({label} direction 1)", "y-label": f"β ({label} direction 2)"},
    )


def _param_vector(w: Weights) -> torch.Tensor:
    """Float64 vector of the parameters (not buffers)."""
    return torch.cat([w[e.name].reshape(-1).to(torch.float64) for e in w.layout.flat_entries() if e.is_parameter])


# Inner products over weight space (three-point and PCA planes) are summed in an order
# that does not depend on the thread count, so that what defines a run is bit-reproducible
# (torchrun sets OMP_NUM_THREADS=1; a file written with more threads must resume): float64
# blocks of at most _BLOCK entries in layout order, each summed by numpy (pairwise, one
# thread, no BLAS), the block sums added exactly (math.fsum).
_BLOCK = 1 << 18


def _entry_blocks(ws: Sequence[Weights], name: str) -> Iterator[np.ndarray]:
    """``ndarray[len(ws), B]`` float64 blocks of the entry ``name`` of every weights."""
    flats = [w[name].detach().reshape(-1) for w in ws]
    for s in range(0, flats[0].numel(), _BLOCK):
        yield np.stack([f[s : s + _BLOCK].to(device="cpu", dtype=torch.float64).numpy() for f in flats])


def _blocks(ws: Sequence[Weights], entries) -> Iterator[np.ndarray]:
    """:func:`_entry_blocks` of ``entries``, in their order."""
    for e in entries:
        yield from _entry_blocks(ws, e.name)


def _exact_sum(parts: list) -> np.ndarray:
    """Correctly rounded sum of equally shaped arrays (or numbers), whatever their order."""
    a = np.asarray(parts, dtype=np.float64)
    flat = a.reshape(len(parts), -1)
    return np.array([math.fsum(col) for col in flat.T]).reshape(a.shape[1:])


def _three_point_frame(
    w1: Weights, w2: Weights, w3: Weights, points: Sequence[Weights] = ()
) -> tuple[float, float, float, np.ndarray]:
    """Gram-Schmidt frame of :func:`three_point_plane`: ``(|u|, <w3 - w1, u_hat>, |v|)`` and the
    coordinates ``ndarray[len(points), 2]`` of ``points`` on the plane,
    :math:`(\\langle q - w_1, \\hat u\\rangle, \\langle q - w_1, \\hat v\\rangle)`, bit-reproducible."""
    _same_layout(w1, w2, w3, *points)
    entries = [e for e in w1.layout.flat_entries() if e.is_parameter]
    rows = (w1, w2, w3, *points)
    uu, ur = [], []
    for X in _blocks(rows, entries):
        u, r = X[1] - X[0], X[2] - X[0]
        uu.append(np.add.reduce(u * u))
        ur.append(np.add.reduce(u * r))
    nu = math.sqrt(float(_exact_sum(uu))) if uu else 0.0
    if nu == 0:
        raise ValueError("the first two checkpoints are identical; a plane needs three distinct points")
    c = float(_exact_sum(ur)) / nu
    vv, qu, qv = [], [], []
    for X in _blocks(rows, entries):
        u, r, q = X[1] - X[0], X[2] - X[0], X[3:] - X[0]
        v = r - c * (u / nu)
        vv.append(np.add.reduce(v * v))
        qu.append(np.add.reduce(q * u, axis=1))
        qv.append(np.add.reduce(q * v, axis=1))
    nv = math.sqrt(float(_exact_sum(vv)))
    if nv <= 1e-5 * nu:  # float32 checkpoints: collinear up to rounding
        raise ValueError("the three checkpoints lie on one line; they do not span a plane")
    coords = np.stack([_exact_sum(qu) / nu, _exact_sum(qv) / nv], 1) if points else np.zeros((0, 2))
    return nu, c, nv, coords


def three_point_plane(w1: Weights, w2: Weights, w3: Weights) -> Plane:
    """The plane through three checkpoints with Gram-Schmidt coordinates (Garipov et al. 2018).

    With :math:`u = w_2 - w_1`, :math:`\\hat u = u/\\lVert u\\rVert`,
    :math:`v = w_3 - w_1 - \\langle w_3 - w_1, \\hat u\\rangle \\hat u`,
    :math:`\\hat v = v / \\lVert v \\rVert`, the point at (x, y) is
    :math:`w_1 + x \\hat u + y \\hat v`; the checkpoints sit at (0, 0),
    :math:`(\\lVert u\\rVert, 0)` and :math:`(\\langle w_3 - w_1, \\hat u\\rangle, \\lVert v\\rVert)`.
    Inner products are over the parameters, in float64, summed in an order that does not
    depend on the thread count (the coordinates are bit-reproducible); running statistics
    follow the same coefficients. The basis is the three checkpoints themselves, so
    evaluating at their coordinates reproduces them bit for bit.
    """
    nu, c, nv, _ = _three_point_frame(w1, w2, w3)

    def to_coeffs(x, y):
        b = y / nv
        a = (x - b * c) / nu
        return np.stack([1.0 - a - b, a, b], 1)

    return Plane(
        basis=[w1, w2, w3],
        names=["w1", "w2", "w3"],
        kind="three-checkpoints",
        to_coeffs=to_coeffs,
        anchors=np.array([[0.0, 0.0], [nu, 0.0], [c, nv]]),
        anchor_names=[_label(w1, "w1"), _label(w2, "w2"), _label(w3, "w3")],
        attrs={"x-label": "x (along w2 - w1)", "y-label": "y (orthogonal, towards w3)", "norm-u": nu, "norm-v": nv},
    )


def _same_values(a: Weights, b: Weights) -> bool:
    """Whether two weights of one layout hold equal tensors (the same checkpoint)."""
    return a is b or all(torch.equal(a[n], b[n]) for n in a.layout.names())


def pca_plane(trajectory: Sequence[Weights], *, final: Weights | None = None, ignore: str | None = None) -> Plane:
    """The plane of the two principal directions of a training trajectory (Li et al. 2018),
    as the loss-landscape code computes it.

    The rows :math:`\\theta_i - \\theta_n` of every checkpoint of the trajectory, the final
    one :math:`\\theta_n` included (its zero row too), are centred,
    :math:`X = D - \\bar D`, and the directions :math:`d_1, d_2` are the two leading
    principal axes, the rows of scikit-learn's ``PCA(n_components=2).components_``: unit
    vectors, not filter-normalized. The plane is :math:`\\theta_n + x d_1 + y d_2`, and
    checkpoint i sits at :math:`(\\langle \\theta_i - \\theta_n, d_1\\rangle,
    \\langle \\theta_i - \\theta_n, d_2\\rangle)` (loss-landscape's ``cos`` projection, of the
    uncentred rows), the final one at (0, 0).

    Checkpoints are compared by value: ``final`` equal to a checkpoint of ``trajectory``
    is that checkpoint; a ``final`` not on the trajectory is appended as its end. So a
    trajectory folder gives the same plane with or without its last file as ``final``.

    The principal axes come from the eigenvectors :math:`u_k` of the small Gram matrix
    :math:`G = X X^\\top` (T x T, float64): :math:`d_k = X^\\top u_k / \\sqrt{\\lambda_k}`;
    explained-variance ratios are :math:`\\lambda_k / \\operatorname{tr} G`. Inner products
    are summed in an order that does not depend on the thread count, so the plane is
    bit-reproducible. Sign: each direction's entry of largest absolute value (the first
    one on ties, in layout order) is positive, which is ``svd_flip(U, Vt,
    u_based_decision=False)``, the rule of scikit-learn's PCA since release 1.5; earlier
    releases, those the loss-landscape code was written against, fixed the sign from U
    instead, so its figures may be mirrored in x or y.

    Differences from the loss-landscape code, on purpose: the matrix is float64 (its is
    float32), and the decomposition is exact (scikit-learn's default solver is randomized
    when the matrix has more than 500 columns).
    ``ignore=None`` (default) keeps every parameter, as the paper's ``plot_trajectory.py``
    does by default; ``ignore="biasbn"`` leaves biases, BatchNorm parameters and every
    tensor of at most one dimension out (zero in the directions), as its ``--ignore biasbn``.
    Running statistics are never part of the directions (its ``--dir_type weights``).

    Parameters
    ----------
    trajectory : sequence of Weights
        The checkpoints in training order, of one layout.
    final : Weights, optional
        The centre :math:`\\theta_n`; default: the last of ``trajectory``.
    ignore : {"biasbn", None}

    Returns
    -------
    Plane
        With ``arrays["trajectory"]`` ([T, 2], the projected path, ending at the final
        checkpoint) and ``arrays["explained-variance-ratio"]`` ([2]).
    """
    traj = list(trajectory)
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore should be 'biasbn' or None, got {ignore!r}")
    if final is None:
        if not traj:
            raise ValueError("a PCA plane needs at least 3 checkpoints on the trajectory, got 0")
        final = traj[-1]
    layout = _same_layout(final, *traj)
    if not any(_same_values(w, final) for w in traj):
        traj.append(final)
    if len(traj) < 3:
        raise ValueError(
            f"a PCA plane needs at least 3 checkpoints on the trajectory (the final one included), got {len(traj)}"
        )
    entries = [
        e
        for e in layout.flat_entries()
        if e.is_parameter and not (ignore == "biasbn" and _is_small(e.kind, final[e.name]))
    ]
    if not entries:
        raise ValueError("a PCA plane needs weights with more than one dimension; with ignore='biasbn' none is left")
    T = len(traj)
    rows = [*traj, final]
    G = _pca_gram(rows, entries)
    with single_thread():
        lam, U = torch.linalg.eigh(torch.from_numpy(G))
    lam, U = lam.numpy()[::-1][:2], U.numpy()[:, ::-1][:, :2]
    total = math.fsum(np.diag(G))
    if not lam[1] > 1e-10 * lam[0]:
        raise ValueError("the checkpoints of the trajectory lie on one line; they do not span a plane")
    ratio = lam / total
    dirs, proj, signs = _pca_directions(rows, entries, U / np.sqrt(lam))
    basis = [final]
    for k in range(2):
        t = {}
        for e in layout:
            if e.name in dirs[k]:
                t[e.name] = torch.from_numpy(signs[k] * dirs[k][e.name]).to(e.dtype).view(e.shape)
            elif e.flat:
                t[e.name] = torch.zeros_like(final[e.name])
            elif e.tied_to is None:
                t[e.name] = final[e.name].clone()
        basis.append(Weights(t, layout))
    return Plane(
        basis=basis,
        names=["w_final", "pc1", "pc2"],
        kind="pca",
        to_coeffs=lambda x, y: np.stack([np.ones_like(x), x, y], 1),
        anchors=np.array([[0.0, 0.0]]),
        anchor_names=[_label(final, "final")],
        arrays={"trajectory": proj, "explained-variance-ratio": ratio},
        attrs={
            "x-label": f"PC1 ({100 * ratio[0]:.1f}% of variance)",
            "y-label": f"PC2 ({100 * ratio[1]:.1f}% of variance)",
            "ignore": ignore,
            "trajectory-length": T,
        },
    )


def _pca_centred(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``X[:T] - X[T]`` (differences to the final checkpoint, the last row) and the same centred."""
    D = X[:-1] - X[-1]
    return D, D - D.mean(0)


def _pca_gram(rows: list[Weights], entries) -> np.ndarray:
    """The T x T Gram matrix of the centred differences, summed block by block in a fixed order
    (bit-reproducible whatever the thread count)."""
    T = len(rows) - 1
    parts = []
    for X in _blocks(rows, entries):
        _, Xc = _pca_centred(X)
        G = np.zeros((T, T))
        for i in range(T):
            G[i, i:] = np.add.reduce(Xc[i] * Xc[i:], axis=1)
        parts.append(G)
    G = np.triu(_exact_sum(parts))
    return G + np.triu(G, 1).T


def _pca_directions(rows: list[Weights], entries, weights_of_rows: np.ndarray):
    """The two directions ``d_k = sum_t Xc[t] w[t, k]`` entry by entry, the projections of the
    uncentred differences on them, and the signs that make each direction's largest entry
    positive: ``({name: ndarray} x 2, proj[T, 2], signs[2])``."""
    T = len(rows) - 1
    dirs: list[dict[str, np.ndarray]] = [{}, {}]
    proj_parts = []
    largest = [(0.0, 1.0), (0.0, 1.0)]  # (|entry|, sign) of each direction's largest entry
    for e in entries:
        pieces: list[list[np.ndarray]] = [[], []]
        for X in _entry_blocks(rows, e.name):
            D, Xc = _pca_centred(X)
            for k in range(2):
                d = np.zeros(Xc.shape[1])
                for t in range(T):
                    d += weights_of_rows[t, k] * Xc[t]
                pieces[k].append(d)
                i = int(np.argmax(np.abs(d)))
                if abs(d[i]) > largest[k][0]:
                    largest[k] = (abs(d[i]), math.copysign(1.0, d[i]))
            proj_parts.append(np.stack([np.add.reduce(D * pieces[k][-1], axis=1) for k in range(2)], 1))
        for k in range(2):
            dirs[k][e.name] = np.concatenate(pieces[k])
    signs = np.array([s for _, s in largest])
    return dirs, _exact_sum(proj_parts) * signs, signs


def _with_extras(direction: Weights, like: Weights) -> Weights:
    t = {n: (direction[n].clone() if like.layout[n].flat else like[n].clone()) for n in like.layout.names()}
    return Weights(t, like.layout)


def _label(w: Weights, default: str) -> str:
    import os

    return os.path.basename(w.source) if w.source else default
