"""Learning-rate schedules of the fast-ensembling methods, as functions of the iteration.

Iterations are counted from 1, as in the seeds' formulas.

* FGE (Garipov et al. 2018; seed 004): a triangular cycle of length ``c`` between
  :math:`\\alpha_1` and :math:`\\alpha_2`,

  .. math::

      t(i) = \\frac{\\operatorname{mod}(i - 1, c) + 1}{c}, \\qquad
      \\alpha(i) = \\begin{cases}
          (1 - 2t(i))\\,\\alpha_1 + 2t(i)\\,\\alpha_2 & 0 < t(i) \\le \\tfrac12 \\\\
          (2 - 2t(i))\\,\\alpha_2 + (2t(i) - 1)\\,\\alpha_1 & \\tfrac12 < t(i) \\le 1
      \\end{cases}

  so the rate reaches :math:`\\alpha_2` at :math:`\\operatorname{mod}(i, c) = c/2`, where FGE
  collects its snapshots, and :math:`\\alpha_1` at the end of each cycle.
* Snapshot ensembles (Huang et al. 2017; seed 004): cosine restarts, ``M`` cycles over
  ``T`` iterations,

  .. math::

      \\alpha(t) = \\frac{\\alpha_0}{2}\\Bigl(\\cos\\Bigl(\\frac{\\pi\\,\\operatorname{mod}(t - 1,
      \\lceil T/M \\rceil)}{\\lceil T/M \\rceil}\\Bigr) + 1\\Bigr).
* SWA as its repository trains (``train.py``'s ``schedule``), per epoch :math:`e` counted
  from 1 with :math:`t = (e - 1) / s` for ``swa_start`` :math:`s` and
  :math:`r = \\alpha_{SWA} / \\alpha_0`:

  .. math::

      \\alpha(e) = \\alpha_0 \\cdot \\begin{cases}
          1 & t \\le 0.5 \\\\
          1 - (1 - r)(t - 0.5) / 0.4 & 0.5 < t \\le 0.9 \\\\
          r & t > 0.9
      \\end{cases}

  constant, then a linear decay to :math:`\\alpha_{SWA}` between 50% and 90% of the pre-SWA
  phase, then :math:`\\alpha_{SWA}` to the end (the averaging phase has :math:`t \\ge 1`).
* SWA (Izmailov et al. 2018; seed 002), the averaging phase alone: constant
  :math:`\\alpha_1`, or cyclical :math:`\\alpha(i) = (1 - t(i))\\,\\alpha_1 + t(i)\\,\\alpha_2` with the ``t(i)`` above (a
  linear decay from :math:`\\alpha_1` to :math:`\\alpha_2` within each cycle of length ``c``,
  the SWA paper's schedule; ``torch.optim.swa_utils.SWALR`` has no cyclical mode).
"""

from __future__ import annotations

import math

__all__ = ["cycle_position", "fge_lr", "sse_lr", "swa_epoch_lr", "swa_lr"]


def _check_iteration(i: int) -> int:
    if int(i) != i or i < 1:
        raise ValueError(f"iterations are counted from 1, got {i!r}")
    return int(i)


def cycle_position(i: int, c: int) -> float:
    """:math:`t(i) = (\\operatorname{mod}(i - 1, c) + 1) / c`, in ``(0, 1]``."""
    i = _check_iteration(i)
    if int(c) != c or c < 1:
        raise ValueError(f"cycle length c should be a positive integer, got {c!r}")
    return ((i - 1) % int(c) + 1) / int(c)


def fge_lr(i: int, alpha1: float, alpha2: float, c: int) -> float:
    """FGE's triangular learning rate at iteration ``i`` (see the module docs).

    Examples
    --------
    >>> [round(fge_lr(i, 0.05, 0.0005, 4), 6) for i in range(1, 9)]
    [0.02525, 0.0005, 0.02525, 0.05, 0.02525, 0.0005, 0.02525, 0.05]
    """
    if int(c) != c or c < 2 or c % 2:
        raise ValueError(f"FGE's cycle length c should be an even integer >= 2, got {c!r}")
    t = cycle_position(i, c)
    if t <= 0.5:
        return (1 - 2 * t) * alpha1 + 2 * t * alpha2
    return (2 - 2 * t) * alpha2 + (2 * t - 1) * alpha1


def sse_lr(t: int, alpha0: float, T: int, M: int) -> float:
    """Snapshot ensembles' cosine learning rate at iteration ``t`` of ``T``, ``M`` cycles.

    Examples
    --------
    >>> [round(sse_lr(t, 0.1, 8, 2), 6) for t in range(1, 9)]
    [0.1, 0.085355, 0.05, 0.014645, 0.1, 0.085355, 0.05, 0.014645]
    """
    t = _check_iteration(t)
    if int(M) != M or M < 1 or int(T) != T or T < M:
        raise ValueError(f"need integers T >= M >= 1, got T={T!r}, M={M!r}")
    period = math.ceil(T / M)
    return alpha0 / 2 * (math.cos(math.pi * ((t - 1) % period) / period) + 1)


def swa_lr(i: int, alpha1: float, alpha2: float | None = None, c: int | None = None) -> float:
    """SWA's learning rate: constant ``alpha1`` (``c`` None), or cyclical from ``alpha1`` down
    to ``alpha2`` within each cycle of ``c`` iterations.

    Examples
    --------
    >>> [round(swa_lr(i, 0.05, 0.01, 4), 6) for i in range(1, 6)]
    [0.04, 0.03, 0.02, 0.01, 0.04]
    >>> swa_lr(7, 0.02)
    0.02
    """
    _check_iteration(i)
    if c is None:
        return float(alpha1)
    if alpha2 is None:
        raise ValueError("the cyclical SWA schedule needs alpha2")
    t = cycle_position(i, c)
    return (1 - t) * alpha1 + t * alpha2


def swa_epoch_lr(e: int, lr: float, swa_lr: float, swa_start: int) -> float:
    """The SWA repository's learning rate for epoch ``e`` (counted from 1) of a run whose
    average starts after ``swa_start`` epochs (see the module docs); ``swa_start=0`` has no
    pre-SWA phase: ``swa_lr`` throughout.

    Examples
    --------
    >>> [round(swa_epoch_lr(e, 0.1, 0.05, 10), 6) for e in range(1, 13)]
    [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.05, 0.05]
    """
    e = _check_iteration(e)
    if int(swa_start) != swa_start or swa_start < 0:
        raise ValueError(f"swa_start should be a non-negative integer of epochs, got {swa_start!r}")
    if swa_start == 0:
        return float(swa_lr)
    if not lr > 0:
        raise ValueError(f"the pre-SWA rate lr should be positive, got {lr!r}")
    t = (e - 1) / int(swa_start)
    ratio = swa_lr / lr
    if t <= 0.5:
        factor = 1.0
    elif t <= 0.9:
        factor = 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4
    else:
        factor = ratio
    return lr * factor
