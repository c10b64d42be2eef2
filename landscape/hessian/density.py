"""The spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a unit start vector q, s Lanczos steps give the tridiagonal :math:`T_s = Y\\Theta Y^T`;
its eigenvalues :math:`\\theta_i` (nodes) and the squared first components
:math:`w_i = Y_{1i}^2` (weights) are the s-point Gauss quadrature of q's spectral measure:
:math:`\\sum_i w_i f(\\theta_i) \\approx q^T f(A) q`, exactly for polynomials f of degree up
to 2s - 1. With q a normalised Rademacher vector, :math:`E[q^T f(A) q] = \\mathrm{tr} f(A)
/ n`, so averaging the quadratures of several random starts estimates the spectral density
:math:`\\phi(t) = \\frac{1}{n}\\sum_j \\delta(t - \\lambda_j)` as a sum of weighted nodes
(Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019). Smoothing each node with a
Gaussian of width ``sigma`` gives a density on a grid (:meth:`SpectralDensity.density`), which
:func:`landscape.plot.plot_density` draws.

The moments :math:`\\sum_i w_i \\theta_i^p` of one probe are exact quadratic forms
:math:`q^T A^p q` for :math:`p \\le 2s - 1`; their mean over probes is an unbiased estimate
of :math:`\\mathrm{tr}(A^p) / n` (Hutchinson's estimator for p = 1), with the standard error
of :meth:`SpectralDensity.moment_stderr`. With all n unit vectors as starts the average is
exact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .eig import lanczos_batched
from .operators import as_operator, operator_info, operator_selection, random_vectors

__all__ = ["SpectralDensity", "slq"]


@dataclass
class SpectralDensity:
    """Quadrature nodes and weights of several Lanczos runs.

    Attributes
    ----------
    nodes : ndarray[probes, s]
        Ritz values of each probe (ascending; runs that stopped early at an invariant
        subspace are padded with zero-weight nodes).
    weights : ndarray[probes, s]
        Their Gauss quadrature weights; each row sums to 1.
    n : int
        Dimension of the operator.
    hvps : int
        Operator products used.
    selection : dict or None
        The operator's parameter selection (:attr:`HVP.selection
        <landscape.hessian.HVP.selection>`: rule, names or their count and digest); None for
        operators that have none (matrices).
    """

    nodes: np.ndarray
    weights: np.ndarray
    n: int
    hvps: int
    selection: dict | None = None

    @property
    def probes(self) -> int:
        return int(self.nodes.shape[0])

    def save(self, path: str | os.PathLike, *, attrs: Mapping[str, Any] | None = None, force: bool = False) -> str:
        """Write a result file of kind ``"hessian-density"``: grid ``[probes, steps]``,
        metrics ``nodes`` and ``weights`` (cell (i, j): the j-th node of probe i and its
        weight), attributes ``n``, ``hvps``, ``selection`` and ``attrs`` (the checkpoint,
        the loss, the data...). :meth:`load` reads it back; returns ``path``."""
        from ..io import create_result

        file_attrs = dict(attrs or {})
        file_attrs.update(n=int(self.n), hvps=int(self.hvps), selection=self.selection)
        values = {"nodes": np.asarray(self.nodes, np.float64), "weights": np.asarray(self.weights, np.float64)}
        shape = values["nodes"].shape
        with create_result(
            path, kind="hessian-density", shape=shape, metrics=list(values), attrs=file_attrs, force=force
        ) as rf:
            rf.write_cells(np.arange(values["nodes"].size), {k: v.reshape(-1) for k, v in values.items()})
        return os.fspath(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpectralDensity:
        """Read a file written by :meth:`save` (:func:`landscape.io.read_density`)."""
        from ..io import read_density

        data = read_density(path)
        data.pop("attrs")
        return cls(**data)

    def probe_moments(self, p: int) -> np.ndarray:
        """:math:`\\sum_i w_i \\theta_i^p` of each probe (``ndarray[probes]``)."""
        return (self.weights * self.nodes**p).sum(1)

    def moment(self, p: int) -> float:
        """The p-th moment of the density: the estimate of :math:`\\mathrm{tr}(A^p) / n`."""
        return float(self.probe_moments(p).mean())

    def moments(self, orders=(0, 1, 2)) -> np.ndarray:
        """:meth:`moment` for several orders."""
        return np.array([self.moment(p) for p in orders])

    def moment_stderr(self, p: int) -> float:
        """Standard error of :meth:`moment` from the spread over probes (NaN for one probe)."""
        q = self.probe_moments(p)
        return float(q.std(ddof=1) / np.sqrt(len(q))) if len(q) > 1 else float("nan")

    def default_sigma(self) -> float:
        """1 % of the range of the nodes that carry weight (a small absolute width if that is 0)."""
        live = self.nodes[self.weights > 0]
        span = float(live.max() - live.min()) if live.size else 0.0
        return 0.01 * span if span > 0 else 1e-3 * max(1.0, float(np.abs(live).max(initial=0.0)))

    def density(self, grid=None, *, sigma: float | None = None, num: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """The density smoothed with a Gaussian kernel.

        Parameters
        ----------
        grid : array-like, optional
            Where to evaluate; default ``num`` points from 5 ``sigma`` below the smallest
            node to 5 ``sigma`` above the largest.
        sigma : float, optional
            Standard deviation of the kernel (default :meth:`default_sigma`).

        Returns
        -------
        grid, density : ndarray
            The density integrates to 1; its mean is ``moment(1)`` and its second moment
            ``moment(2) + sigma**2``.
        """
        sigma = float(sigma) if sigma is not None else self.default_sigma()
        if sigma <= 0:
            raise ValueError(f"sigma should be positive, got {sigma}")
        if grid is None:
            live = self.nodes[self.weights > 0]
            grid = np.linspace(live.min() - 5 * sigma, live.max() + 5 * sigma, int(num))
        grid = np.asarray(grid, dtype=np.float64)
        w = self.weights.reshape(-1) / self.probes
        z = (grid[:, None] - self.nodes.reshape(-1)[None, :]) / sigma
        return grid, (np.exp(-0.5 * z**2) * w).sum(1) / (sigma * np.sqrt(2 * np.pi))


def slq(
    op,
    probes: int = 10,
    steps: int = 30,
    *,
    seed: int = 0,
    starts: torch.Tensor | None = None,
    reorthogonalize: str = "full",
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: the spectral density from ``probes`` random starts.

    Parameters
    ----------
    op : operator or Tensor[n, n]
        Symmetric; called on ``[probes, n]`` blocks (the probes run in lock step through
        :func:`~landscape.hessian.lanczos_batched`, so an :class:`~landscape.hessian.HVP`
        computes all of a step's products in one vmapped pass; memory grows with
        ``probes``).
    probes : int
        Number of random (Rademacher) start vectors.
    steps : int
        Lanczos steps per probe (nodes per probe), at most n.
    seed : int
        Seed of the start vectors.
    starts : Tensor[m, n], optional
        Start vectors instead of random ones (normalised here); the identity gives the
        exact moments.
    reorthogonalize : {"full", "none"}
        See :func:`~landscape.hessian.lanczos_step_reference`.

    Returns
    -------
    SpectralDensity

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.linspace(0.0, 1.0, 40, dtype=torch.float64))
    >>> sd = slq(A, probes=4, steps=10, seed=0)
    >>> sd.nodes.shape, round(sd.moment(0), 12)
    ((4, 10), 1.0)
    """
    op = as_operator(op)
    n, dtype, device = operator_info(op)
    if starts is None:
        if probes < 1:
            raise ValueError(f"probes should be at least 1, got {probes}")
        starts = random_vectors(probes, n, seed=seed, kind="rademacher", dtype=dtype, device=device)
    starts = torch.as_tensor(starts)
    if starts.dim() != 2 or starts.shape[1] != n:
        raise ValueError(f"starts should have shape [m, {n}], got {list(starts.shape)}")
    runs = lanczos_batched(op, starts.shape[0], max_iter=steps, tol=0.0, v0=starts, reorthogonalize=reorthogonalize)
    s = max(r.steps for r in runs)
    nodes = np.zeros((len(runs), s))
    weights = np.zeros((len(runs), s))
    for i, r in enumerate(runs):
        nodes[i, : r.steps] = r.ritz_values
        weights[i, : r.steps] = r.ritz_weights
    return SpectralDensity(
        nodes=nodes, weights=weights, n=n, hvps=sum(r.hvps for r in runs), selection=operator_selection(op)
    )
