"""Every figure that applies to a result file, saved."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io import read_connections
from ._base import (
    Source,
    _is_accuracy,
    _is_curve_profile,
    _is_error,
    _is_loss,
    _read,
    _Surface,
)
from .connections import plot_connections, plot_wa_ensemble
from .curves import _split_of, plot_curve_profile
from .ensembles import plot_ensembles
from .hessian import _DIAGNOSTICS, _MAP_PANELS, plot_hessian_maps
from .merge import plot_merge
from .sharpness import plot_sharpness
from .surfaces import plot_contour, plot_heatmap, plot_line, plot_surface3d, plot_trajectory


def _present(surface: _Surface, metrics: Sequence[str] | None) -> list[str]:
    """The metrics to draw: those asked for, or every metric with a finite value. A metric
    whose computed cells are all NaN or Inf is left out with a
    :class:`~landscape.metrics.NonFiniteWarning` saying so (nothing to draw, but not missing)."""
    if metrics is not None:
        for name in metrics:
            surface.metric(name)
        return list(metrics)
    names, bad = [], []
    for name, values in surface.metrics.items():
        if np.isfinite(values).any():
            names.append(name)
        elif (count := int(surface.cells(name)[1].sum())) > 0:
            bad.append(f"{name!r} ({count} cells)")
    if bad:
        import warnings

        from ..metrics import NonFiniteWarning  # only here: figures need no torch otherwise

        warnings.warn(
            f"{surface.name}: no figure of {', '.join(bad)}: every computed value is NaN or Inf",
            NonFiniteWarning,
            stacklevel=3,
        )
    return names


def _check_destination(out_dir: str, formats: Sequence[str]) -> None:
    """A figure folder that is not a file and formats matplotlib writes, before any drawing."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"figure folder '{out_dir}' is a file; expected a folder (new or existing)")
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown or not formats:
        raise ValueError(
            f"figure format(s) {unknown or list(formats)} not supported; expected some of {sorted(supported)}"
        )


#: What :func:`figure_view` answers for the files of an analysis drawn its own way: their kind's name.
TABLE_VIEWS = ("ensembles", "wa-ensemble", "connections", "merge", "sharpness")


def figure_view(surface: _Surface) -> str:
    """How a result file is shown, the one dispatch of :func:`plot_file` and of the HTML report
    (:mod:`landscape.plot.report`): ``"ensembles"``, ``"wa-ensemble"``, ``"connections"``,
    ``"merge"`` or ``"sharpness"`` (the figures of those kinds), ``"profile"`` (a curve
    against the line along t), ``"line"`` (a 1-D grid) or ``"plane"`` (a 2-D grid). ``ValueError`` for a grid of more dimensions."""
    if surface.kind in TABLE_VIEWS:
        return surface.kind
    if _is_curve_profile(surface):
        return "profile"
    if len(surface.shape) in (1, 2):
        return ("line", "plane")[len(surface.shape) - 1]
    raise ValueError(f"plot_file: {surface.name} has a {len(surface.shape)}-D grid; only lines and planes plot")


def plot_file(
    src: Source,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    metrics: Sequence[str] | None = None,
    force: bool = False,
) -> list[str]:
    """Save every figure that applies to a result file.

    * line: the loss/accuracy figure ``<stem>-line-loss.<fmt>`` (:func:`plot_line`) and,
      for each other metric (e.g. ``lambda_max``), ``<stem>-line-<metric>.<fmt>``;
    * plane: ``<stem>-contour-<metric>``, ``<stem>-heatmap-<metric>`` and
      ``<stem>-surface3d-<metric>`` for each metric, plus
      ``<stem>-trajectory-<metric>`` for the first loss when the file has a trajectory
      (``<stem>-curve-<metric>`` on a plane through a curve, ``surface-type``
      ``"curve-plane"``: the curve over the contours, :func:`plot_trajectory`);
    * curve profile (kind ``"curve"``): ``<stem>-profile.<fmt>``
      (:func:`plot_curve_profile`; with ``metrics``, the splits named by those metrics
      are drawn in both panels);
    * connections (kind ``"connections"``): ``<stem>-connections-<split>.<fmt>``, the
      accuracy along ``t`` of every method (:func:`plot_connections`);
    * WA-ensembles (kind ``"wa-ensemble"``): ``<stem>-wa-ensemble.<fmt>``
      (:func:`plot_wa_ensemble`);
    * ensembles at equal budgets (kind ``"ensembles"``): ``<stem>-ensembles.<fmt>``
      (:func:`plot_ensembles`);
    * merges (kind ``"merge"``): ``<stem>-merge-<metric>.<fmt>`` per metric (:func:`plot_merge`).
    * sharpness (kind ``"sharpness"``): ``<stem>-sharpness.<fmt>`` (:func:`plot_sharpness`).

    ``<stem>`` is the file name without ``.h5``.  Metrics with no finite value are
    skipped: those not computed yet quietly, those computed as NaN/Inf everywhere with a
    :class:`~landscape.metrics.NonFiniteWarning`.

    Parameters
    ----------
    src : str, path-like or ResultFile
    out_dir : str or path-like
        Created when missing.
    formats : sequence of str
        File formats understood by ``Figure.savefig`` (``png``, ``pdf``, ``svg``, ...).
    metrics : sequence of str, optional
        Metrics to draw (default: every metric with at least one finite value).
    force : bool
        Overwrite existing figures.  Without it nothing is drawn when any output
        exists.

    Returns
    -------
    list of str
        The paths written, in order.

    Raises
    ------
    FileExistsError
        An output exists and ``force`` is False.
    """
    surface = _read(src)
    if isinstance(formats, str):
        formats = (formats,)
    stem = os.path.splitext(os.path.basename(surface.path))[0]
    names = _present(surface, metrics)
    jobs: list[tuple[str, str | None, Any]] = []  # (figure name, metric part, draw function)
    view = figure_view(surface)
    one_figure = {"sharpness": plot_sharpness, "ensembles": plot_ensembles, "wa-ensemble": plot_wa_ensemble}
    if view in one_figure:
        jobs.append((view, None, lambda: one_figure[view](surface.path)))
    elif view == "merge":
        for name in names:
            jobs.append(("merge", name, lambda name=name: plot_merge(surface, name)))
    elif view == "connections":
        connections = read_connections(surface.path)  # read once for every split
        for split in connections["splits"]:
            jobs.append(("connections", split, lambda split=split: plot_connections(connections, split=split)))
    elif view == "profile":
        splits = None
        if metrics is not None:
            chosen = [_split_of(m) for m in names if _is_loss(m) or _is_accuracy(m)]
            splits = list(dict.fromkeys(s for s in chosen if s is not None)) or None
        jobs.append(("profile", None, lambda: plot_curve_profile(surface, splits=splits)))
    elif view == "line":
        standard = [m for m in names if _is_loss(m) or _is_accuracy(m) or _is_error(m)]
        if standard:
            jobs.append(("line", "loss", lambda: plot_line(surface, metrics=standard)))
        for name in names:
            if name not in standard:
                jobs.append(("line", name, lambda name=name: plot_line(surface, metrics=[name])))
    else:  # a plane
        if metrics is None:  # the maps' convergence diagnostics are data, not figures
            names = [n for n in names if n not in _DIAGNOSTICS]
        if all(m in names for m in _MAP_PANELS):
            jobs.append(("hessian", None, lambda: plot_hessian_maps(surface)))
        for name in names:
            jobs.append(("contour", name, lambda name=name: plot_contour(surface, name)))
            jobs.append(("heatmap", name, lambda name=name: plot_heatmap(surface, name)))
            jobs.append(("surface3d", name, lambda name=name: plot_surface3d(surface, name)))
        if surface.trajectory() is not None and names:
            losses = [m for m in names if _is_loss(m)] or names
            figure = "curve" if surface.surface_type == "curve-plane" else "trajectory"
            jobs.append((figure, losses[0], lambda: plot_trajectory(surface, losses[0])))

    out_dir = os.fspath(out_dir)
    _check_destination(out_dir, formats)
    targets = [
        [os.path.join(out_dir, f"{stem}-{figure}{'' if part is None else '-' + part}.{fmt}") for fmt in formats]
        for figure, part, _ in jobs
    ]
    if not force:
        for path in (p for paths in targets for p in paths):
            if os.path.lexists(path):
                raise FileExistsError(f"'{path}' already exists; pass --force to overwrite it")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for (_, _, draw), paths in zip(jobs, targets, strict=True):
        fig = draw()
        for path in paths:
            fig.savefig(path, dpi=150)
            written.append(path)
    return written
