"""The record of an ensemble training run: which members are saved, and what made them.

A run that trains members one after the other (FGE, SSE, SWA, independent networks) saves
each member as a checkpoint next to its record, a result file of kind ``"ensemble-run"``
(``docs/h5-format.md``): one cell per member, its ``done`` flag set once the member's
checkpoint is written, the member's ``budget`` (epochs spent when it was available) as the
cell's value, and the run's settings as attributes. An interrupted run resumes like every
other result file (:func:`landscape.io.open_or_create`): the settings must be those of the
file, and :meth:`~landscape.io.ResultFile.pending` lists the members still to train.

Examples
--------
>>> import os, tempfile
>>> from landscape.ensembles.record import open_ensemble_run, read_ensemble_run
>>> path = os.path.join(tempfile.mkdtemp(), "ind-run.h5")
>>> settings = {"epochs": 2, "lr": 0.05, "seed": 0}
>>> with open_ensemble_run(path, method="ind", settings=settings, members=["ind-0.pt", "ind-1.pt"]) as rf:
...     rf.write_cells([0], {"budget": [2.0]})  # after ind-0.pt is saved
>>> with open_ensemble_run(path, method="ind", settings=settings, members=["ind-0.pt", "ind-1.pt"],
...                        resume=True) as rf:
...     rf.pending().tolist()
[1]
>>> read_ensemble_run(path)["done"].tolist()
[True, False]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..io import ResultFile, open_or_create, read_ensemble_run

__all__ = ["KIND", "open_ensemble_run", "read_ensemble_run", "save_ensemble_run"]

KIND = "ensemble-run"
_OWN = ("method", "members", "spent")  # attributes of the record itself, not settings


def _attrs(method: str, settings: Mapping[str, Any], members: Sequence[str], spent: float | None) -> dict[str, Any]:
    if not isinstance(method, str) or not method:
        raise ValueError(f"method should be a non-empty str such as 'fge', got {method!r}")
    clash = sorted(k for k in settings if k in _OWN and not (k == "method" and settings[k] == method))
    if clash:
        raise ValueError(f"settings may not use the record's own attribute names {clash}")
    names = [os.fspath(m) for m in members]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"members should be distinct checkpoint file names, got {names!r}")
    attrs = {k: v for k, v in settings.items() if k != "method"}
    attrs.update(method=method, members=names)
    if spent is not None:
        attrs["spent"] = float(spent)
    return attrs


def open_ensemble_run(
    path: str | os.PathLike,
    *,
    method: str,
    settings: Mapping[str, Any],
    members: Sequence[str],
    spent: float | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    resume: bool = False,
    force: bool = False,
) -> ResultFile:
    """The record of a run of ``len(members)`` members, created or resumed.

    Parameters
    ----------
    path : str or path-like
        The record (``<method>-run.h5`` in the run's folder).
    method : str
        ``"fge"``, ``"sse"``, ``"swa"``, ``"ind"``, ...
    settings : mapping
        Everything that defines the run (model, data, schedule, seeds, the start
        checkpoint's sha256); a resumed run must have the same (``cannot resume ...``).
    members : sequence of str
        The checkpoint file of each member, relative to the record's folder.
    spent : float, optional
        Epochs the whole run spends (a result: not compared on resume).
    arrays : mapping of str to ndarray, optional
        Static arrays (the learning rate of every iteration ``lr``, a method's own arrays
        such as FGE's ``iterations``, ``distance``, ``loss``).
    resume, force
        As for :func:`landscape.io.open_or_create`.

    Returns
    -------
    ResultFile
        Open for writing: call ``write_cells([j], {"budget": [b]})`` once member ``j``'s
        checkpoint is saved; :meth:`~landscape.io.ResultFile.pending` lists those not saved.
    """
    return open_or_create(
        path,
        kind=KIND,
        shape=(len(members),),
        metrics=["budget"],
        attrs=_attrs(method, settings, members, spent),
        arrays=arrays,
        resume=resume,
        force=force,
    )


def save_ensemble_run(
    path: str | os.PathLike,
    *,
    method: str,
    settings: Mapping[str, Any],
    members: Sequence[str],
    budgets: Sequence[float],
    spent: float | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    force: bool = False,
) -> str:
    """The record of a finished run, every member done (:func:`open_ensemble_run` and
    ``write_cells`` of all members); returns ``path``."""
    budgets = np.asarray(budgets, dtype=np.float64).reshape(-1)
    if budgets.size != len(members):
        raise ValueError(f"{len(members)} members but {budgets.size} budgets")
    with open_ensemble_run(
        path, method=method, settings=settings, members=members, spent=spent, arrays=arrays, force=force
    ) as rf:
        rf.write_cells(np.arange(len(members)), {"budget": budgets})
    return os.fspath(path)
