"""Extreme eigenvalues of a symmetric operator: power iteration and Lanczos.

:func:`power_iteration` finds the top-k eigenpairs by magnitude (deflation by projection);
:func:`lanczos` finds the largest and the smallest (algebraic) eigenvalue together from one
Krylov basis, with full reorthogonalisation; :func:`extreme_eigenvalues` wraps it in the
numbers a report needs (:math:`\\lambda_{max}`, :math:`\\lambda_{min}`, their ratio).

Batched Lanczos
---------------
:func:`lanczos_batched` runs m independent Lanczos iterations in lock step: m operators
(a :class:`~landscape.hessian.BatchedHVP` over the cells of a surface map, or a list of
operators), or m starting vectors on one operator (stochastic Lanczos quadrature). The
Krylov bases are one tensor ``Q : [m, steps + 1, n]`` and every step's bookkeeping -- the
dot products, the three-term recurrence, the reorthogonalisation against the stored basis,
the normalisation -- is one call of a *step function* on the whole batch:

``step(Q, w, j, beta_prev, reorthogonalize) -> (alpha, beta, q_next)``

:func:`lanczos_step_reference` (defined in :mod:`landscape.ops.lanczos_step`) is that
function in plain PyTorch, and the definition of its result. An accelerated implementation
(the fused C++/CUDA op :func:`landscape.ops.lanczos_step`) is passed as ``step=`` and must
agree with the reference to rounding; the driver around it (operator calls, tridiagonal
eigenproblems in float64, convergence, results) does not change. The small ``[m, s, s]``
tridiagonal eigenproblems are solved on the CPU in float64 with one batched
:func:`torch.linalg.eigh`.

Convergence
-----------
After step s, with the tridiagonal :math:`T_s = Y \\Theta Y^T`, the Ritz pair
:math:`(\\theta_i, Q_s y_i)` has residual :math:`\\lVert A Q_s y_i - \\theta_i Q_s y_i\\rVert =
|\\beta_s\\, y_{s,i}|` (exact in exact arithmetic with an orthonormal basis, which the full
reorthogonalisation maintains). A row stops when both extreme Ritz values have
``residual <= max(tol * |theta|, atol)``, when ``beta_s`` vanishes (the Krylov space is
invariant: its Ritz values are exact eigenvalues), or after ``max_iter`` steps. Note that a
Ritz value is an eigenvalue of the operator only within the residual: an eigenvalue can
still be missed if the start vector has (nearly) no component along its eigenvector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..ops.lanczos_step import REORTHOGONALIZE, lanczos_step_reference
from .operators import as_operator, operator_info, operator_selection, random_vectors

__all__ = [
    "ExtremeEigenvalues",
    "LanczosResult",
    "PowerIterationResult",
    "extreme_eigenvalues",
    "lanczos",
    "lanczos_batched",
    "lanczos_step_reference",
    "power_iteration",
    "tridiagonal_eigh",
]

_BREAKDOWN = 1e3  # beta below this many machine epsilons of the operator's scale: an invariant subspace


# ---------------------------------------------------------------------------- power iteration
@dataclass
class PowerIterationResult:
    """Top-k eigenpairs by magnitude.

    Attributes
    ----------
    eigenvalues : ndarray[k]
        Rayleigh quotients, in the order found (decreasing magnitude when converged).
    eigenvectors : Tensor[k, n]
        Unit vectors, in the operator's dtype and device.
    residuals : ndarray[k]
        :math:`\\lVert Av - \\lambda v\\rVert` of each pair.
    iterations : ndarray[k]
        Products spent on each pair.
    converged : ndarray[k] of bool
        Whether the deflated residual reached ``tol * |eigenvalue|``.
    selection : dict or None
        The operator's parameter selection (:attr:`HVP.selection
        <landscape.hessian.HVP.selection>`: rule, names or their count and digest); None for
        operators that have none (matrices).
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    residuals: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    selection: dict | None = None

    @property
    def hvps(self) -> int:
        """Operator products used in total."""
        return int(self.iterations.sum())


def power_iteration(op, k: int = 1, *, tol: float = 1e-6, max_iter: int = 1000, seed: int = 0) -> PowerIterationResult:
    """The k eigenvalues of largest magnitude, by power iteration with deflation.

    Eigenpair i iterates :math:`v \\leftarrow P A v / \\lVert P A v\\rVert` with P the
    projection off the i - 1 eigenvectors already found, from a seeded Gaussian start,
    until the deflated residual :math:`\\lVert PAv - \\lambda v\\rVert \\le tol\\,|\\lambda|`
    with the Rayleigh quotient :math:`\\lambda = v^T A v`; the reported residual is that of
    A itself, which also holds the error of the earlier eigenvectors (about
    :math:`|\\lambda_j - \\lambda_i|` times their angle to the true ones). It converges at the rate
    :math:`|\\lambda_{i+1} / \\lambda_i|` per product, so close eigenvalues (or a pair
    :math:`\\pm\\lambda`) take many iterations; :func:`lanczos` is much faster for the
    extreme algebraic eigenvalues.

    Parameters
    ----------
    op : operator or Tensor[n, n]
        Symmetric (see :mod:`landscape.hessian.operators`).
    k : int
        Number of eigenpairs.
    tol : float
        Relative residual to reach.
    max_iter : int
        Products per eigenpair at most.
    seed : int
        Seed of the start vectors (deterministic on the CPU).

    Returns
    -------
    PowerIterationResult

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.tensor([1.0, -4.0, 2.0, 0.5], dtype=torch.float64))
    >>> res = power_iteration(A, k=2, tol=1e-10, max_iter=500)
    >>> [round(float(x), 8) for x in res.eigenvalues], bool(res.converged.all())
    ([-4.0, 2.0], True)
    """
    op = as_operator(op)
    n, dtype, device = operator_info(op)
    if not 1 <= k <= n:
        raise ValueError(f"k should lie in [1, n = {n}], got {k}")
    starts = random_vectors(k, n, seed=seed, dtype=dtype, device=device)
    U = torch.zeros(0, n, dtype=dtype, device=device)
    values, residuals, iterations, converged = [], [], [], []
    for i in range(k):
        v = starts[i] - U.T @ (U @ starts[i])
        v = v / torch.linalg.vector_norm(v)
        lam, r, done, it = 0.0, float("inf"), False, 0
        for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
            w = op(v)
            lam = float(torch.dot(v, w))
            r = float(torch.linalg.vector_norm(w - lam * v))
            w = w - U.T @ (U @ w)  # the deflated operator P A P (v is orthogonal to U already)
            if float(torch.linalg.vector_norm(w - lam * v)) <= tol * abs(lam):
                done = True
                break
            norm = torch.linalg.vector_norm(w)
            if float(norm) == 0.0:  # v lies in the null space left: eigenvalue 0
                done = r == 0.0
                break
            v = w / norm
        values.append(lam)
        residuals.append(r)
        iterations.append(it)
        converged.append(done)
        U = torch.cat([U, v[None]])
    return PowerIterationResult(
        eigenvalues=np.asarray(values, dtype=np.float64),
        eigenvectors=U,
        residuals=np.asarray(residuals, dtype=np.float64),
        iterations=np.asarray(iterations, dtype=np.int64),
        converged=np.asarray(converged, dtype=bool),
        selection=operator_selection(op),
    )


# ---------------------------------------------------------------------------- Lanczos
@dataclass
class LanczosResult:
    """One Lanczos run: the extreme Ritz values and everything they came from.

    Attributes
    ----------
    lambda_max, lambda_min : float
        Largest and smallest Ritz value.
    residuals : ndarray[2]
        Ritz residual estimates :math:`|\\beta_s y_{s,i}|` of ``lambda_max`` and ``lambda_min``.
    steps : int
        Lanczos steps taken (= operator products, the size s of the tridiagonal matrix).
    converged : bool
        Both extremes met the tolerance, or the Krylov space became invariant.
    ritz_values : ndarray[s]
        All Ritz values, ascending (the eigenvalues of the tridiagonal matrix).
    ritz_residuals : ndarray[s]
        Their residual estimates.
    ritz_weights : ndarray[s]
        Squared first components of the tridiagonal's eigenvectors: the Gauss quadrature
        weights of the start vector's spectral measure (they sum to 1).
    alpha, beta : ndarray[s]
        The tridiagonal matrix: diagonal, and off-diagonal followed by the last ``beta_s``.
    vectors : Tensor[2, n] or None
        Ritz vectors of ``lambda_max`` and ``lambda_min`` when asked for.
    selection : dict or None
        The operator's parameter selection (:attr:`HVP.selection
        <landscape.hessian.HVP.selection>`: rule, names or their count and digest); None for
        operators that have none (matrices).
    """

    lambda_max: float
    lambda_min: float
    residuals: np.ndarray
    steps: int
    converged: bool
    ritz_values: np.ndarray
    ritz_residuals: np.ndarray
    ritz_weights: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    vectors: torch.Tensor | None = None
    selection: dict | None = None

    @property
    def hvps(self) -> int:
        """Operator products used (one per step)."""
        return self.steps

    @property
    def ratio(self) -> float:
        """:math:`|\\lambda_{min} / \\lambda_{max}|`."""
        return abs(self.lambda_min / self.lambda_max) if self.lambda_max != 0 else float("inf")


def tridiagonal_eigh(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a batch of symmetric tridiagonal matrices.

    Parameters
    ----------
    alpha : Tensor[m, s]
        Diagonals.
    beta : Tensor[m, s - 1]
        Off-diagonals.

    Returns
    -------
    theta : Tensor[m, s]
        Eigenvalues, ascending.
    Y : Tensor[m, s, s]
        Eigenvectors in the columns.
    """
    T = torch.diag_embed(alpha)
    if beta.shape[-1]:
        T = T + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return torch.linalg.eigh(T)


def _batched_apply(op, m: int | None):
    """``(apply(V, rows), m, n, dtype, device, shared_start)`` for the kinds of batch."""
    if isinstance(op, (list, tuple)):
        ops = [as_operator(o) for o in op]
        if not ops:
            raise ValueError("lanczos_batched needs at least one operator")
        n, dtype, device = operator_info(ops[0])
        if any(int(o.n) != n for o in ops):
            raise ValueError(f"operators have different dimensions {sorted({int(o.n) for o in ops})}")
        if m is not None and m != len(ops):
            raise ValueError(f"m = {m} for {len(ops)} operators")

        def apply(V, rows):
            return torch.stack([ops[r](V[i]) for i, r in enumerate(rows.tolist())])

        return apply, len(ops), n, dtype, device, True
    op = as_operator(op)
    n, dtype, device = operator_info(op)
    if getattr(op, "batched", False):
        if m is not None and m != op.m:
            raise ValueError(f"m = {m} for a batched operator of {op.m} operators")
        return (lambda V, rows: op(V, indices=rows)), op.m, n, dtype, device, True
    m = 1 if m is None else int(m)

    def apply_one(V, rows):
        return op(V[0])[None] if V.shape[0] == 1 else op(V)

    return apply_one, m, n, dtype, device, False


def _extremes_converged(theta, res, tol: float, atol: float, relative_to: str) -> torch.Tensor:
    """Whether both extreme Ritz values of each run have residuals within the tolerance:
    ``tol`` times the spectral radius (``relative_to="spectrum"``) or each eigenvalue, at
    least ``atol``; never when both are 0 (run to the step limit)."""
    if not (tol > 0 or atol > 0):
        return torch.zeros(theta.shape[0], dtype=torch.bool)
    if relative_to == "spectrum":
        radius = torch.maximum(theta[:, -1].abs(), theta[:, 0].abs())
        lim_hi = lim_lo = torch.clamp(tol * radius, min=atol)
    else:
        lim_hi = torch.clamp(tol * theta[:, -1].abs(), min=atol)
        lim_lo = torch.clamp(tol * theta[:, 0].abs(), min=atol)
    return (res[:, -1] <= lim_hi) & (res[:, 0] <= lim_lo)


def _lanczos_result(theta, Y, res, alpha, beta, converged: bool, vectors, selection) -> LanczosResult:
    """One run's result from its Ritz values ``theta[s]``, eigenvectors ``Y[s, s]`` of the
    tridiagonal matrix, residuals ``res[s]`` and coefficients."""
    return LanczosResult(
        lambda_max=float(theta[-1]),
        lambda_min=float(theta[0]),
        residuals=np.array([float(res[-1]), float(res[0])]),
        steps=int(alpha.shape[0]),
        converged=converged,
        ritz_values=theta.numpy().copy(),
        ritz_residuals=res.numpy().copy(),
        ritz_weights=(Y[0, :] ** 2).numpy().copy(),
        alpha=alpha.numpy().copy(),
        beta=beta.numpy().copy(),
        vectors=vectors,
        selection=selection,
    )


def lanczos_batched(
    op,
    m: int | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    atol: float = 0.0,
    relative_to: str = "eigenvalue",
    seed: int = 0,
    v0: torch.Tensor | None = None,
    reorthogonalize: str = "full",
    vectors: bool = False,
    step: Callable | None = None,
) -> list[LanczosResult]:
    """m Lanczos runs in lock step, sharing every operator call and bookkeeping step.

    Parameters
    ----------
    op : batched operator, sequence of operators, or operator
        m independent operators -- a batched operator such as
        :class:`~landscape.hessian.BatchedHVP` (``op(V, indices=rows)``) or a list of
        operators -- or one operator run from ``m`` start vectors (``op(V)`` on ``[m, n]``).
    m : int, optional
        Number of runs for a single operator (default 1); must match the others.
    max_iter : int
        Steps at most (at most n).
    tol, atol : float
        A run stops when the residual estimates of both extreme Ritz values are at most
        ``max(tol * |theta|, atol)``; with both 0 every run takes ``max_iter`` steps (or
        stops at an invariant subspace).
    relative_to : {"eigenvalue", "spectrum"}
        What ``tol`` is relative to: each extreme Ritz value's own magnitude, or the larger
        of the two (the spectral radius: both ends to the same absolute accuracy, which is
        what an eigenvalue ratio :math:`|\\lambda_{min}/\\lambda_{max}|` needs when
        :math:`\\lambda_{min}` is near 0).
    seed : int
        Seed of the start vectors when ``v0`` is None: one Gaussian vector shared by all
        rows for m operators (so row i equals ``lanczos(op_i, seed=seed)``), m independent
        ones for m starts on one operator.
    v0 : Tensor[n] or Tensor[m, n], optional
        Start vectors (normalised here).
    reorthogonalize : {"full", "none"}
        See :func:`lanczos_step_reference`.
    vectors : bool
        Also return the Ritz vectors of the extremes.
    step : callable, optional
        The step function (default :func:`lanczos_step_reference`).

    Returns
    -------
    list of LanczosResult
        One per row. Memory: the bases, ``m * (max_iter + 1) * n`` values of the operator's
        dtype; runs that stop early leave the batch (their rows are dropped from it).
    """
    if reorthogonalize not in REORTHOGONALIZE:
        raise ValueError(f"reorthogonalize should be one of {REORTHOGONALIZE}, got {reorthogonalize!r}")
    if relative_to not in ("eigenvalue", "spectrum"):
        raise ValueError(f"relative_to should be 'eigenvalue' or 'spectrum', got {relative_to!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter should be at least 1, got {max_iter}")
    apply, m, n, dtype, device, shared = _batched_apply(op, m)
    if isinstance(op, (list, tuple)):
        selections = [operator_selection(o) for o in op]
    else:
        selections = [operator_selection(op)] * m
    step = step or lanczos_step_reference
    S = min(int(max_iter), n)
    if v0 is None:
        v0 = random_vectors(1 if shared else m, n, seed=seed, dtype=dtype, device=device)
    v0 = torch.as_tensor(v0).to(device=device, dtype=dtype)
    v0 = v0.reshape(-1, n).expand(m, n) if v0.numel() == n else v0
    if v0.shape != (m, n):
        raise ValueError(f"v0 should have shape [{n}] or [{m}, {n}], got {list(v0.shape)}")
    norms = torch.linalg.vector_norm(v0, dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("v0 has a zero vector")
    Q = torch.zeros(m, S + 1, n, dtype=dtype, device=device)
    Q[:, 0] = v0 / norms
    alpha = torch.zeros(m, S, dtype=torch.float64)
    beta = torch.zeros(m, S, dtype=torch.float64)
    scale = torch.zeros(m, dtype=torch.float64)
    rows = torch.arange(m)  # which original run each row of Q holds
    results: list[LanczosResult | None] = [None] * m
    eps = torch.finfo(dtype).eps
    for j in range(S):
        W = apply(Q[:, j], rows)
        prev = beta[:, j - 1] if j else torch.zeros(len(rows), dtype=torch.float64)
        a, b, q_next = step(Q, W, j, prev.to(device=device, dtype=dtype), reorthogonalize)
        Q[:, j + 1] = q_next
        alpha[:, j] = a.detach().to(device="cpu", dtype=torch.float64)
        beta[:, j] = b.detach().to(device="cpu", dtype=torch.float64)
        scale = torch.maximum(scale, torch.maximum(alpha[:, j].abs(), beta[:, j]))
        s = j + 1
        theta, Y = tridiagonal_eigh(alpha[:, :s], beta[:, : s - 1])
        res = (beta[:, j, None] * Y[:, -1, :]).abs()
        invariant = (beta[:, j] <= _BREAKDOWN * eps * scale) | (s == n)
        met = _extremes_converged(theta, res, tol, atol, relative_to)
        done = met | invariant | (s == S)
        if not bool(done.any()):
            continue
        for i in torch.nonzero(done).flatten().tolist():
            vec = None
            if vectors:
                y = Y[i][:, [-1, 0]].to(device=device, dtype=dtype)
                vec = (Q[i, :s].T @ y).T.contiguous()
            r = int(rows[i])
            converged = bool(met[i] | invariant[i])
            results[r] = _lanczos_result(
                theta[i], Y[i], res[i], alpha[i, :s], beta[i, :s], converged, vec, selections[r]
            )
        keep = ~done
        if not bool(keep.any()):
            break
        keep_dev = keep.to(device)
        Q, alpha, beta, scale, rows = Q[keep_dev], alpha[keep], beta[keep], scale[keep], rows[keep]
    return results  # type: ignore[return-value]


def lanczos(
    op,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    atol: float = 0.0,
    relative_to: str = "eigenvalue",
    seed: int = 0,
    v0: torch.Tensor | None = None,
    reorthogonalize: str = "full",
    vectors: bool = False,
) -> LanczosResult:
    """The largest and smallest eigenvalue of a symmetric operator, by Lanczos.

    One run of :func:`lanczos_batched` (see there and the module docstring for the
    arguments and the stopping rule).

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.linspace(-1.0, 3.0, 50, dtype=torch.float64))
    >>> res = lanczos(A, tol=1e-10)
    >>> round(res.lambda_max, 8), round(res.lambda_min, 8), bool(res.converged), res.steps < 50
    (3.0, -1.0, True, True)
    """
    if getattr(op, "batched", False) or isinstance(op, (list, tuple)):
        raise TypeError("lanczos takes one operator; use lanczos_batched for several")
    return lanczos_batched(
        op,
        1,
        max_iter=max_iter,
        tol=tol,
        atol=atol,
        relative_to=relative_to,
        seed=seed,
        v0=v0,
        reorthogonalize=reorthogonalize,
        vectors=vectors,
    )[0]


@dataclass
class ExtremeEigenvalues:
    """The extreme eigenvalues of a Hessian and what they cost.

    Attributes
    ----------
    lambda_max, lambda_min : float
        Largest and smallest (algebraic) eigenvalue.
    ratio : float
        :math:`|\\lambda_{min} / \\lambda_{max}|` (Li et al. 2018 map it over surfaces).
    residuals : ndarray[2]
        Residual estimates of ``lambda_max`` and ``lambda_min``.
    hvps : int
        Hessian-vector products used.
    converged : bool
        Whether the tolerance was met.
    selection : dict or None
        The operator's parameter selection (:attr:`HVP.selection
        <landscape.hessian.HVP.selection>`: rule, names or their count and digest); None for
        operators that have none (matrices).
    """

    lambda_max: float
    lambda_min: float
    ratio: float
    residuals: np.ndarray
    hvps: int
    converged: bool
    selection: dict | None = None

    @classmethod
    def from_lanczos(cls, res: LanczosResult) -> ExtremeEigenvalues:
        return cls(res.lambda_max, res.lambda_min, res.ratio, res.residuals, res.hvps, res.converged, res.selection)


def extreme_eigenvalues(
    op, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0, reorthogonalize: str = "full"
) -> ExtremeEigenvalues | list[ExtremeEigenvalues]:
    """:math:`\\lambda_{max}`, :math:`\\lambda_{min}` and their ratio by :func:`lanczos`.

    Parameters
    ----------
    op : operator, Tensor[n, n], batched operator or sequence of operators
        One operator (an :class:`~landscape.hessian.HVP`), or several (a
        :class:`~landscape.hessian.BatchedHVP` or a list), run in lock step by
        :func:`lanczos_batched`.
    tol : float
        Relative residual of both extremes (1e-3: three digits, the usual accuracy of
        curvature maps).
    max_iter : int
        Products at most (per operator).
    seed : int
        Seed of the start vector.

    Returns
    -------
    ExtremeEigenvalues, or a list of them for several operators
    """
    several = getattr(op, "batched", False) or isinstance(op, (list, tuple))
    runs = lanczos_batched(
        op, None if several else 1, tol=tol, max_iter=max_iter, seed=seed, reorthogonalize=reorthogonalize
    )
    out = [ExtremeEigenvalues.from_lanczos(r) for r in runs]
    return out if several else out[0]
