"""Ensembles side by side: accuracy, NLL and calibration against the training budget.

:func:`compare_ensembles` evaluates several :class:`~landscape.ensembles.budget.Run` s (FGE,
SSE, SWA, independent networks, or any members with their budgets) on one split through the
engine and keeps, for each, the ensemble of the first ``m`` members at every ``m``; the
result is saved as one HDF5 file of kind ``"ensembles"`` and drawn as test error against
the epochs spent, the figure of the FGE paper (seed 001, "Ensembling results").
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .budget import Run

__all__ = ["EnsembleComparison", "compare_ensembles", "plot_ensembles"]

KIND = "ensembles"
_PER_MEMBER = ("cumulative_acc", "cumulative_nll", "member_acc", "budget")


@dataclass
class EnsembleComparison:
    """One row per ensemble: final metrics and their course as members are added."""

    labels: list[str]
    acc: np.ndarray  # [R]
    nll: np.ndarray  # [R]
    ece: np.ndarray  # [R]
    per_member: dict[str, np.ndarray]  # name -> [R, M], NaN-padded: see _PER_MEMBER
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> np.ndarray:
        return np.isfinite(self.per_member["member_acc"]).sum(1)

    @property
    def budgets(self) -> np.ndarray:
        """Epochs spent by each row (its last member's budget)."""
        b = self.per_member["budget"]
        return np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in b])

    def markdown(self, digits: int = 2) -> str:
        """``| Ensemble | budget (epochs) | members | acc % | NLL | ECE |``."""
        lines = ["| Ensemble | budget (epochs) | members | acc (%) | NLL | ECE |", "|---|---:|---:|---:|---:|---:|"]
        for i, label in enumerate(self.labels):
            lines.append(
                f"| {label} | {self.budgets[i]:g} | {self.members[i]} | {100 * self.acc[i]:.{digits}f} "
                f"| {self.nll[i]:.4f} | {self.ece[i]:.4f} |"
            )
        return "\n".join(lines)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> str:
        """A result file of kind ``"ensembles"``: grid ``[R, M]`` with the per-member
        metrics; attrs ``labels``, ``acc``, ``nll``, ``ece`` and the table."""
        from ..io import create_result

        attrs = dict(self.attrs)
        attrs.update(
            labels=list(self.labels),
            acc=[float(v) for v in self.acc],
            nll=[float(v) for v in self.nll],
            ece=[float(v) for v in self.ece],
            table=self.markdown(),
        )
        shape = self.per_member["member_acc"].shape
        with create_result(path, kind=KIND, shape=shape, metrics=list(_PER_MEMBER), attrs=attrs, force=force) as rf:
            rf.write_cells(list(range(int(np.prod(shape)))), {k: v.reshape(-1) for k, v in self.per_member.items()})
        return os.fspath(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EnsembleComparison:
        from ..io import open_result

        with open_result(path) as rf:
            if rf.kind != KIND:
                raise ValueError(f"{os.fspath(path)} holds a {rf.kind!r} result, not {KIND!r}")
            a = dict(rf.attrs)
            per = {k: np.asarray(rf.read_metric(k)) for k in _PER_MEMBER}
        out = cls(
            labels=list(a.pop("labels")),
            acc=np.asarray(a.pop("acc"), float),
            nll=np.asarray(a.pop("nll"), float),
            ece=np.asarray(a.pop("ece"), float),
            per_member=per,
        )
        for k in ("table", "library-version", "created"):
            a.pop(k, None)
        out.attrs = a
        return out


def compare_ensembles(
    model: nn.Module,
    runs: Sequence[Run],
    data,
    *,
    bn: str = "running",
    bn_data=None,
    device=None,
    bins: int = 15,
    forward=None,
    progress: bool = False,
) -> EnsembleComparison:
    """Evaluate every run's ensemble (and its first-``m``-member ensembles) on ``data``.

    Parameters
    ----------
    model : nn.Module
    runs : sequence of Run
        From :func:`~landscape.ensembles.run_at_budget`, or built by hand
        (``Run(label, members, budgets)``).
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        The split the ensembles are scored on (in a fixed order).
    bn, bn_data, device, bins, forward
        As for :func:`~landscape.ensembles.evaluate_ensemble`.

    Returns
    -------
    EnsembleComparison
    """
    from .metrics import evaluate_ensemble

    runs = list(runs)
    if not runs:
        raise ValueError("no runs to compare")
    for r in runs:
        if len(r.members) != len(r.budgets) or not r.members:
            raise ValueError(f"run {r.label!r}: {len(r.members)} members but {len(r.budgets)} budgets")
    M = max(len(r.members) for r in runs)
    per = {k: np.full((len(runs), M), np.nan) for k in _PER_MEMBER}
    acc, nll, ece = (np.zeros(len(runs)) for _ in range(3))
    for i, r in enumerate(runs):
        res = evaluate_ensemble(
            model, r.members, data, bn=bn, bn_data=bn_data, device=device, bins=bins, forward=forward
        )
        m = len(r.members)
        per["cumulative_acc"][i, :m] = res.cumulative_acc
        per["cumulative_nll"][i, :m] = res.cumulative_nll
        per["member_acc"][i, :m] = res.member_acc
        per["budget"][i, :m] = r.budgets
        acc[i], nll[i], ece[i] = res.acc, res.nll, res.ece
    attrs = {"runs": [dict(r.attrs, label=r.label) for r in runs], "bn": bn}
    return EnsembleComparison([r.label for r in runs], acc, nll, ece, per, attrs)


def plot_ensembles(comparison_or_path, ax=None):
    """Test error of the ensemble of the members so far against the epochs spent: one line
    per run (markers at every member), like the FGE paper's budget figure."""
    c = (
        comparison_or_path
        if isinstance(comparison_or_path, EnsembleComparison)
        else EnsembleComparison.load(comparison_or_path)
    )
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for i, label in enumerate(c.labels):
        b, a = c.per_member["budget"][i], c.per_member["cumulative_acc"][i]
        ok = np.isfinite(b) & np.isfinite(a)
        style = "--" if label.lower().startswith("ind") else "-"
        ax.plot(b[ok], 100 * (1 - a[ok]), marker="o", ms=4, ls=style, label=label)
    ax.set_xlabel("training budget (epochs)")
    ax.set_ylabel("ensemble test error (%)")
    ax.set_title("Ensembles against the training budget")
    ax.legend(fontsize="small")
    if not math.isfinite(float(np.nanmax(c.per_member["cumulative_acc"]))):  # pragma: no cover
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
    return fig


def plot_fge(result, member_error=None, ax=None):
    """The seeds' FGE figure: the cyclic learning rate over the iterations (top) and, at every
    snapshot, its test error (``member_error``, in %) and its distance from the start (bottom).

    Parameters
    ----------
    result : FGEResult
    member_error : sequence of float, optional
        Test error (%) of every snapshot, e.g. ``100 * (1 - comparison.per_member["member_acc"][0])``.
    ax : pair of Axes, optional
    """
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 5.0), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    else:
        top, bottom = ax
        fig = top.figure
    it = np.arange(1, len(result.lr) + 1)
    top.plot(it, result.lr, color="0.3")
    for i in result.iterations:
        top.axvline(i, color="tab:green", ls=":", lw=1)
    top.set_ylabel("learning rate")
    top.set_title(f"FGE: {len(result.iterations)} snapshots at the middle of each cycle (rate alpha2)")
    (dline,) = bottom.plot(result.iterations, result.distance, "o-", color="tab:blue", label="distance from start")
    bottom.set_ylabel("L2 distance from the start", color="tab:blue")
    bottom.set_xlabel("iteration")
    handles = [dline]
    if member_error is not None:
        right = bottom.twinx()
        err = np.asarray(member_error, dtype=float)[: len(result.iterations)]
        (eline,) = right.plot(result.iterations, err, "s--", color="tab:red", label="snapshot test error")
        right.set_ylabel("test error (%)", color="tab:red")
        handles.append(eline)
    bottom.legend(handles=handles, fontsize="small", loc="lower right")
    return fig
