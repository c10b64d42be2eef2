"""Coefficient functions of curves in weight space.

A curve with ``n`` bends has ``J = n + 2`` control points ``w_0 = A, w_1..w_n, w_{n+1} = B``
and is ``phi(t) = sum_j c_j(t) w_j``; these functions give ``c(t)`` (and ``c'(t)``) as
``[T, J]`` arrays, in NumPy (for point sets) and in PyTorch (differentiable, for training).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "bezier_coefficients",
    "bezier_derivative_coefficients",
    "polychain_coefficients",
    "polychain_derivative_coefficients",
]


def _as_t(t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64) if not torch.is_tensor(t) else t
    return t.reshape(-1)


def _check(n_bends: int) -> None:
    if int(n_bends) != n_bends or n_bends < 0:
        raise ValueError(f"n_bends should be a non-negative integer, got {n_bends!r}")


def bezier_coefficients(t, n_bends: int):
    """Bernstein polynomials of degree ``n = n_bends + 1``.

    .. math::

        c_j(t) = \\binom{n}{j} t^j (1-t)^{n-j}, \\qquad j = 0..n

    With one bend this is the quadratic Bezier curve of Garipov et al. (2018),
    :math:`\\phi(t) = (1-t)^2 w_1 + 2t(1-t)\\theta + t^2 w_2`.

    Parameters
    ----------
    t : array-like or Tensor[T]
    n_bends : int

    Returns
    -------
    ndarray[T, n_bends + 2] or Tensor[T, n_bends + 2]
        A Tensor (keeping autograd) when ``t`` is a Tensor.

    Examples
    --------
    >>> bezier_coefficients([0.0, 0.5, 1.0], 1).tolist()
    [[1.0, 0.0, 0.0], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]
    """
    _check(n_bends)
    is_np = not torch.is_tensor(t)
    tt = _as_t(t)[:, None]
    n = n_bends + 1
    j = torch.arange(n + 1, dtype=tt.dtype, device=tt.device)[None]
    binom = torch.tensor([math.comb(n, k) for k in range(n + 1)], dtype=tt.dtype, device=tt.device)[None]
    c = binom * tt.pow(j) * (1 - tt).pow(n - j)
    return c.numpy() if is_np else c


def bezier_derivative_coefficients(t, n_bends: int):
    """``dc_j/dt`` of :func:`bezier_coefficients`:
    :math:`n\\,[B_{j-1}^{n-1}(t) - B_j^{n-1}(t)]`."""
    _check(n_bends)
    is_np = not torch.is_tensor(t)
    tt = _as_t(t)
    n = n_bends + 1
    low = bezier_coefficients(tt, n_bends - 1) if n_bends >= 1 else torch.ones(tt.shape[0], 1, dtype=tt.dtype)
    zeros = torch.zeros(tt.shape[0], 1, dtype=tt.dtype, device=tt.device)
    d = n * (torch.cat([zeros, low], 1) - torch.cat([low, zeros], 1))
    return d.numpy() if is_np else d


def polychain_coefficients(t, n_bends: int):
    """Piecewise-linear coefficients of a polygonal chain with bends at ``t = j / (n+1)``.

    With one bend: :math:`\\phi(t) = 2(t\\theta + (0.5 - t)w_1)` on [0, 0.5] and
    :math:`2((t - 0.5)w_2 + (1 - t)\\theta)` on [0.5, 1] (Garipov et al. 2018).

    Examples
    --------
    >>> polychain_coefficients([0.0, 0.25, 0.5, 1.0], 1).tolist()
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    _check(n_bends)
    is_np = not torch.is_tensor(t)
    tt = _as_t(t)
    segments = n_bends + 1
    s = tt.clamp(0, 1) * segments
    idx = torch.clamp(torch.floor(s), max=segments - 1).long()
    frac = s - idx.to(s.dtype)
    c = torch.zeros(tt.shape[0], segments + 1, dtype=tt.dtype, device=tt.device)
    rows = torch.arange(tt.shape[0], device=tt.device)
    c = c.index_put((rows, idx), 1 - frac).index_put((rows, idx + 1), frac, accumulate=True)
    return c.numpy() if is_np else c


def polychain_derivative_coefficients(t, n_bends: int):
    """``dc_j/dt`` of :func:`polychain_coefficients` (right derivative at the bends)."""
    _check(n_bends)
    is_np = not torch.is_tensor(t)
    tt = _as_t(t)
    segments = n_bends + 1
    idx = torch.clamp(torch.floor(tt.clamp(0, 1) * segments), max=segments - 1).long()
    d = torch.zeros(tt.shape[0], segments + 1, dtype=tt.dtype, device=tt.device)
    rows = torch.arange(tt.shape[0], device=tt.device)
    d[rows, idx] = -float(segments)
    d[rows, idx + 1] = float(segments)
    return d.numpy() if is_np else d
