"""Lines and planes: loss and accuracy along a line, contours, heatmaps, 3-D surfaces and
trajectories (Li et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from ._base import (
    _ANCHOR_STYLE,
    _DEFAULT_LEVELS,
    _MISSING_COLOR,
    _NONFINITE_COLOR,
    _NONFINITE_HATCH,
    Source,
    _cells_note,
    _display_values,
    _figure_and_axes,
    _finite_range,
    _fmt_level,
    _is_accuracy,
    _is_error,
    _is_loss,
    _mark_nonfinite_points,
    _metric_label,
    _read,
    _require_plane,
    _Surface,
    _title,
    _use_log,
)


def _contour_levels(low: float, high: float, levels: int | Sequence[float] | None, log: bool) -> np.ndarray:
    if levels is not None and not isinstance(levels, (int, np.integer)):
        chosen = np.asarray(sorted(float(v) for v in levels), dtype=np.float64)
        if chosen.size == 0:
            raise ValueError("levels must name at least one level")
        return chosen
    count = _DEFAULT_LEVELS if levels is None else int(levels)
    if count < 1:
        raise ValueError(f"levels must be a positive number of levels, got {levels!r}")
    if high <= low:
        return np.array([low])
    spaced = np.geomspace(low, high, count + 2) if log else np.linspace(low, high, count + 2)
    return spaced[1:-1]  # the extremes are single points: no line to draw


def _draw_anchors(ax: Axes, surface: _Surface) -> None:
    points, names = surface.anchors()
    if len(points) == 0:
        return
    label = "control points" if surface.surface_type == "curve-plane" else "checkpoints"
    ax.plot(points[:, 0], points[:, 1], gid="anchors", label=label, **_ANCHOR_STYLE)
    for (px, py), name in zip(points, names, strict=True):
        ax.annotate(
            name,
            (px, py),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=11,
            fontweight="bold",
            gid="anchor-name",
            zorder=6,
            bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.8),
        )


def _draw_trajectory(ax: Axes, surface: _Surface) -> None:
    path = surface.trajectory()
    if path is None or len(path) == 0:
        return
    if surface.surface_type == "curve-plane":
        # a curve between two anchors: a plain line, no start/end of a training run
        ax.plot(
            path[:, 0],
            path[:, 1],
            "-",
            color="tab:red",
            linewidth=2.2,
            gid="trajectory",
            label=str(surface.attrs.get("trajectory-label", "curve")),
            zorder=4,
        )
        return
    ax.plot(
        path[:, 0],
        path[:, 1],
        "-o",
        color="tab:red",
        linewidth=1.8,
        markersize=3.5,
        gid="trajectory",
        label=str(surface.attrs.get("trajectory-label", "training trajectory")),
        zorder=4,
    )
    ax.plot(
        path[:1, 0], path[:1, 1], "s", color="tab:red", markersize=7, gid="trajectory-start", zorder=4, label="start"
    )
    ax.plot(
        path[-1:, 0], path[-1:, 1], "*", color="tab:red", markersize=13, gid="trajectory-end", zorder=4, label="end"
    )


def _set_extent(ax: Axes, x: np.ndarray, y: np.ndarray, surface: _Surface) -> None:
    """The plane's extent; equal axis scales on a plane of orthonormal coordinates (a plane
    through a curve or through three checkpoints), where unequal ones squash the geometry."""
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_ylim(float(y.min()), float(y.max()))
    if surface.equal_units:
        ax.set_aspect("equal", adjustable="box")


def _plane_figsize(surface: _Surface, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The size of a new plane figure: the default, or on a plane of equal axis scales a height
    that follows the plane's shape (so a flat plane is not a thin band in a square figure)."""
    if not surface.equal_units:
        return (7.0, 5.5)
    ratio = float(np.ptp(y)) / max(float(np.ptp(x)), 1e-300)
    return (8.0, float(np.clip(5.6 * ratio + 2.4, 3.6, 9.0)))


def _draw_nonfinite(ax: Axes, x: np.ndarray, y: np.ndarray, nonfinite: np.ndarray) -> None:
    """Shade the computed cells whose value is NaN or Inf (``nonfinite`` bool[nx, ny]) in
    their own hatched colour, apart from the grey of the cells not computed."""
    if not nonfinite.any():
        return
    from matplotlib.colors import ListedColormap

    shade = np.ma.masked_array(np.ones(nonfinite.T.shape), mask=~nonfinite.T)
    cells = ax.pcolor(
        x,
        y,
        shade,
        shading="nearest",
        cmap=ListedColormap([_NONFINITE_COLOR]),
        hatch=_NONFINITE_HATCH,
        edgecolor="0.35",
        linewidth=0.0,
        zorder=1,
    )
    cells.set_gid("nonfinite")


def plot_line(
    src: Source, *, metrics: Sequence[str] | None = None, ax: Axes | None = None, log_loss: bool = False
) -> Figure:
    """1-D figure of a line result: losses on the left axis, accuracies (%) on the right.

    Train metrics are drawn solid and test metrics dashed (Garipov et al., 2018); the
    anchors of the line (``anchors`` array, else the end points ``x = 0`` and ``x = 1``
    of an interpolation or the centre ``x = 0`` of a random direction) are vertical
    dotted lines.  Cells not computed leave gaps; computed cells whose value is NaN or Inf
    leave gaps too and are marked by red crosses along the bottom; the title counts both.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A result with a 1-D grid ``(nx,)`` and an array ``x`` (float[nx]).
    metrics : sequence of str, optional
        Metrics to draw; default: the file's losses and accuracies (all its metrics if
        it has neither).  Accuracies (fractions in the file) are drawn in percent on a
        twin right axis; every other metric on the left axis.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure when omitted.
    log_loss : bool
        Logarithmic left axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    surface = _read(src)
    if len(surface.shape) != 1:
        raise ValueError(
            f"plot_line needs a line (1-D grid) but {surface.name} is a {surface.kind!r} result with grid "
            f"{surface.shape}; use plot_contour, plot_heatmap or plot_surface3d for planes"
        )
    if metrics is None:
        metrics = [m for m in surface.metrics if _is_loss(m) or _is_accuracy(m) or _is_error(m)]
        metrics = metrics or list(surface.metrics)
    else:
        metrics = list(metrics)
        for name in metrics:
            surface.metric(name)
    if not metrics:
        raise ValueError(f"plot_line: no metrics to draw for {surface.name}")
    x = surface.coordinates(0)
    fig, ax = _figure_and_axes(ax, figsize=(7.0, 4.5))

    left = [m for m in metrics if not (_is_accuracy(m) or _is_error(m))]
    right = [m for m in metrics if _is_accuracy(m) or _is_error(m)]
    if not left:  # accuracies only: one axis is enough
        left, right = right, []
    right_ax = ax.twinx() if right else None
    marker = "o" if x.size <= 41 else None
    handles = []
    for axis, names, color in ((ax, left, "tab:blue"), (right_ax, right, "tab:red")):
        colors = (
            iter(["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
            if axis is ax and len({n.split("_", 1)[-1] for n in names}) > 1
            else None
        )
        for name in names:
            style = "--" if name.startswith("test") else "-"
            line_color = next(colors, color) if colors is not None else color
            (line,) = axis.plot(
                x,
                _display_values(name, surface.metrics[name]),
                style,
                color=line_color,
                marker=marker,
                markersize=3,
                linewidth=2,
                label=_metric_label(name),
                gid=name,
            )
            handles.append(line)
    nonfinite = np.zeros(x.shape, dtype=bool)
    for name in metrics:
        nonfinite |= surface.cells(name)[1]
    _mark_nonfinite_points(ax, x, nonfinite, gid="nonfinite")
    handles += [h for h in ax.get_lines() if h.get_gid() == "nonfinite"]
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel("loss" if all(_is_loss(m) for m in left) else ", ".join(_metric_label(m) for m in left))
    if log_loss:
        ax.set_yscale("log")
    if right_ax is not None:
        kinds = {"accuracy" if _is_accuracy(m) else "error" for m in right}
        right_ax.set_ylabel(f"{' / '.join(sorted(kinds))} (%)", color="tab:red")
        ax.yaxis.label.set_color("tab:blue")
        right_ax.tick_params(axis="y", colors="tab:red")
        ax.tick_params(axis="y", colors="tab:blue")
    ax.set_xlim(float(x.min()), float(x.max()))

    points, names = surface.anchors()
    inside = [(float(v), n) for v, n in zip(points[:, 0], names, strict=True) if x.min() <= v <= x.max()]
    for value, _ in inside:
        ax.axvline(value, color="0.3", linestyle=":", linewidth=1.5, gid="anchor", zorder=1)
    if inside:  # names as ticks of a top axis: they never cover the curves
        top = ax.secondary_xaxis("top")
        top.set_xticks([v for v, _ in inside], labels=[n for _, n in inside], fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=min(4, len(handles)),
        fontsize=9,
        frameon=False,
    )
    what = (
        f"loss and {'accuracy' if all(map(_is_accuracy, right)) else 'error'}"
        if left and right
        else ", ".join(_metric_label(m) for m in left)
    )
    ax.set_title(_title(surface, what) + _cells_note(surface, metrics))
    return fig


def plot_contour(
    src: Source,
    metric: str = "train_loss",
    *,
    ax: Axes | None = None,
    levels: int | Sequence[float] | None = None,
    log_levels: bool | None = None,
    labels: bool = True,
    mark: bool = True,
) -> Figure:
    """Contour lines of one metric over a plane (Li et al., 2018, Fig. 5).

    Parameters
    ----------
    src : str, path-like or ResultFile
        A result with a 2-D grid ``(nx, ny)`` whose cell ``(i, j)`` lies at
        ``(x[i], y[j])`` (arrays ``x`` float[nx] and ``y`` float[ny]).
    metric : str
        The metric to draw; accuracies are drawn in percent.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure when omitted.
    levels : int or sequence of float, optional
        Number of levels (default 20) spread strictly between the finite minimum and
        maximum of the data, or the levels themselves.  Cells not computed (done flag 0)
        are masked and shaded grey; computed cells whose value is NaN or Inf are masked
        and shaded red, hatched; the title counts both.
    log_levels : bool, optional
        Log-spaced levels and colours.  Default: log for metrics that are not
        accuracies and whose values are all positive (losses), linear otherwise.
        True on data with values <= 0 is an error.
    labels : bool
        Label the lines with their values (``clabel``, every other level).
    mark : bool
        Draw the anchors (``anchors`` array, named by ``anchor-names``) and the
        trajectory (``trajectory`` array) when the file has them.

    Returns
    -------
    matplotlib.figure.Figure
        The axes limits are exactly the extent of ``x`` and ``y``; cells not computed
        and computed cells that are not finite are masked.
    """
    surface = _read(src)
    _require_plane(surface, "plot_contour")
    return _contour(surface, metric, ax=ax, levels=levels, log_levels=log_levels, labels=labels, mark=mark)


def _contour(
    surface: _Surface,
    metric: str,
    *,
    ax: Axes | None,
    levels: Any,
    log_levels: bool | None,
    labels: bool,
    mark: bool,
    title: str | None = None,
    legend: bool = False,
) -> Figure:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, LogNorm, Normalize

    values = _display_values(metric, surface.metric(metric))
    x, y = surface.coordinates(0), surface.coordinates(1)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"plot_contour needs at least 2 x 2 cells, {surface.name} has {surface.shape}")
    low, high = _finite_range(surface, metric, values)
    log = _use_log(metric, low, log_levels, surface, "log_levels")
    chosen = _contour_levels(low, high, levels, log)
    fig, ax = _figure_and_axes(ax, figsize=_plane_figsize(surface, x, y))
    norm = LogNorm(vmin=low, vmax=high) if log else Normalize(vmin=low, vmax=high)
    grid = np.ma.masked_invalid(values).T  # rows are y, columns are x
    not_computed, nonfinite = surface.cells(metric)
    if not_computed.any():  # cells not computed yet: grey, as in the heatmap
        shade = np.ma.masked_array(np.zeros(grid.shape), mask=~not_computed.T)
        missing = ax.pcolormesh(x, y, shade, shading="nearest", cmap=ListedColormap([_MISSING_COLOR]), zorder=0)
        missing.set_gid("missing")
    _draw_nonfinite(ax, x, y, nonfinite)
    contours = ax.contour(x, y, grid, levels=chosen, cmap="viridis", norm=norm, linewidths=1.3)
    contours.set_gid("contour")
    if labels and len(contours.levels):
        ax.clabel(contours, contours.levels[::2], inline=True, fontsize=8, fmt=_fmt_level)
    # A continuous colour bar (readable log ticks) with the contour levels drawn on it.
    shrink = 0.6 if surface.equal_units else 1.0  # the flattened box's height, roughly
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=contours.get_cmap()), ax=ax, shrink=shrink)
    colorbar.add_lines(contours.levels, colors=["black"] * len(contours.levels), linewidths=0.6)
    colorbar.set_label(_metric_label(metric))
    if mark:
        _draw_trajectory(ax, surface)
        _draw_anchors(ax, surface)
        if legend:
            handles = [
                h
                for h in ax.get_lines()
                if h.get_gid() in ("trajectory", "trajectory-start", "trajectory-end", "anchors")
            ]
            if handles:
                ax.legend(handles=handles, loc="best", fontsize=9, framealpha=0.9)
    _set_extent(ax, x, y, surface)
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel(surface.axis_label(1))
    ax.set_title((title or _title(surface, _metric_label(metric))) + _cells_note(surface, [metric]))
    return fig


def plot_heatmap(
    src: Source, metric: str = "train_loss", *, ax: Axes | None = None, log: bool | None = None, mark: bool = True
) -> Figure:
    """Filled heatmap of one metric over a plane; cells not computed are grey, computed
    cells whose value is NaN or Inf red and hatched (the title counts both).

    Each cell is a rectangle centred on ``(x[i], y[j])`` (``pcolormesh`` with
    ``shading="nearest"``): x runs horizontally, y vertically.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A result with a 2-D grid ``(nx, ny)`` and arrays ``x`` float[nx], ``y`` float[ny].
    metric : str
        The metric to draw; accuracies are drawn in percent.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure when omitted.
    log : bool, optional
        Logarithmic colour scale.  Default: log for positive metrics that are not
        accuracies.
    mark : bool
        Draw the anchors and the trajectory when the file has them.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.colors import LogNorm, Normalize

    surface = _read(src)
    _require_plane(surface, "plot_heatmap")
    values = _display_values(metric, surface.metric(metric))
    x, y = surface.coordinates(0), surface.coordinates(1)
    low, high = _finite_range(surface, metric, values)
    use_log = _use_log(metric, low, log, surface, "log")
    fig, ax = _figure_and_axes(ax, figsize=_plane_figsize(surface, x, y))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_MISSING_COLOR)
    norm = LogNorm(vmin=low, vmax=high) if use_log else Normalize(vmin=low, vmax=high)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(values).T, shading="nearest", cmap=cmap, norm=norm)
    mesh.set_gid("heatmap")
    _draw_nonfinite(ax, x, y, surface.cells(metric)[1])
    colorbar = fig.colorbar(mesh, ax=ax, shrink=0.6 if surface.equal_units else 1.0)
    colorbar.set_label(_metric_label(metric))
    if mark:
        _draw_trajectory(ax, surface)
        _draw_anchors(ax, surface)
    if surface.equal_units:  # as _set_extent does, the cells' full extent kept
        ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel(surface.axis_label(1))
    ax.set_title(_title(surface, _metric_label(metric)) + _cells_note(surface, [metric]))
    return fig


def plot_surface3d(src: Source, metric: str = "train_loss", *, ax: Axes | None = None, log: bool = False) -> Figure:
    """3-D surface of one metric over a plane (Li et al., 2018, Fig. 1).

    Parameters
    ----------
    src : str, path-like or ResultFile
        A result with a 2-D grid ``(nx, ny)`` and arrays ``x`` float[nx], ``y`` float[ny].
    metric : str
        The metric to draw; accuracies are drawn in percent.
    ax : matplotlib Axes3D, optional
        3-D axes (``projection="3d"``) to draw into; a new figure when omitted.
    log : bool
        Draw :math:`\\log_{10}` of the metric (positive values only).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.ticker import MaxNLocator

    surface = _read(src)
    _require_plane(surface, "plot_surface3d")
    values = _display_values(metric, surface.metric(metric))
    low, _ = _finite_range(surface, metric, values)
    label = _metric_label(metric)
    if log:
        if low <= 0:
            raise ValueError(
                f"{surface.name}: log needs positive values but {metric!r} has minimum {low:.6g}; pass log=False"
            )
        values = np.log10(values)
        label = f"log10 {label}"
    x, y = surface.coordinates(0), surface.coordinates(1)
    fig, ax = _figure_and_axes(ax, projection="3d", figsize=(7.0, 5.5))
    grid_x, grid_y = np.meshgrid(x, y)  # (ny, nx), like values.T
    masked = np.ma.masked_invalid(values).T
    low, high = _finite_range(surface, metric, values)
    drawn = ax.plot_surface(
        grid_x,
        grid_y,
        masked,
        cmap="viridis",
        vmin=low,
        vmax=high,
        rstride=1,
        cstride=1,
        linewidth=0.2,
        edgecolor=(0, 0, 0, 0.25),
        antialiased=True,
    )
    drawn.set_gid("surface")
    colorbar = fig.colorbar(drawn, ax=ax, shrink=0.6, pad=0.1)
    colorbar.set_label(label)
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel(surface.axis_label(1))
    ax.set_zlabel(label)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_ylim(float(y.min()), float(y.max()))
    ax.set_title(_title(surface, _metric_label(metric)) + _cells_note(surface, [metric]))
    return fig


def plot_trajectory(src: Source, metric: str = "train_loss", *, ax: Axes | None = None) -> Figure:
    """The training trajectory projected on a PCA plane, over the metric's contours.

    Li et al. (2018), Fig. 9: the trajectory (array ``trajectory`` float[T, 2], in
    training order) is a line with dots from a square (start) to a star (end); the axes
    name the principal directions with their explained variance (array
    ``explained-variance-ratio`` float[2]), e.g. ``PC1 (72.3%)``.

    On a plane through a curve (``surface-type`` ``"curve-plane"``, Garipov et al.,
    2018, Fig. 1) the ``trajectory`` array is the curve projected on the plane: it is
    drawn as a plain line named by the root attribute ``trajectory-label`` (e.g.
    ``Bezier curve (1 bend)``), without start/end marks, with the end points and the
    bend as the file's anchors; the title reads ``curve over <metric>``.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A plane result with a ``trajectory`` array.
    metric : str
        The metric of the contour lines.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        The file is not a plane or has no trajectory.
    """
    surface = _read(src)
    _require_plane(surface, "plot_trajectory")
    if surface.trajectory() is None:
        raise ValueError(
            f"{surface.name} has no trajectory (no array 'trajectory'; surface-type "
            f"{surface.surface_type!r}); trajectories come with PCA planes and planes through a curve"
        )
    what = "curve" if surface.surface_type == "curve-plane" else "training trajectory"
    title = _title(surface, f"{what} over {_metric_label(metric)}")
    return _contour(
        surface,
        metric,
        ax=ax,
        levels=None,
        log_levels=None,
        labels=True,
        mark=True,
        title=title,
        legend=True,
    )
