"""The one result of every connection method: :class:`Path`.

A connection from ``A`` to ``B`` is ``K`` points in weight space with a parameter ``t`` in
``[0, 1]``, the stage each point belongs to (OT's stage 1 in the matched neurons and stage 2
of swaps; weight adjustment's phases) and a word for each stage. A :class:`Path` *is* a
:class:`~landscape.pointset.PointSet` of those points (it shares the basis and coefficients,
nothing is copied), so :func:`landscape.evaluate` and everything else that takes points takes
it; :attr:`Path.points` is the plain point set.

Methods that returned tuples before the one result existed keep unpacking as they did
(``t, points = wa_path(...)``): such a path carries the names of its former tuple in
``unpack`` and iterates over them. Method-specific results (an OT path's ``permutations``,
``swaps``, ``stage1``/``t1``/``stage2``/``t2``; the bounds of multi-layer WA's steps) are
attributes of the path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..pointset import PointSet

__all__ = ["Path"]


class Path(PointSet):
    """A connection: ``K`` points with their parameter, stage and the stages' labels.

    Parameters
    ----------
    points : PointSet
        The points, ``A`` first and ``B`` last; the path shares their basis.
    t : array-like [K]
        The parameter of each point, non-decreasing, in ``[0, 1]``.
    stage : array-like of int [K], optional
        The stage of each point, 1-based (default: every point in stage 1).
    labels : sequence of str, optional
        A word for each stage, ``labels[s - 1]`` for stage ``s`` (default: ``method``, or
        ``"path"``).
    method : str
        The registered name of the method that made the path (``"ot"``, ``"wa-arc"``, ...).
    unpack : sequence of str, optional
        Attribute names the path unpacks into (``("t", "points")`` makes
        ``t, points = path`` work); a path without them does not unpack.
    **attrs
        Method-specific results, kept as attributes.

    Examples
    --------
    >>> import torch, numpy as np, landscape as ls
    >>> a, b = (ls.Weights.from_module(torch.nn.Linear(3, 2)) for _ in range(2))
    >>> line = ls.PointSet.from_weights([a, b], [[1 - s, s] for s in (0.0, 0.5, 1.0)])
    >>> p = Path(line, [0.0, 0.5, 1.0], method="linear", unpack=("t", "points"))
    >>> p.K, p.stage.tolist(), p.labels
    (3, [1, 1, 1], ('linear',))
    >>> t, pts = p
    >>> t.tolist(), type(pts).__name__
    ([0.0, 0.5, 1.0], 'PointSet')
    """

    def __init__(
        self,
        points: PointSet,
        t,
        stage=None,
        labels: Sequence[str] | None = None,
        *,
        method: str = "",
        unpack: Sequence[str] | None = None,
        **attrs: Any,
    ):
        if not isinstance(points, PointSet):
            raise TypeError(f"a Path is made of a PointSet, got {type(points).__name__}")
        basis = points._flat if points._flat is not None else points._vectors
        super().__init__(basis, points.coeffs, points.layout, extras=points.extras, names=points.names)
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if t.shape != (self.K,):
            raise ValueError(f"a path of {self.K} points needs {self.K} values of t, got {t.size}")
        if np.any(np.diff(t) < 0):
            raise ValueError("t should be non-decreasing along a path")
        stage = np.ones(self.K, np.int64) if stage is None else np.asarray(stage, dtype=np.int64).reshape(-1)
        if stage.shape != (self.K,) or (self.K and stage.min() < 1):
            raise ValueError(f"stage should hold {self.K} stage numbers >= 1, got shape {stage.shape}")
        n_stages = int(stage.max()) if self.K else 1
        labels = tuple(labels) if labels is not None else (method or "path",) * n_stages
        if len(labels) < n_stages:
            raise ValueError(f"{len(labels)} stage labels for {n_stages} stages")
        self.t, self.stage, self.labels, self.method = t, stage, labels, method
        self.unpack = tuple(unpack) if unpack is not None else None
        for name, value in attrs.items():
            if hasattr(PointSet, name) or name in self.__dict__:
                raise ValueError(f"'{name}' is a PointSet name; it cannot be a path attribute")
            setattr(self, name, value)
        self._attrs = tuple(attrs)

    @property
    def points(self) -> PointSet:
        """The points as a plain :class:`~landscape.pointset.PointSet` (same basis)."""
        return self._same_basis(self.coeffs)

    @property
    def stages(self) -> list[int]:
        """The stage numbers present, in order."""
        return sorted({int(s) for s in self.stage})

    def at_stage(self, s: int) -> tuple[np.ndarray, PointSet]:
        """``(t, points)`` of stage ``s`` alone."""
        keep = np.flatnonzero(self.stage == s)
        if keep.size == 0:
            raise ValueError(f"the path has no stage {s}; it has {self.stages}")
        return self.t[keep], self.subset(keep)

    def joined(self) -> tuple[np.ndarray, PointSet]:
        """``(t, points)`` of the whole path (for an OT path: stage 1 on ``[0, 1/2]``, stage 2
        on ``[1/2, 1]``)."""
        return self.t, self.points

    def __iter__(self) -> Iterator[Any]:
        if self.unpack is None:
            raise TypeError(f"a {self.method or 'connection'} Path does not unpack; use its attributes")
        for name in self.unpack:
            yield self.points if name == "points" else getattr(self, name)

    def __getitem__(self, i):
        """Item ``i`` of the former tuple (``wa_path(...)[1]`` is the points), as ``unpack``
        names them."""
        return list(self)[i]

    def __repr__(self) -> str:
        extra = "".join(f", {k}" for k in self._attrs)
        return f"Path({self.method or 'path'}: {self.K} points, stages {self.stages}{extra})"
