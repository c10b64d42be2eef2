"""Ensembles side by side: accuracy, NLL and calibration against the training budget.

:func:`compare_ensembles` evaluates several :class:`~landscape.ensembles.budget.Run` s (FGE,
SSE, SWA, independent networks, or any members with their budgets) on one split through the
engine and keeps, for each, the ensemble of the first ``m`` members at every ``m``; the
result is saved as one HDF5 file of kind ``"ensembles"``, which
:func:`landscape.plot.plot_ensembles` draws as test error against the epochs spent, the
figure of the FGE paper (seed 001, "Ensembling results").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .budget import Run

__all__ = ["EnsembleComparison", "compare_ensembles"]

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
        """Read a file written by :meth:`save` (:func:`landscape.io.read_ensembles`)."""
        from ..io import read_ensembles

        return cls(**read_ensembles(path))


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
