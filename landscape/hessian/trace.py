"""The trace of a symmetric operator: Hutchinson's estimator and the exact sum.

Hutchinson (1989): for random vectors z with independent Rademacher (+-1) entries,
:math:`E[z^T A z] = \\mathrm{tr}(A)`; the mean of s samples has variance
:math:`2(\\lVert A\\rVert_F^2 - \\sum_i A_{ii}^2) / s`, estimated here by the samples' own
spread. :func:`exact_trace` sums :math:`e_i^T A e_i` over all n unit vectors (n products;
tiny models), and returns the diagonal too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .operators import as_operator, operator_info, operator_selection, random_vectors

__all__ = ["TraceEstimate", "exact_trace", "hutchinson"]


@dataclass
class TraceEstimate:
    """A trace and its uncertainty.

    Attributes
    ----------
    estimate : float
        The trace (estimate).
    stderr : float
        Standard error of the estimate (0 for the exact sum).
    samples : ndarray[s]
        The quadratic forms :math:`z^T A z` that were averaged (for :func:`exact_trace`:
        the diagonal of A).
    hvps : int
        Operator products used.
    selection : dict or None
        The operator's parameter selection (:attr:`HVP.selection
        <landscape.hessian.HVP.selection>`: rule, names or their count and digest); None for
        operators that have none (matrices).
    """

    estimate: float
    stderr: float
    samples: np.ndarray
    hvps: int
    selection: dict | None = None


def _quadratic_forms(op, Z: torch.Tensor, vectors_per_call: int) -> np.ndarray:
    """:math:`z^T A z` for the rows z of ``Z``, several rows per operator call."""
    out = []
    for i in range(0, Z.shape[0], vectors_per_call):
        block = Z[i : i + vectors_per_call]
        AZ = op(block[0])[None] if block.shape[0] == 1 else op(block)
        out.append(torch.linalg.vecdot(block, AZ).to(device="cpu", dtype=torch.float64))
    return torch.cat(out).numpy()


def hutchinson(op, samples: int = 100, *, seed: int = 0, vectors_per_call: int = 8) -> TraceEstimate:
    """Hutchinson's estimate of the trace with seeded Rademacher vectors.

    Parameters
    ----------
    op : operator or Tensor[n, n]
        Symmetric (see :mod:`landscape.hessian.operators`).
    samples : int
        Number of random vectors (at least 2, for the standard error).
    seed : int
        Seed of the vectors (the estimate is deterministic on the CPU).
    vectors_per_call : int
        Vectors per operator call (``op(V)`` on ``[m, n]``; 1 for operators that take single
        vectors only).

    Returns
    -------
    TraceEstimate
        ``estimate`` is the mean of the samples, ``stderr`` their standard deviation
        (ddof 1) over the square root of ``samples``.

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> hutchinson(A, samples=4).estimate  # exact for a diagonal matrix: z_i^2 = 1
    15.0
    """
    if samples < 2:
        raise ValueError(f"samples should be at least 2 (for a standard error), got {samples}")
    op = as_operator(op)
    n, dtype, device = operator_info(op)
    Z = random_vectors(samples, n, seed=seed, kind="rademacher", dtype=dtype, device=device)
    q = _quadratic_forms(op, Z, max(1, int(vectors_per_call)))
    return TraceEstimate(
        estimate=float(q.mean()),
        stderr=float(q.std(ddof=1) / np.sqrt(samples)),
        samples=q,
        hvps=samples,
        selection=operator_selection(op),
    )


def exact_trace(op, *, vectors_per_call: int = 64) -> TraceEstimate:
    """The trace as :math:`\\sum_i e_i^T A e_i` over all n unit vectors (n products).

    Returns
    -------
    TraceEstimate
        ``stderr`` 0 and ``samples`` the diagonal of A.

    Examples
    --------
    >>> import torch
    >>> exact_trace(torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)).estimate
    -1.0
    """
    op = as_operator(op)
    n, dtype, device = operator_info(op)
    diag = []
    for i in range(0, n, vectors_per_call):
        E = torch.zeros(min(vectors_per_call, n - i), n, dtype=dtype, device=device)
        E[torch.arange(E.shape[0]), torch.arange(i, i + E.shape[0])] = 1
        diag.append(_quadratic_forms(op, E, E.shape[0]))
    d = np.concatenate(diag)
    return TraceEstimate(estimate=float(d.sum()), stderr=0.0, samples=d, hvps=n, selection=operator_selection(op))
