"""The operator protocol of :mod:`landscape.hessian` and seeded random vectors.

The solvers (power iteration, Lanczos, Hutchinson, stochastic Lanczos quadrature) take any
symmetric linear operator with

* ``n`` -- its dimension,
* ``op(v)`` -- :math:`Av` for ``v : Tensor[n]``, and ``op(V)`` -- the products row by row for
  ``V : Tensor[m, n]`` (several vectors in one call),
* optionally ``dtype`` and ``device`` (the vectors' dtype and device; float64 on the CPU if
  absent).

:class:`~landscape.hessian.HVP` is one; :func:`as_operator` makes one of a dense symmetric
matrix (tests, small problems). A *batched* operator (``batched = True``, ``m`` operators,
``op(V, indices)`` with one row of ``V`` per operator in ``indices``) is what
:func:`~landscape.hessian.lanczos_batched` runs on; :class:`~landscape.hessian.BatchedHVP`
is one.

Random vectors come from a CPU :class:`torch.Generator` seeded with ``seed`` and are drawn
in float64 before being cast and moved, so a seed gives the same vectors on every device
and in every dtype.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MatrixOperator", "as_operator", "operator_info", "operator_selection", "random_vectors"]


class MatrixOperator:
    """A dense symmetric matrix as an operator (products ``v @ A``).

    Parameters
    ----------
    A : Tensor[n, n] or array-like
        Symmetric; its dtype and device are the operator's.

    Examples
    --------
    >>> import torch
    >>> op = MatrixOperator(torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)))
    >>> op(torch.ones(3, dtype=torch.float64)).tolist(), op.count
    ([3.0, -1.0, 2.0], 1)
    """

    def __init__(self, A):
        A = torch.as_tensor(A)
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A should be a square matrix, got shape {list(A.shape)}")
        self.A = A
        self.n = A.shape[0]
        self.dtype = A.dtype
        self.device = A.device
        self.count = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        self.count += 1 if v.dim() == 1 else v.shape[0]
        return v @ self.A  # A symmetric: (A v^T)^T

    def __repr__(self) -> str:
        return f"MatrixOperator(n={self.n}, dtype={self.dtype})"


def as_operator(obj):
    """``obj`` if it follows the operator protocol, a :class:`MatrixOperator` of a square
    tensor or array, else a TypeError."""
    if hasattr(obj, "n") and callable(obj):
        return obj
    if torch.is_tensor(obj) or isinstance(obj, np.ndarray):
        return MatrixOperator(obj)
    raise TypeError(
        f"expected an operator (an object with .n that maps Tensor[n] to Tensor[n], e.g. HVP) or a "
        f"square matrix, got {type(obj).__name__}"
    )


def operator_info(op) -> tuple[int, torch.dtype, torch.device]:
    """``(n, dtype, device)`` of an operator; float64 and the CPU where it does not say."""
    return int(op.n), getattr(op, "dtype", torch.float64), torch.device(getattr(op, "device", "cpu"))


def operator_selection(op) -> dict | None:
    """The parameter selection an operator records (``op.selection`` of an
    :class:`~landscape.hessian.HVP`: rule, names or count and digest), or None."""
    sel = getattr(op, "selection", None)
    return dict(sel) if isinstance(sel, dict) else None


def random_vectors(
    m: int,
    n: int,
    *,
    seed: int,
    kind: str = "gaussian",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``Tensor[m, n]`` of seeded random vectors, the same for a seed on every device.

    Parameters
    ----------
    m, n : int
        Number and length of the vectors.
    seed : int
        Seed of a CPU generator; the vectors are drawn in float64 there, then cast and moved.
    kind : {"gaussian", "rademacher"}
        Standard normal entries, or independent signs +-1.

    Examples
    --------
    >>> v = random_vectors(2, 5, seed=0, kind="rademacher")
    >>> sorted(set(v.flatten().tolist()))
    [-1.0, 1.0]
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    if kind == "gaussian":
        v = torch.randn(m, n, generator=g, dtype=torch.float64)
    elif kind == "rademacher":
        v = torch.randint(0, 2, (m, n), generator=g).to(torch.float64).mul_(2).sub_(1)
    else:
        raise ValueError(f"kind should be 'gaussian' or 'rademacher', got {kind!r}")
    return v.to(device=device, dtype=dtype)
