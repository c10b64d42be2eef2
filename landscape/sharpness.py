"""Sharpness: how much the loss rises in a neighbourhood of a weight point.

Every measure is a loss increase :math:`L(w + \\delta) - L(w)` over perturbations
:math:`\\delta` of the selected parameters (all parameters the model trains, by default):

``worst-case`` (Foret et al. 2021, SAM; m-sharpness of Andriushchenko et al. 2023)
    :math:`\\max_{\\lVert \\epsilon \\rVert_p \\le \\rho} L_b(w + T_w \\epsilon) - L_b(w)`,
    averaged over batches ``b`` of ``m`` samples (each batch its own maximiser; ``m=None``:
    the whole data as one batch, the plain definition). ``T_w = 1`` for plain sharpness;
    ``adaptive=True`` scales the ball elementwise, ``T_w = |w| + eta`` (Kwon et al. 2021,
    ASAM). ``norm="l2"`` or ``"linf"`` (the ball or the box).
``keskar`` (Keskar et al. 2017, the large-batch paper)
    the worst case over the box :math:`|\\delta_i| \\le \\epsilon (|w_i| + 1)` (``linf``,
    adaptive with ``eta = 1``), reported as :math:`100 \\, (\\max L - L) / (1 + L)`.
``gaussian`` (average case, Andriushchenko et al. 2023)
    :math:`E_{\\epsilon \\sim N(0, \\sigma^2 I)} L(w + T_w \\epsilon) - L(w)`, estimated from
    ``samples`` perturbations with a Student-t confidence interval.
``sphere``
    the same mean over :math:`\\epsilon` uniform on the sphere :math:`\\lVert \\epsilon
    \\rVert_2 = \\rho`.
``direction`` (Li et al. 2018)
    the mean increase :math:`L(w + \\alpha d) - L(w)` along filter-normalized random
    directions ``d`` (:func:`landscape.directions.random_direction`: biases and BatchNorm
    parameters left out) at step :math:`\\alpha`.

How they are computed
---------------------
The worst case is found by projected gradient ascent in :math:`\\epsilon` (gradients from
:class:`landscape.hessian.HVP`, :func:`torch.func.functional_call` on a private copy of the
model): a normalized-gradient step (``l2``) or a sign step (``linf``) of size ``step_size``
(default :math:`2\\rho`, the starting step of Andriushchenko et al.), projected back on the
ball, accepted when the loss rises and otherwise halved from the best point so far; the
value is the best loss seen (at least :math:`L_b(w)`: :math:`\\delta = 0` is in the ball).
``init="zero"`` (theirs, the default) or ``"random"`` (a random point on the sphere, in the
box) -- at an exact stationary point the ascent needs the random start. Andriushchenko et
al. add momentum and a checkpointed step-size schedule (APGD); we keep the plain ascent
(``docs/parity.md``-style difference, stated in the result's settings).

The random perturbations are points :math:`w + \\delta_k`: a
:class:`~landscape.pointset.PointSet` with basis :math:`[w, \\delta_1, ..., \\delta_K]` and
coefficient rows :math:`(1, e_k)`, evaluated many per pass by :func:`landscape.evaluate`.
Perturbation ``k`` is drawn from its own generator seeded by ``(seed, k)``: the same
:math:`\\epsilon_k` serves every ``gaussian`` and ``sphere`` radius (common random numbers)
and a resumed run draws exactly the perturbations it had not evaluated.

BatchNorm and the perturbed entries
-----------------------------------
As Andriushchenko et al. (``model.eval()``): the model runs in eval mode, BatchNorm normalises
with the point's running statistics, which are buffers and never perturbed; BatchNorm's
affine weights and biases are parameters and are perturbed like any other (``params`` selects
others, as :class:`landscape.hessian.HVP` does). Adaptive scaling applies to every perturbed
parameter, biases included (Andriushchenko et al.; ASAM's code leaves biases unscaled): with
``eta = 0`` this makes adaptive sharpness invariant to rescaling a ReLU layer by ``a`` and the
next by ``1/a``.

Results go to a ``sharpness`` file (``docs/h5-format.md``) through
:func:`landscape.io.open_or_create`: one cell per perturbation or batch, written as it
finishes, so a killed run resumes without recomputing finished cells.

References
----------
Keskar, Mudigere, Nocedal, Smelyanskiy, Tang. "On Large-Batch Training for Deep Learning:
Generalization Gap and Sharp Minima", ICLR 2017.
Foret, Kleiner, Mobahi, Neyshabur. "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021.
Kwon, Kim, Park, Choi. "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
Learning of Deep Neural Networks", ICML 2021.
Andriushchenko, Croce, Mueller, Hein, Flammarion. "A Modern Look at the Relationship between
Sharpness and Generalization", ICML 2023.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .batches import as_source
from .directions import random_direction
from .evaluate import describe_data, evaluate_points
from .hessian import HVP
from .metrics import Metric, resolve_metrics
from .pointset import PointSet
from .weights import Weights

__all__ = [
    "KINDS",
    "Measure",
    "SharpnessReport",
    "SharpnessValue",
    "average_sharpness",
    "compute_sharpness",
    "direction_sharpness",
    "read_sharpness",
    "worst_case_sharpness",
]

KINDS = ("worst-case", "keskar", "gaussian", "sphere", "direction")
#: the metrics of every cell of a sharpness file
METRICS = ("loss", "base_loss", "norm", "count")
_RANDOM = ("gaussian", "sphere", "direction")
_PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64}


@dataclass(frozen=True)
class Measure:
    """One sharpness measure at one radius.

    Parameters
    ----------
    kind : {"worst-case", "keskar", "gaussian", "sphere", "direction"}
        See the module docstring.
    radius : float
        :math:`\\rho` (worst-case, sphere), :math:`\\epsilon` (keskar), :math:`\\sigma`
        (gaussian) or the step :math:`\\alpha` (direction); positive.
    adaptive : bool
        Scale the perturbation elementwise by ``|w| + eta`` (worst-case, gaussian, sphere).
    eta : float
        The offset of the adaptive scale (Andriushchenko et al.: 0; ASAM: 0.01).
    norm : {"l2", "linf"}
        The ball of ``worst-case``.

    ``keskar`` is the ``linf`` worst case, adaptive with ``eta = 1``, whatever is given.

    Examples
    --------
    >>> Measure("worst-case", 0.05, adaptive=True).label
    'adaptive worst-case l2 rho=0.05'
    >>> Measure("keskar", 1e-3).record()["eta"]
    1.0
    """

    kind: str
    radius: float
    adaptive: bool = False
    eta: float = 0.0
    norm: str = "l2"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"sharpness kind {self.kind!r} is unknown; expected one of {', '.join(KINDS)}")
        r = self.radius
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"{self.kind} radius should be a positive number, got {r!r}")
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta should be a number >= 0, got {self.eta!r}")
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"norm should be 'l2' or 'linf', got {self.norm!r}")
        if self.kind == "direction" and self.adaptive:
            raise ValueError("direction sharpness is filter-normalized already; adaptive=True does not apply")
        if self.kind == "keskar":
            object.__setattr__(self, "norm", "linf")
            object.__setattr__(self, "adaptive", True)
            object.__setattr__(self, "eta", 1.0)
        object.__setattr__(self, "radius", float(r))
        object.__setattr__(self, "eta", float(self.eta))

    @property
    def random(self) -> bool:
        """Whether the measure averages over random perturbations (else an ascent)."""
        return self.kind in _RANDOM

    @property
    def label(self) -> str:
        """A short name, e.g. ``"gaussian sigma=0.01"``."""
        symbol = {"worst-case": "rho", "sphere": "rho", "keskar": "eps", "gaussian": "sigma", "direction": "step"}
        kind = f"{self.kind} {self.norm}" if self.kind == "worst-case" else self.kind
        text = f"{'adaptive ' if self.adaptive and self.kind != 'keskar' else ''}{kind} {symbol[self.kind]}={self.radius:g}"
        if self.adaptive and self.eta and self.kind != "keskar":
            text += f" eta={self.eta:g}"
        return text

    def record(self) -> dict[str, Any]:
        """The measure as plain data (result-file attributes)."""
        return {"kind": self.kind, "radius": self.radius, "adaptive": self.adaptive, "eta": self.eta, "norm": self.norm}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Measure:
        return cls(rec["kind"], rec["radius"], adaptive=rec["adaptive"], eta=rec["eta"], norm=rec["norm"])


@dataclass
class SharpnessValue:
    """One measure's cells and their summary.

    Attributes
    ----------
    measure : Measure
    increase : float
        The mean loss increase: over perturbations (random measures), or over batches weighted
        by their sample counts (worst case).
    value : float
        What the measure reports: ``increase``, or for ``keskar`` :math:`100 \\cdot`
        increase / (1 + base loss).
    ci : tuple of float or None
        The ``confidence`` interval of ``increase`` (random measures, at least 2 samples):
        Student t with K - 1 degrees of freedom, :math:`\\bar x \\pm t\\, s / \\sqrt{K}`.
    base_loss : float
        :math:`L(w)` on the measure's samples (count-weighted mean over batches).
    losses, base_losses, norms, counts : ndarray[cells]
        Per cell (perturbation or batch): the perturbed loss, :math:`L(w)` on its samples,
        :math:`\\lVert \\delta \\rVert_2` and the number of samples.
    """

    measure: Measure
    increase: float
    value: float
    ci: tuple[float, float] | None
    base_loss: float
    losses: np.ndarray
    base_losses: np.ndarray
    norms: np.ndarray
    counts: np.ndarray

    @property
    def increases(self) -> np.ndarray:
        """``ndarray[cells]``: the loss increase of every cell."""
        return self.losses - self.base_losses


@dataclass
class SharpnessReport:
    """Every measure of a run (:func:`compute_sharpness`, :func:`read_sharpness`).

    Attributes
    ----------
    values : list of SharpnessValue
        One per measure, in the order asked.
    loss : float
        :math:`L(w)` on the whole data (the engine's value at the unperturbed point).
    settings : dict
        The run's settings as the file records them (samples, m, steps, step size, init,
        seed, loss, parameter selection, precision).
    computed : int
        Cells computed by this call (fewer than all when resuming).
    seconds : float
    file : str or None
    """

    values: list[SharpnessValue]
    loss: float
    settings: dict[str, Any]
    computed: int = 0
    seconds: float = 0.0
    file: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, label: str) -> SharpnessValue:
        for v in self.values:
            if v.measure.label == label:
                return v
        raise KeyError(f"no measure {label!r}; the measures are {[v.measure.label for v in self.values]}")

    def table(self) -> str:
        """The measures as a text table (what ``landscape sharpness`` prints)."""
        conf = self.settings.get("confidence", 0.95)
        head = f"{'measure':40s} {'value':>12s} {'increase':>12s} {f'{conf:.0%} CI of increase':>26s} {'cells':>6s}"
        lines = [head]
        for v in self.values:
            ci = f"[{v.ci[0]:.4g}, {v.ci[1]:.4g}]" if v.ci is not None else "-"
            lines.append(f"{v.measure.label:40s} {v.value:12.5g} {v.increase:12.5g} {ci:>26s} {len(v.losses):6d}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- one measure


def worst_case_sharpness(
    model: nn.Module,
    weights: Weights,
    data,
    rho: float,
    *,
    adaptive: bool = False,
    eta: float = 0.0,
    norm: str = "l2",
    **kwargs,
) -> SharpnessValue:
    """Worst-case (``adaptive``: ASAM's adaptive) sharpness at ``weights``.

    .. math::

        S_\\rho(w) = \\frac{1}{B} \\sum_b \\max_{\\lVert \\epsilon \\rVert \\le \\rho}
        L_b(w + T_w \\epsilon) - L_b(w), \\qquad T_w = |w| + \\eta \\text{ (adaptive) or } 1

    Parameters
    ----------
    model : nn.Module
        The structure (never modified).
    weights : Weights
        The point ``w``.
    data : TensorData, (x, y), DataLoader, ...
        The samples of the loss (Andriushchenko et al. use 1024 training samples).
    rho : float
        Radius of the ball.
    adaptive, eta, norm
        See :class:`Measure`.
    **kwargs
        Those of :func:`compute_sharpness` (``m``, ``steps``, ``step_size``, ``init``,
        ``params``, ``loss``, ``seed``, ``precision``, ``device``...).

    Returns
    -------
    SharpnessValue

    Examples
    --------
    >>> import torch, landscape as ls
    >>> g = torch.Generator().manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> data = (torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
    >>> s = worst_case_sharpness(model, ls.Weights.from_module(model), data, 0.1, m=32, progress=False)
    >>> s.value >= 0, len(s.losses)
    (True, 2)
    """
    measure = Measure("worst-case", rho, adaptive=adaptive, eta=eta, norm=norm)
    return compute_sharpness(model, weights, data, [measure], **kwargs).values[0]


def average_sharpness(
    model: nn.Module,
    weights: Weights,
    data,
    sigma: float,
    *,
    distribution: str = "gaussian",
    adaptive: bool = False,
    eta: float = 0.0,
    **kwargs,
) -> SharpnessValue:
    """Average-case sharpness: the mean loss increase under random perturbations.

    .. math::

        E_{\\epsilon} L(w + T_w \\epsilon) - L(w), \\qquad \\epsilon \\sim N(0, \\sigma^2 I)
        \\ (\\texttt{"gaussian"}) \\text{ or uniform on } \\lVert \\epsilon \\rVert_2 = \\sigma
        \\ (\\texttt{"sphere"})

    estimated from ``samples`` perturbations (:func:`compute_sharpness`) evaluated many per
    pass by the engine, with a Student-t confidence interval. Other parameters as
    :func:`worst_case_sharpness`.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> g = torch.Generator().manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> data = (torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
    >>> s = average_sharpness(model, ls.Weights.from_module(model), data, 0.05, samples=20, progress=False)
    >>> s.ci[0] <= s.increase <= s.ci[1], len(s.losses)
    (True, 20)
    """
    if distribution not in ("gaussian", "sphere"):
        raise ValueError(f"distribution should be 'gaussian' or 'sphere', got {distribution!r}")
    measure = Measure(distribution, sigma, adaptive=adaptive, eta=eta)
    return compute_sharpness(model, weights, data, [measure], **kwargs).values[0]


def direction_sharpness(model: nn.Module, weights: Weights, data, step: float, **kwargs) -> SharpnessValue:
    """The mean loss increase :math:`L(w + \\alpha d_k) - L(w)` along ``samples``
    filter-normalized random directions :math:`d_k` (Li et al. 2018) at step ``step``
    (:math:`\\alpha`); other parameters as :func:`worst_case_sharpness`."""
    return compute_sharpness(model, weights, data, [Measure("direction", step)], **kwargs).values[0]


# ---------------------------------------------------------------------------- the run


def compute_sharpness(
    model: nn.Module,
    weights: Weights,
    data,
    measures: Sequence[Measure],
    *,
    samples: int = 100,
    m: int | None = None,
    steps: int = 20,
    step_size: float | None = None,
    init: str = "zero",
    params: Iterable[str] | None = None,
    loss: str | Callable | Metric = "loss",
    seed: int = 0,
    confidence: float = 0.95,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    points_per_pass: int | None = None,
    max_memory: int | float | None = None,
    path: str = "auto",
    forward: Callable | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
    allow_large: bool = False,
) -> SharpnessReport:
    """Several sharpness measures at one point, written to a resumable ``sharpness`` file.

    Parameters
    ----------
    model, weights, data
        As :func:`worst_case_sharpness`.
    measures : sequence of Measure
    samples : int
        Perturbations (directions) per random measure.
    m : int, optional
        Samples per batch of the worst case (m-sharpness): the data is cut into consecutive
        batches of ``m`` (a loader's batches split into pieces of at most ``m``), each with
        its own ascent, and the increases averaged weighted by sample count. Default: the
        whole data as one batch.
    steps : int
        Gradient evaluations of each ascent after the starting point.
    step_size : float, optional
        The first step, relative to the radius (default 2: a step of :math:`2\\rho`).
    init : {"zero", "random"}
        Where the ascent starts.
    params : iterable of str, optional
        The perturbed parameters (default: those with ``requires_grad``).
    loss : str, callable or Metric
        The loss (``"loss"``: mean cross-entropy; ``fn(output, target)`` a batch mean).
    seed : int
        Seeds every perturbation and random start (perturbation k from ``(seed, k)``).
    confidence : float
        Level of the confidence intervals.
    precision : {"fp32", "fp64"}
    device, batch_size, points_per_pass, max_memory, path, forward
        As :func:`landscape.evaluate` (``batch_size`` also cuts the ascent's passes).
    out : path, optional
        The HDF5 file (kind ``sharpness``); ``resume``/``force`` continue or replace it.
    attrs : mapping, optional
        Extra file attributes (model spec, checkpoint and digest, data spec...).
    progress : bool
    allow_large : bool
        Run even when the perturbations of a measure would exceed the available memory.

    Returns
    -------
    SharpnessReport
    """
    t0 = time.perf_counter()
    measures = _check_measures(measures)
    _check_settings(samples, m, steps, step_size, init, confidence, precision)
    metric = resolve_metrics([loss])[0]
    dtype = _PRECISIONS[precision]
    source = as_source(data)
    n_batches = _count_batches(source, m) if any(not q.random for q in measures) else 0
    rows = _row_sizes(measures, samples, n_batches)
    settings = _settings(samples, m, steps, step_size, init, seed, metric.name, precision, confidence)
    center = HVP(model, weights, data, params=params, loss=metric, device=device, dtype=dtype, forward=forward)
    settings["params"] = center.selection
    file_attrs = _file_attrs(measures, settings, data, attrs)
    _check_memory(measures, samples, weights, device, allow_large)
    cells = _open_cells(out, rows, file_attrs, resume, force, allow_large)
    engine = dict(precision=precision, device=device, batch_size=batch_size, points_per_pass=points_per_pass, path=path)
    engine.update(max_memory=max_memory, forward=forward, progress=progress)
    try:
        pending = set(cells.pending().tolist())
        computed = len(pending)
        offsets = np.concatenate([[0], np.cumsum(rows)])
        if 0 in pending:
            res = evaluate_points(model, PointSet.explicit([weights]), data, [metric], desc="sharpness: L(w)", **engine)
            n = source.num_samples()
            cells.write_cells(
                [0], {"loss": res[metric.name], "base_loss": res[metric.name], "norm": [0.0], "count": [n]}
            )
        center_loss = float(cells.read_metric("base_loss")[0])
        for r, q in enumerate(measures, 1):
            todo = sorted(i - offsets[r] for i in pending if offsets[r] <= i < offsets[r + 1])
            if not todo:
                continue
            if q.random:
                _random_cells(
                    model, weights, data, q, todo, int(offsets[r]), center, center_loss, cells, metric, seed, engine
                )
            else:
                opts = dict(
                    params=params, loss=metric, device=device, dtype=dtype, forward=forward, batch_size=batch_size
                )
                _ascent_cells(model, weights, source, q, m, todo, int(offsets[r]), cells, settings, opts, progress)
        metrics = {name: cells.read_metric(name) for name in METRICS}
    finally:
        cells.close()
    report = _summarize(measures, rows, metrics, settings)
    report.computed, report.seconds = computed, time.perf_counter() - t0
    report.file = os.fspath(out) if out is not None else None
    return report


def _settings(samples, m, steps, step_size, init, seed, loss_name, precision, confidence) -> dict[str, Any]:
    """The settings that define a run (file attributes, compared when resuming)."""
    return {
        "samples": int(samples),
        "m": m,
        "steps": int(steps),
        "step-size": 2.0 if step_size is None else float(step_size),
        "init": init,
        "seed": int(seed),
        "loss": loss_name,
        "precision": precision,
        "confidence": float(confidence),
        "ascent": "projected normalized-gradient (l2) / sign (linf) ascent, step halved when the loss falls",
        "bn": "running (eval mode; running statistics never perturbed)",
    }


def _file_attrs(measures, settings, data, extra) -> dict[str, Any]:
    """The attributes of a sharpness file: the measures (and their labels, for figures), the
    settings, the data and the caller's."""
    out = {"measures": [q.record() for q in measures], "labels": [q.label for q in measures], **settings}
    out["data"] = describe_data(data)
    out.update(dict(extra or {}))
    return out


def _check_measures(measures) -> list[Measure]:
    measures = list(measures)
    if not measures:
        raise ValueError("no sharpness measure asked for; expected at least one Measure")
    for q in measures:
        if not isinstance(q, Measure):
            raise TypeError(f"measures should be Measure objects, got {type(q).__name__}")
    labels = [q.label for q in measures]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"measures asked for twice: {dup}")
    return measures


def _positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} should be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def _check_settings(samples, m, steps, step_size, init, confidence, precision) -> None:
    _positive_int("samples", samples)
    _positive_int("m", m, allow_none=True)
    _positive_int("steps", steps)
    if step_size is not None and not (
        isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0
    ):
        raise ValueError(f"step_size should be a positive number (relative to the radius) or None, got {step_size!r}")
    if init not in ("zero", "random"):
        raise ValueError(f"init should be 'zero' or 'random', got {init!r}")
    if not (isinstance(confidence, float) and 0 < confidence < 1):
        raise ValueError(f"confidence should be a number in (0, 1), got {confidence!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision should be one of {tuple(_PRECISIONS)}, got {precision!r}")


def _count_batches(source, m: int | None) -> int:
    """The batches of the worst case: 1 without ``m``; in-memory data: ceil(N / m); others:
    one counting pass."""
    if m is None:
        return 1
    if source.in_memory:
        return -(-source.n // m)
    return sum(1 for _ in source.batches(m, split=True))


def _row_sizes(measures: Sequence[Measure], samples: int, n_batches: int) -> list[int]:
    """Cells per row: the unperturbed point, then each measure."""
    return [1] + [samples if q.random else n_batches for q in measures]


def _check_memory(measures, samples: int, weights: Weights, device, allow_large: bool) -> None:
    """The perturbations of one random measure are held together: checked before any work."""
    if not any(q.random for q in measures):
        return
    from . import budget

    P = weights.layout.size
    item = next((t.element_size() for t in weights.tensors.values() if t.is_floating_point()), 4)
    parts = {"weights": P * item, "perturbations of one measure": samples * P * item, "one float64 draw": P * 8}
    budget.check_memory(parts, f"{samples} perturbations of {P} weights", device=device, allow_large=allow_large)


# ---------------------------------------------------------------------------- cells


class _MemoryCells:
    """The cells of a run without a file: the interface of :class:`landscape.io.ResultFile`
    that :func:`compute_sharpness` uses."""

    def __init__(self, size: int):
        self.metrics = {name: np.full(size, np.nan) for name in METRICS}
        self.done = np.zeros(size, dtype=bool)

    def pending(self) -> np.ndarray:
        return np.flatnonzero(~self.done)

    def write_cells(self, idx, values: Mapping[str, Any]) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        for name in METRICS:
            self.metrics[name][idx] = np.asarray(values[name], dtype=np.float64)
        self.done[idx] = True

    def read_metric(self, name: str) -> np.ndarray:
        return self.metrics[name].copy()

    def close(self) -> None:
        pass


def _open_cells(out, rows: list[int], attrs: dict, resume: bool, force: bool, allow_large: bool):
    row = np.repeat(np.arange(len(rows), dtype=np.int64), rows)
    sample = np.concatenate([np.arange(n, dtype=np.int64) for n in rows])
    if out is None:
        return _MemoryCells(len(row))
    from . import io

    return io.open_or_create(
        out,
        kind="sharpness",
        shape=(len(row),),
        metrics=METRICS,
        attrs=attrs,
        arrays={"row": row, "sample": sample},
        resume=resume,
        force=force,
        allow_large=allow_large,
    )


# ---------------------------------------------------------------------------- random perturbations


def _generator(seed: int, k: int) -> torch.Generator:
    """The generator of perturbation ``k``: its own stream, from ``(seed, k)``."""
    state = np.random.SeedSequence([int(seed), int(k)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) % (1 << 63))


def _scale(center: HVP, q: Measure) -> torch.Tensor:
    """``T_w`` over the selection: ``|w| + eta`` (adaptive) or ones, float64 on the CPU."""
    w = center.flatten(center.sel, 0).detach().to("cpu", torch.float64)
    return w.abs() + q.eta if q.adaptive else torch.ones_like(w)


def _perturbation(weights: Weights, q: Measure, k: int, seed: int, center: HVP, scale: torch.Tensor) -> Weights:
    """Perturbation ``k`` of measure ``q`` as Weights (zero outside the selection)."""
    gen = _generator(seed, k)
    mask = center.mask
    delta = torch.zeros(weights.layout.size, dtype=torch.float64)
    if q.kind == "direction":
        d = random_direction(weights, norm="filter", ignore="biasbn", seed=gen).flatten(torch.float64)
        delta[mask] = q.radius * d[mask]
    else:
        z = torch.randn(center.n, generator=gen, dtype=torch.float32).to(torch.float64)
        eps = q.radius * z if q.kind == "gaussian" else q.radius * z / z.norm()
        delta[mask] = scale * eps
    like = next(t for t in weights.tensors.values() if t.is_floating_point())
    flat = delta.to(like.dtype)
    return Weights(weights.unflatten(flat), weights.layout)


def _random_cells(model, weights, data, q, todo, offset, center, center_loss, cells, metric, seed, engine) -> None:
    """The pending perturbations ``todo`` of a random measure, through the engine."""
    scale = _scale(center, q)
    deltas = [_perturbation(weights, q, k, seed, center, scale) for k in todo]
    norms = np.array([float(d.flatten(torch.float64)[center.mask].norm()) for d in deltas])
    coeffs = np.zeros((len(todo), 1 + len(todo)))
    coeffs[:, 0] = 1.0
    coeffs[np.arange(len(todo)), 1 + np.arange(len(todo))] = 1.0
    points = PointSet.from_weights([weights, *deltas], coeffs)
    n = as_source(data).num_samples()
    todo_arr = np.asarray(todo, dtype=np.int64)

    def write(idx, vals):
        cells.write_cells(
            offset + todo_arr[idx],
            {
                "loss": vals[metric.name],
                "base_loss": np.full(len(idx), center_loss),
                "norm": norms[idx],
                "count": np.full(len(idx), n),
            },
        )

    evaluate_points(model, points, data, [metric], on_chunk=write, desc=f"sharpness: {q.label}", **engine)


# ---------------------------------------------------------------------------- worst case


def _batch_data(batch):
    """A batch as data for :class:`~landscape.hessian.HVP`: tensors as a pair, others as a
    one-batch list."""
    raw = batch.raw
    if isinstance(raw, tuple) and len(raw) == 2 and all(torch.is_tensor(t) for t in raw):
        return raw
    return [raw]


def _ascent_cells(model, weights, source, q: Measure, m, todo, offset: int, cells, settings, opts, progress) -> None:
    """The pending batches ``todo`` of a worst-case measure, one ascent each."""
    wanted = set(todo)
    bar = _bar(len(todo) * (settings["steps"] + 1), f"sharpness: {q.label}", progress)
    try:
        batches = [(None, source.data)] if m is None else enumerate(source.batches(m, split=True))
        for b, batch in batches:
            b = 0 if b is None else b
            if b not in wanted:
                continue
            data_b = batch if m is None else _batch_data(batch)
            op = HVP(model, weights, data_b, method="double-backward", reuse_graph=False, **opts)
            gen = _generator(settings["seed"], offset + b)
            base, best, norm = ascend(
                op,
                q,
                steps=settings["steps"],
                step_size=settings["step-size"],
                init=settings["init"],
                generator=gen,
                bar=bar,
            )
            count = op.loss_count if op.loss_count is not None else float("nan")
            cells.write_cells([offset + b], {"loss": [best], "base_loss": [base], "norm": [norm], "count": [count]})
    finally:
        bar.close()


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="grad", leave=False, dynamic_ncols=True)


def ascend(
    op: HVP,
    measure: Measure,
    *,
    steps: int = 20,
    step_size: float = 2.0,
    init: str = "zero",
    generator: torch.Generator | None = None,
    bar=None,
) -> tuple[float, float, float]:
    """Projected gradient ascent of the loss of ``op`` over :math:`\\lVert \\epsilon \\rVert
    \\le \\rho`, :math:`\\delta = T_w \\epsilon`.

    Parameters
    ----------
    op : landscape.hessian.HVP
        The loss (its data: one batch) at the point ``w``; gradients from
        :meth:`~landscape.hessian.HVP.gradient_at`.
    measure : Measure
        A worst-case (or keskar) measure: radius, norm, adaptive scale.
    steps : int
        Gradient evaluations after the start.
    step_size : float
        The first step relative to the radius; halved whenever a step lowers the loss (the
        ascent then restarts from the best point).
    init : {"zero", "random"}
    generator : torch.Generator, optional
        Draws the random start (on the CPU).

    Returns
    -------
    base_loss, best_loss, norm : float
        :math:`L(w)`, the largest loss seen (at least :math:`L(w)`) and
        :math:`\\lVert \\delta \\rVert_2` where it was seen.
    """
    bar = bar or _NoBar()
    rho = measure.radius
    w = op.flatten(op.sel, 0).detach()
    T = (w.abs() + measure.eta) if measure.adaptive else torch.ones_like(w)
    zero = torch.zeros_like(w)
    base, grad = op.gradient_at(zero)
    bar.update(1)
    eps = zero
    if init == "random":
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        if measure.norm == "l2":
            z = torch.randn(w.shape, generator=gen, dtype=torch.float64)
            eps = (rho * z / z.norm()).to(w)
        else:
            eps = (rho * (2 * torch.rand(w.shape, generator=gen, dtype=torch.float64) - 1)).to(w)
        current, grad = op.gradient_at(T * eps)
    else:
        current = base
    best, best_eps, alpha = current, eps, step_size * rho
    for _ in range(steps):
        g = T * grad
        if measure.norm == "l2":
            g_norm = g.norm()
            if not bool(g_norm > 0):
                break
            new = best_eps + alpha * g / g_norm
            r = new.norm()
            if r > rho:
                new = new * (rho / r)
        else:
            new = (best_eps + alpha * g.sign()).clamp(-rho, rho)
        value, new_grad = op.gradient_at(T * new)
        bar.update(1)
        if value > best:
            best, best_eps, grad = value, new, new_grad
        else:
            alpha /= 2
    if base >= best:
        return float(base), float(base), 0.0
    return float(base), float(best), float((T * best_eps).double().norm())


# ---------------------------------------------------------------------------- summaries


def _summarize(
    measures: Sequence[Measure], rows: list[int], metrics: Mapping[str, np.ndarray], settings
) -> SharpnessReport:
    offsets = np.concatenate([[0], np.cumsum(rows)])
    conf = float(settings.get("confidence", 0.95))
    values = []
    for r, q in enumerate(measures, 1):
        sl = slice(int(offsets[r]), int(offsets[r + 1]))
        loss, base, norm, count = (np.asarray(metrics[k][sl], dtype=np.float64) for k in METRICS)
        inc = loss - base
        if q.random:
            increase = float(np.mean(inc))
            base_loss = float(np.mean(base))
            ci = _t_interval(inc, conf)
        else:
            w = count / np.sum(count)
            increase, base_loss, ci = float(np.sum(w * inc)), float(np.sum(w * base)), None
        value = 100.0 * increase / (1.0 + base_loss) if q.kind == "keskar" else increase
        values.append(SharpnessValue(q, increase, value, ci, base_loss, loss, base, norm, count))
    return SharpnessReport(values=values, loss=float(metrics["loss"][0]), settings=dict(settings))


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``x`` (None for fewer than 2 values)."""
    if x.size < 2:
        return None
    from scipy import stats

    mean, se = float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(x.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * se
    return (mean - half, mean + half)


def read_sharpness(src) -> SharpnessReport:
    """A ``sharpness`` file (:func:`compute_sharpness` with ``out=``) as a report; cells not
    computed yet are NaN and make their measure's summary NaN."""
    from . import io

    with io.open_result(src, "r") if not isinstance(src, io.ResultFile) else _borrowed(src) as rf:
        if rf.kind != "sharpness":
            raise io.ResultFileError(f"{rf.path} is a {rf.kind!r} file; expected a 'sharpness' file")
        a = dict(rf.attrs)
        measures = [Measure.from_record(rec) for rec in a["measures"]]
        row = rf.read_array("row")
        rows = np.bincount(row, minlength=len(measures) + 1).tolist()
        metrics = {name: rf.read_metric(name) for name in METRICS}
        keys = (
            "samples",
            "m",
            "steps",
            "step-size",
            "init",
            "seed",
            "loss",
            "precision",
            "confidence",
            "ascent",
            "params",
        )
        report = _summarize(measures, rows, metrics, {k: a.get(k) for k in keys if k in a})
        report.file = rf.path
        report.info = {"pending": int(len(rf.pending())), "attrs": a}
        return report


class _borrowed:
    """A ResultFile given by the caller: used, not closed."""

    def __init__(self, rf):
        self.rf = rf

    def __enter__(self):
        return self.rf

    def __exit__(self, *exc):
        return None
