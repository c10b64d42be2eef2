"""Hessians of the dataset loss at weight points: products, eigenvalues, trace, spectrum.

Everything here works from exact Hessian-vector products; no Hessian is ever formed.

=================================  ==========================================================
name                               what
=================================  ==========================================================
:class:`HVP`                       :math:`Hv` of the dataset loss at one point (all
                                   parameters or a selection), several vectors per pass
:class:`BatchedHVP`                one product per point of a point set, points vmapped
:func:`gradient`                   the dataset loss and its gradient at a point
:func:`layer_selections`           parameter names per module (per-layer Hessians)
:func:`parameter_selection`        the selection an HVP uses (rule, names), as results record it
:func:`power_iteration`            top-k eigenpairs by magnitude, with deflation
:func:`lanczos`                    :math:`\\lambda_{max}` and :math:`\\lambda_{min}` together,
                                   with Ritz residuals
:func:`lanczos_batched`            m Lanczos runs in lock step (surface maps, SLQ probes)
:func:`lanczos_step_reference`     the batched step's bookkeeping in plain PyTorch
:func:`extreme_eigenvalues`        :math:`\\lambda_{max}`, :math:`\\lambda_{min}`, ratio, cost
:func:`hutchinson`                 trace estimate with a standard error
:func:`exact_trace`                trace (and diagonal) from all unit vectors
:func:`slq`                        spectral density by stochastic Lanczos quadrature (drawn by
                                   :func:`landscape.plot.plot_density`)
:func:`as_operator`                a dense symmetric matrix as an operator
=================================  ==========================================================

The data is anything :func:`landscape.batches.as_source` reads (tensors, DataLoaders,
Datasets, lists of tuple or dict batches); the loss is cross-entropy, another metric
(``"token_loss"``) or a callable. By default the Hessian is over the parameters the model
trains (``requires_grad=True``); every result records its selection.

The model is evaluated in eval mode at the point: BatchNorm layers normalise with the
point's own running statistics (buffers are part of the point) and dropout is off, so the
Hessian is that of the loss the checkpoint computes at test time.

Examples
--------
>>> import torch, landscape as ls
>>> from landscape import hessian
>>> g = torch.Generator().manual_seed(0)
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
>>> data = (torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
>>> op = hessian.HVP(model, ls.Weights.from_module(model), data, dtype=torch.float64)
>>> ev = hessian.extreme_eigenvalues(op, tol=1e-8)
>>> ev.converged, ev.lambda_min <= 0 <= ev.lambda_max, ev.hvps <= op.n
(True, True, True)
"""

from __future__ import annotations

from .density import SpectralDensity, slq
from .eig import (
    ExtremeEigenvalues,
    LanczosResult,
    PowerIterationResult,
    extreme_eigenvalues,
    lanczos,
    lanczos_batched,
    lanczos_step_reference,
    power_iteration,
    tridiagonal_eigh,
)
from .hvp import HVP, METHODS, BatchedHVP, gradient, layer_selections, parameter_selection
from .maps import MAP_METRICS, HessianMap, eigen_map, surface_points
from .operators import MatrixOperator, as_operator, random_vectors
from .trace import TraceEstimate, exact_trace, hutchinson

__all__ = [
    "BatchedHVP",
    "ExtremeEigenvalues",
    "HVP",
    "HessianMap",
    "LanczosResult",
    "MAP_METRICS",
    "METHODS",
    "MatrixOperator",
    "PowerIterationResult",
    "SpectralDensity",
    "TraceEstimate",
    "as_operator",
    "eigen_map",
    "exact_trace",
    "extreme_eigenvalues",
    "gradient",
    "hutchinson",
    "lanczos",
    "lanczos_batched",
    "lanczos_step_reference",
    "layer_selections",
    "parameter_selection",
    "power_iteration",
    "random_vectors",
    "slq",
    "surface_points",
    "tridiagonal_eigh",
]
