"""Curves between two checkpoints of any ``nn.Module``: Bezier curves and polygonal chains.

A curve is ``phi(t) = sum_j c_j(t) w_j`` with fixed endpoints ``w_0 = A``, ``w_{n+1} = B`` and
``n`` trainable bends. Nothing is rewritten into "curve layers": a point of the curve is a
set of weights evaluated with :func:`torch.func.functional_call`, so every architecture
works, BatchNorm, residual connections and buffers included.

Reference: Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..directions import Plane, _label, _with_extras
from ..io import result_kind
from ..pointset import PointSet
from ..weights import Weights, save_atomic
from .coefficients import (
    bezier_coefficients,
    bezier_derivative_coefficients,
    polychain_coefficients,
    polychain_derivative_coefficients,
)

__all__ = ["CURVE_KINDS", "Curve"]

CURVE_KINDS = ("bezier", "polychain")
_FORMAT = "landscape-curve"  # the registered kind of curve files (landscape.io.result_kind)


class Curve:
    """A Bezier curve or polygonal chain from ``start`` to ``end`` with trainable bends.

    Parameters
    ----------
    start, end : Weights
        The endpoint checkpoints (one layout).
    n_bends : int
        Number of bends (control points between the ends).
    kind : {"bezier", "polychain"}
    init : {"line"} or list of Weights
        Bends on the straight line at ``t = j / (n+1)`` (default), or given weights.

    Attributes
    ----------
    bends : Tensor[n_bends, P]
        The bends, flattened in layout order (a leaf tensor; train it with any optimizer).
        Running statistics in the bends are carried along but not trained.
    start, end : Weights
        The endpoints as they are now (see :meth:`release_endpoints`: trained endpoints
        carry no ``sha256``, since they are no longer the checkpoint files).
    origin_sha256 : dict
        ``{"start": ..., "end": ...}``: digests of the checkpoints the endpoints came from.
    trained_ends : tuple of str
        The endpoints that a fit has trained (``"start"``, ``"end"``), if any.

    Notes
    -----
    Garipov et al.'s code (dnn-mode-connectivity) counts the control points: its
    ``--num_bends 3`` is the quadratic Bezier curve with one bend, ``n_bends=1`` here
    (``num_bends = n_bends + 2``).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> a, b = (ls.Weights.from_module(torch.nn.Linear(3, 2)) for _ in range(2))
    >>> curve = ls.curves.Curve(a, b, n_bends=1)
    >>> pts = curve.points([0.0, 0.5, 1.0])
    >>> torch.equal(pts.point(2)["weight"], b["weight"])
    True
    """

    def __init__(
        self,
        start: Weights,
        end: Weights,
        n_bends: int = 1,
        kind: str = "bezier",
        init: str | Sequence[Weights] = "line",
    ):
        if kind not in CURVE_KINDS:
            raise ValueError(f"kind should be one of {CURVE_KINDS}, got {kind!r}")
        if int(n_bends) != n_bends or n_bends < 0:
            raise ValueError(f"n_bends should be a non-negative integer, got {n_bends!r}")
        _check_same_tensors(start, end, "end")
        self._start, self._end, self.kind, self.n_bends = start, end, kind, int(n_bends)
        self.origin_sha256 = {"start": start.sha256, "end": end.sha256}
        self.trained_ends: tuple[str, ...] = ()
        self.free_ends: dict[str, torch.Tensor] = {}  # leaf Tensor[P] of an endpoint being trained
        self.layout = start.layout
        a, b = start.flatten(), end.flatten()
        if isinstance(init, str):
            if init != "line":
                raise ValueError(f"init should be 'line' or a list of Weights, got {init!r}")
            ts = torch.arange(1, n_bends + 1, dtype=torch.float64) / (n_bends + 1)
            bends = (
                torch.stack([((1 - t) * a.double() + t * b.double()).to(a.dtype) for t in ts])
                if n_bends
                else a.new_zeros(0, a.numel())
            )
        else:
            init = list(init)
            if len(init) != n_bends:
                raise ValueError(f"init has {len(init)} weights for {n_bends} bends")
            for j, w in enumerate(init):
                _check_same_tensors(start, w, f"bend {j + 1}")
            bends = torch.stack([w.flatten(a.dtype) for w in init]) if n_bends else a.new_zeros(0, a.numel())
        self.bends = bends.clone().requires_grad_(True)
        self.param_mask = self.layout.parameter_mask()

    # ------------------------------------------------------------------ endpoints
    @property
    def start(self) -> Weights:
        return self._endpoint("start")

    @property
    def end(self) -> Weights:
        return self._endpoint("end")

    def _endpoint(self, name: str) -> Weights:
        w = self._start if name == "start" else self._end
        if name not in self.free_ends:
            return w
        flat = self.free_ends[name].detach().clone()
        return Weights(_with_extras(Weights(w.unflatten(flat), self.layout), w).tensors, self.layout, source=w.source)

    def release_endpoints(self, start: bool = False, end: bool = False) -> None:
        """Make endpoints trainable, as dnn-mode-connectivity does without ``--fix_start`` /
        ``--fix_end``: each one released becomes a leaf ``free_ends[name]`` (``Tensor[P]``),
        which :meth:`trainable`, :meth:`basis` and every point of the curve use until
        :meth:`fix_endpoints` writes it back into ``start`` / ``end``."""
        for name, free in (("start", start), ("end", end)):
            if free and name not in self.free_ends:
                w = self._start if name == "start" else self._end
                self.free_ends[name] = w.flatten().detach().clone().requires_grad_(True)
        self.trained_ends = tuple(n for n in ("start", "end") if n in self.free_ends or n in self.trained_ends)

    def fix_endpoints(self) -> None:
        """Write the released endpoints back into ``start`` / ``end`` (no ``sha256``: they are
        no longer the checkpoints) and stop training them."""
        for name in list(self.free_ends):
            w = self._endpoint(name)
            if name == "start":
                self._start = w
            else:
                self._end = w
            del self.free_ends[name]

    # ------------------------------------------------------------------ coefficients
    def coefficients(self, t):
        """``c(t)``: ``[T, n_bends + 2]`` (NumPy for array input, Tensor for Tensor input)."""
        f = bezier_coefficients if self.kind == "bezier" else polychain_coefficients
        return f(t, self.n_bends)

    def derivative_coefficients(self, t):
        """``c'(t)``: ``[T, n_bends + 2]``."""
        f = bezier_derivative_coefficients if self.kind == "bezier" else polychain_derivative_coefficients
        return f(t, self.n_bends)

    @property
    def names(self) -> list[str]:
        return ["start"] + [f"bend{j + 1}" for j in range(self.n_bends)] + ["end"]

    def control_points(self) -> list[Weights]:
        """start, bends..., end as :class:`Weights` (detached copies of the bends)."""
        start = self.start
        out = [start]
        for j in range(self.n_bends):
            out.append(Weights(start.unflatten(self.bends[j].detach().clone()), self.layout))
            out[-1] = _with_extras(out[-1], start)
        return out + [self.end]

    def trainable(self) -> list[torch.Tensor]:
        """The leaf tensors a fit trains: ``bends`` (``Tensor[n_bends, P]``), then the
        released endpoints (``Tensor[P]`` each, :meth:`release_endpoints`)."""
        return [self.bends] + [self.free_ends[n] for n in ("start", "end") if n in self.free_ends]

    def basis(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``Tensor[J, P]``: start, bends, end (differentiable w.r.t. the bends)."""
        a = self.free_ends["start"] if "start" in self.free_ends else self._start.flatten()
        b = self.free_ends["end"] if "end" in self.free_ends else self._end.flatten()
        B = torch.cat([a[None], self.bends.to(a.dtype), b[None]])
        return B if dtype is None else B.to(dtype)

    def points(self, t) -> PointSet:
        """The curve at ``t`` as a :class:`PointSet` over the control points; at t = 0 and
        t = 1 the coefficient rows are one-hot, so the endpoints are reproduced bit for bit."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        return PointSet.from_weights(self.control_points(), self.coefficients(t), names=self.names)

    def weights_at(self, t: float) -> Weights:
        """The weights at one ``t`` (a normal checkpoint: ``save_weights(curve.weights_at(0.5), path)``)."""
        return self.points([t]).weights(0)

    def as_plane(self) -> Plane:
        """The curve as a 1D :class:`~landscape.directions.Plane` in ``t`` (for surfaces)."""
        return Plane(
            basis=self.control_points(),
            names=self.names,
            kind=f"curve-{self.kind}",
            to_coeffs=lambda x, y=None: self.coefficients(x),
            anchors=np.array([0.0, 1.0]),
            anchor_names=[_label(self.start, "start"), _label(self.end, "end")],
            attrs={"x-label": "t (position along the curve)", "curve-kind": self.kind, "n-bends": self.n_bends},
        )

    def tensors_at(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Differentiable named tensors ``{name: Tensor[T, *shape]}`` of the curve at ``t``
        (aliases of tied tensors left out, as :meth:`PointSet.tensors` does)."""
        B = self.basis(dtype)
        c = self.coefficients(t.to(torch.float64)).to(B.dtype)
        flat = c @ B
        out = {}
        T = flat.shape[0]
        for e in self.layout:
            if e.flat:
                out[e.name] = flat[:, e.slice].reshape(T, *e.shape)
            elif e.tied_to is None:
                x = self._start[e.name]
                out[e.name] = x.expand(T, *x.shape)
        return out

    def speed(self, t: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        """``||phi'(t)||`` over the parameters, from the J x J Gram matrix of the control points
        (``c'(t)^T G c'(t)``), differentiable w.r.t. the bends."""
        if gram is None:
            gram = self.gram()
        d = self.derivative_coefficients(t.to(torch.float64)).to(gram.dtype)
        return torch.einsum("tj,jk,tk->t", d, gram, d).clamp_min(0).sqrt()

    def gram(self) -> torch.Tensor:
        """``G = B_p B_p^T`` (float64, differentiable) over the parameter entries."""
        B = self.basis(torch.float64)[:, self.param_mask.to(self.bends.device)]
        return B @ B.T

    def to(self, device) -> Curve:
        self._start = self._start.to(device)
        self._end = self._end.to(device)
        self.bends = self.bends.detach().to(device).requires_grad_(True)
        self.free_ends = {n: v.detach().to(device).requires_grad_(True) for n, v in self.free_ends.items()}
        return self

    # ------------------------------------------------------------------ files
    def state(self, **extra: Any) -> dict[str, Any]:
        """A ``torch.save``-able dict of tensors and plain values (loads with weights_only).

        ``start`` and ``end`` hold the endpoints as they are now; ``start_sha256`` and
        ``end_sha256`` the digests of the checkpoints they came from; ``trained_ends`` which
        endpoints a fit has moved."""
        start, end = self.start, self.end
        return {
            "format": _FORMAT,
            "version": result_kind(_FORMAT).version,
            "kind": self.kind,
            "n_bends": self.n_bends,
            "names": self.layout.names(),
            "start": {k: v.detach().cpu() for k, v in start.items()},
            "end": {k: v.detach().cpu() for k, v in end.items()},
            "bends": self.bends.detach().cpu().clone(),
            "start_source": start.source,
            "end_source": end.source,
            "start_sha256": self.origin_sha256["start"],
            "end_sha256": self.origin_sha256["end"],
            "trained_ends": list(self.trained_ends),
            **extra,
        }

    def save(self, path: str | os.PathLike, *, force: bool = False, **extra: Any) -> None:
        """Save the curve (endpoints included) atomically; never overwrites without ``force``.

        The file (kind ``landscape-curve``, ``docs/h5-format.md``) is :meth:`state` with
        ``extra`` (a fit's ``epoch``, ``optimizer``, ``history``, ``settings``)."""
        save_atomic(self.state(**extra), path, force=force)


def _check_same_tensors(start: Weights, other: Weights, what: str) -> None:
    """The names and shapes of ``other`` are ``start``'s, or one line naming the first difference."""
    names, others = start.layout.names(), other.layout.names()
    if names != others:
        only = [n for n in names if n not in set(others)] or [n for n in others if n not in set(names)]
        where = "start" if only and only[0] in set(names) else what
        first = f": tensor '{only[0]}' is only in {where}" if only else " (same names in another order)"
        raise ValueError(f"start and {what} have different tensors{first}; expected checkpoints of one model")
    for name in names:
        a, b = tuple(start[name].shape), tuple(other[name].shape)
        if a != b:
            raise ValueError(
                f"start and {what} do not match: tensor '{name}' has shape {a} in start and {b} in {what}; "
                "expected checkpoints of one model"
            )
