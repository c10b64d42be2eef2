"""Figures of loss surfaces, made from result files only.

Every function here reads a result file written by ``landscape.surface`` (see
``docs/h5-format.md``) and draws it; nothing is evaluated again.  Each takes the
file's path or an open :class:`~landscape.io.ResultFile`, an optional matplotlib
``ax`` to draw into (a new :class:`~matplotlib.figure.Figure` when omitted) and
returns the figure.  Cells that are not computed yet (NaN) are masked, so a partly
computed file can be looked at while its run goes on.

Importing this module imports no matplotlib and chooses no backend: new figures are
plain :class:`matplotlib.figure.Figure` objects (no pyplot state), which render
headless with ``fig.savefig`` and display in notebooks.

============================  ===============================================================
function                      figure
============================  ===============================================================
:func:`plot_line`             1-D: losses (left axis) and accuracies in % (right axis)
:func:`plot_contour`          2-D: labelled contour lines, anchors and trajectory marked
:func:`plot_heatmap`          2-D: filled cells, missing cells grey
:func:`plot_surface3d`        2-D: 3-D surface
:func:`plot_trajectory`       PCA or curve plane: contours and the projected trajectory/curve
:func:`plot_curve_profile`    curve file: train loss and test error (%) along t, curve vs line
:func:`plot_file`             every figure that applies to a file, saved as PNG/PDF
:func:`export_vtp`            2-D: ParaView ``.vtp`` surface
============================  ===============================================================

The figures follow Li et al. (2018), *Visualizing the Loss Landscape of Neural Nets*
(contour lines with labels, log-spaced levels, marked checkpoints, trajectories on a
PCA plane with the explained variance on the axes) and Garipov et al. (2018), *Loss
Surfaces, Mode Connectivity, and Fast Ensembling of DNNs* (train solid, test dashed).

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from landscape.io import create_result
>>> from landscape.plot import plot_contour
>>> path = os.path.join(tempfile.mkdtemp(), "plane.h5")
>>> x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
>>> loss = 0.1 + x[:, None] ** 2 + 2 * y[None, :] ** 2
>>> with create_result(path, kind="plane", shape=(5, 4), metrics=["train_loss"],
...                    attrs={"surface-type": "random"}, arrays={"x": x, "y": y}) as rf:
...     rf.write_cells(np.arange(20), {"train_loss": loss.ravel()})
>>> fig = plot_contour(path)
>>> [float(v) for v in fig.axes[0].get_xlim()]   # the extent of x
[-1.0, 1.0]
>>> fig.savefig(os.path.join(os.path.dirname(path), "plane-contour.png"))
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np

from .io import ResultFile, open_result

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "export_vtp",
    "plot_contour",
    "plot_curve_profile",
    "plot_file",
    "plot_heatmap",
    "plot_hessian_maps",
    "plot_line",
    "plot_surface3d",
    "plot_trajectory",
]

Source = str | os.PathLike | ResultFile
"""What the functions accept: a result file's path or an open :class:`~landscape.io.ResultFile`."""

_SURFACE_NAMES = {
    "interpolation": "linear interpolation",
    "random-direction": "random direction",
    "random": "random plane",
    "three-checkpoints": "plane through three checkpoints",
    "pca": "PCA plane",
    "curve-plane": "plane through a curve",
    "curve-bezier": "Bezier curve",
    "curve-polychain": "polygonal chain",
    "curve": "curve and line segment",
    "swa-width": "line from the SWA toward the SGD solution",
}
_CURVE_KINDS = {"bezier": "Bezier curve", "polychain": "polygonal chain"}
_SPECIAL_LABELS = {
    "lambda_max": r"$\lambda_{\max}$",
    "lambda_min": r"$\lambda_{\min}$",
    "eig_ratio": "eigenvalue ratio",
}
_FIGURE_ARRAYS = ("x", "y", "t", "anchors", "trajectory", "explained-variance-ratio")
_DEFAULT_LEVELS = 20
_MISSING_COLOR = (0.86, 0.86, 0.86)
_ANCHOR_STYLE = dict(
    marker="o",
    markersize=8,
    markerfacecolor="white",
    markeredgecolor="black",
    markeredgewidth=1.5,
    linestyle="none",
    zorder=5,
)


# --------------------------------------------------------------------------- reading


@dataclass
class _Surface:
    """Everything a figure needs from a result file, read once."""

    path: str
    kind: str
    shape: tuple[int, ...]
    attrs: dict[str, Any]
    metrics: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"'{self.path}'"

    @property
    def surface_type(self) -> str:
        return str(self.attrs.get("surface-type", self.kind))

    def coordinates(self, axis: int) -> np.ndarray:
        name = "xy"[axis]
        if name in self.arrays:
            coords = np.asarray(self.arrays[name], dtype=np.float64).reshape(-1)
            if coords.size != self.shape[axis]:
                raise ValueError(
                    f"{self.name}: array {name!r} has {coords.size} entries but the grid has "
                    f"{self.shape[axis]} along axis {axis}"
                )
            return coords
        return np.arange(self.shape[axis], dtype=np.float64)

    def axis_label(self, axis: int) -> str:
        name = "xy"[axis]
        label = self.attrs.get(f"{name}-label")
        if label is None:
            if self.surface_type == "pca":
                label = f"PC{axis + 1}"
            elif name in self.arrays:
                label = name
            else:
                label = f"cell index {'ij'[axis]}"
        ratio = self.explained_variance()
        if ratio is not None and axis < ratio.size and "%" not in str(label):
            label = f"{label} ({100.0 * ratio[axis]:.1f}%)"
        return str(label)

    def explained_variance(self) -> np.ndarray | None:
        value = self.arrays.get("explained-variance-ratio", self.attrs.get("explained-variance-ratio"))
        if value is None:
            return None
        return np.asarray(value, dtype=np.float64).reshape(-1)

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metrics:
            raise ValueError(f"{self.name} has no metric {name!r}; it has {list(self.metrics)}")
        return self.metrics[name]

    def anchors(self) -> tuple[np.ndarray, list[str]]:
        """float[m, d] anchor coordinates and their names (empty when there are none)."""
        ndim = len(self.shape)
        if "anchors" in self.arrays:
            points = np.asarray(self.arrays["anchors"], dtype=np.float64).reshape(-1, ndim)
            names = self.attrs.get("anchor-names")
            if not isinstance(names, list) or len(names) != len(points):
                names = [f"anchor {k}" for k in range(len(points))]
            return points, [str(n) for n in names]
        if ndim == 1 and self.surface_type == "interpolation":
            return np.array([[0.0], [1.0]]), [r"$\theta_0$", r"$\theta_1$"]
        if ndim == 1 and self.surface_type == "random-direction":
            return np.array([[0.0]]), [r"$\theta^*$"]
        return np.zeros((0, ndim)), []

    def trajectory(self) -> np.ndarray | None:
        if "trajectory" not in self.arrays:
            return None
        return np.asarray(self.arrays["trajectory"], dtype=np.float64).reshape(-1, 2)


def _read(src: Source | _Surface) -> _Surface:
    """Read a result file (path or open ResultFile) into a :class:`_Surface`."""
    if isinstance(src, _Surface):
        return src
    if isinstance(src, ResultFile):
        return _read_open(src)
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"src must be a path or an open ResultFile, got {type(src).__name__}")
    with open_result(src, "r") as result:
        return _read_open(result)


def _read_open(result: ResultFile) -> _Surface:
    return _Surface(
        path=result.path,
        kind=result.kind,
        shape=tuple(result.shape),
        attrs=dict(result.attrs),
        metrics={name: np.asarray(result.read_metric(name), dtype=np.float64) for name in result.metrics},
        # only the small arrays a figure uses: never the basis (J x P weights)
        arrays={name: result.read_array(name) for name in result.array_names() if name in _FIGURE_ARRAYS},
    )


def _is_curve_profile(surface: _Surface) -> bool:
    return surface.kind == "curve" or surface.surface_type == "curve"


def _require_plane(surface: _Surface, function: str) -> None:
    if _is_curve_profile(surface):
        raise ValueError(
            f"{function} needs a plane but {surface.name} is a curve profile (kind 'curve', grid {surface.shape}: "
            "row 0 the curve, row 1 the line, along t); use plot_curve_profile"
        )
    if len(surface.shape) != 2:
        raise ValueError(
            f"{function} needs a plane (2-D grid) but {surface.name} is a {surface.kind!r} result "
            f"with grid {surface.shape}; use plot_line for lines"
        )


# --------------------------------------------------------------------------- labels


def _is_accuracy(name: str) -> bool:
    return name in ("acc", "accuracy") or name.endswith(("_acc", "_accuracy"))


def _is_loss(name: str) -> bool:
    return name in ("loss", "loss+l2") or name.endswith(("_loss", "_loss+l2"))


def _is_error(name: str) -> bool:
    """Errors in percent (the ``err`` metric)."""
    return name == "err" or name.endswith("_err")


def _metric_label(name: str) -> str:
    """Readable name: ``train_acc`` -> ``train accuracy (%)``."""
    if name in _SPECIAL_LABELS:
        return _SPECIAL_LABELS[name]
    if _is_accuracy(name) or _is_error(name):
        prefix = name.rsplit("_", 1)[0] if "_" in name else ""
        return f"{prefix.replace('_', ' ')} {'accuracy' if _is_accuracy(name) else 'error'} (%)".strip()
    return name.replace("_", " ").replace("+l2", " + L2")


def _display_values(name: str, values: np.ndarray) -> np.ndarray:
    """Values as drawn: accuracies (fractions in the file) in percent."""
    return values * 100.0 if _is_accuracy(name) else values


def _title(surface: _Surface, what: str) -> str:
    kind = _SURFACE_NAMES.get(surface.surface_type, surface.surface_type)
    return f"{what} — {kind}"


def _missing_note(values: np.ndarray) -> str:
    missing = int(np.count_nonzero(np.isnan(values)))
    return f"\n{missing} of {values.size} cells not computed" if missing else ""


def _fmt_level(value: float) -> str:
    return f"{value:.3g}"


# --------------------------------------------------------------------------- figures


def _figure_and_axes(
    ax: Axes | None, *, projection: str | None = None, figsize: tuple[float, float] = (7.0, 5.5)
) -> tuple[Figure, Axes]:
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot(projection=projection)
    if projection == "3d" and getattr(ax, "name", None) != "3d":
        raise ValueError(
            f"plot_surface3d needs 3-D axes (projection='3d'), got {type(ax).__name__} "
            f"with projection {getattr(ax, 'name', None)!r}"
        )
    try:
        return ax.get_figure(root=True), ax
    except TypeError:  # matplotlib < 3.10: no subfigures to tell apart
        return ax.figure, ax


def _finite_range(surface: _Surface, metric: str, values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"{surface.name}: metric {metric!r} has no finite values yet (nothing computed)")
    return float(finite.min()), float(finite.max())


def _use_log(metric: str, low: float, requested: bool | None, surface: _Surface, what: str) -> bool:
    if requested is None:
        return not _is_accuracy(metric) and low > 0
    if requested and low <= 0:
        raise ValueError(
            f"{surface.name}: {what} needs positive values but {metric!r} has minimum {low:.6g}; pass {what}=False"
        )
    return bool(requested)


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


def _set_extent(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_ylim(float(y.min()), float(y.max()))


def plot_line(
    src: Source, *, metrics: Sequence[str] | None = None, ax: Axes | None = None, log_loss: bool = False
) -> Figure:
    """1-D figure of a line result: losses on the left axis, accuracies (%) on the right.

    Train metrics are drawn solid and test metrics dashed (Garipov et al., 2018); the
    anchors of the line (``anchors`` array, else the end points ``x = 0`` and ``x = 1``
    of an interpolation or the centre ``x = 0`` of a random direction) are vertical
    dotted lines.  NaN cells leave gaps.

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
    ax.set_title(_title(surface, what) + _missing_note(surface.metrics[metrics[0]]))
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
        maximum of the data, or the levels themselves.  Cells not computed (NaN) are
        masked and shaded grey.
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
        (NaN) are masked.
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
    fig, ax = _figure_and_axes(ax)
    norm = LogNorm(vmin=low, vmax=high) if log else Normalize(vmin=low, vmax=high)
    grid = np.ma.masked_invalid(values).T  # rows are y, columns are x
    if np.ma.is_masked(grid):  # cells not computed yet: grey, as in the heatmap
        shade = np.ma.masked_array(np.zeros(grid.shape), mask=~np.ma.getmaskarray(grid))
        missing = ax.pcolormesh(x, y, shade, shading="nearest", cmap=ListedColormap([_MISSING_COLOR]), zorder=0)
        missing.set_gid("missing")
    contours = ax.contour(x, y, grid, levels=chosen, cmap="viridis", norm=norm, linewidths=1.3)
    contours.set_gid("contour")
    if labels and len(contours.levels):
        ax.clabel(contours, contours.levels[::2], inline=True, fontsize=8, fmt=_fmt_level)
    # A continuous colour bar (readable log ticks) with the contour levels drawn on it.
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=contours.get_cmap()), ax=ax)
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
    _set_extent(ax, x, y)
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel(surface.axis_label(1))
    ax.set_title((title or _title(surface, _metric_label(metric))) + _missing_note(values))
    return fig


def plot_heatmap(
    src: Source, metric: str = "train_loss", *, ax: Axes | None = None, log: bool | None = None, mark: bool = True
) -> Figure:
    """Filled heatmap of one metric over a plane; missing cells are grey.

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
    fig, ax = _figure_and_axes(ax)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_MISSING_COLOR)
    norm = LogNorm(vmin=low, vmax=high) if use_log else Normalize(vmin=low, vmax=high)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(values).T, shading="nearest", cmap=cmap, norm=norm)
    mesh.set_gid("heatmap")
    colorbar = fig.colorbar(mesh, ax=ax)
    colorbar.set_label(_metric_label(metric))
    if mark:
        _draw_trajectory(ax, surface)
        _draw_anchors(ax, surface)
    ax.set_xlabel(surface.axis_label(0))
    ax.set_ylabel(surface.axis_label(1))
    ax.set_title(_title(surface, _metric_label(metric)) + _missing_note(values))
    return fig


_MAP_PANELS = ("lambda_max", "lambda_min", "eig_ratio")
_DIAGNOSTICS = ("eig_residual_max", "eig_residual_min", "eig_hvps")


def plot_hessian_maps(src: Source, ax: Sequence[Axes] | None = None) -> Figure:
    """The eigenvalue maps of a plane side by side: :math:`\\lambda_{\\max}`,
    :math:`\\lambda_{\\min}` and :math:`|\\lambda_{\\min}/\\lambda_{\\max}|` (Li et al. 2018,
    Figure 7), with the checkpoints marked.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A plane with the metrics written by :func:`landscape.hessian.eigen_map`.
    ax : three Axes, optional
    """
    surface = _read(src)
    _require_plane(surface, "plot_hessian_maps")
    missing = [m for m in _MAP_PANELS if m not in surface.metrics]
    if missing:
        raise ValueError(f"{surface.name} has no eigenvalue maps ({missing}); run `landscape hessian map` first")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(16.0, 4.6), layout="constrained")
        ax = fig.subplots(1, 3)
    else:
        fig = ax[0].figure
    for a, name in zip(ax, _MAP_PANELS):
        plot_heatmap(surface, name, ax=a, log=False)
        a.set_title(_metric_label(name) if name != "eig_ratio" else r"$|\lambda_{\min} / \lambda_{\max}|$")
    fig.suptitle(_title(surface, "Hessian eigenvalues"))
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
    ax.set_title(_title(surface, _metric_label(metric)) + _missing_note(values))
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


# --------------------------------------------------------------------------- curve profiles

_CURVE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:olive")  # the curve, one per split
_LINE_COLORS = ("0.25", "tab:brown", "tab:pink", "tab:cyan")  # the line segment, one per split
_ERROR_SUFFIXES = ("_acc", "_accuracy")


def _split_of(metric: str) -> str | None:
    """``train_loss`` -> ``train``; None for a metric without a split prefix."""
    for suffix in ("_loss", *_ERROR_SUFFIXES):
        if metric.endswith(suffix) and len(metric) > len(suffix):
            return metric[: -len(suffix)]
    return None


def _curve_name(attrs: dict[str, Any]) -> str:
    """``Bezier curve, 1 bend`` / ``polygonal chain, 3 bends`` from ``curve-kind`` and ``n-bends``."""
    kind = attrs.get("curve-kind")
    name = _CURVE_KINDS.get(str(kind), f"{kind} curve") if kind is not None else "curve"
    bends = attrs.get("n-bends")
    if bends is not None:
        bends = int(bends)
        name += f", {bends} bend{'' if bends == 1 else 's'}"
    return name


def _curve_rows(surface: _Surface) -> dict[str, int]:
    """Row index of the curve and of the line (root attribute ``rows``, default curve 0, line 1)."""
    rows = surface.attrs.get("rows")
    if isinstance(rows, list) and "curve" in rows and "line" in rows:
        return {"curve": rows.index("curve"), "line": rows.index("line")}
    return {"curve": 0, "line": 1}


def _curve_t(surface: _Surface) -> np.ndarray:
    steps = surface.shape[1]
    if "t" not in surface.arrays:  # evaluate_curve always writes t; older files: evenly spaced
        return np.linspace(0.0, 1.0, steps)
    t = np.asarray(surface.arrays["t"], dtype=np.float64).reshape(-1)
    if t.size != steps:
        raise ValueError(f"{surface.name}: array 't' has {t.size} entries but the grid has {steps} points along t")
    return t


def _barrier(surface: _Surface, row: str, split: str) -> float | None:
    value = surface.attrs.get(f"barrier-{row}-{split}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _accuracy_metric(surface: _Surface, split: str) -> str | None:
    return next((split + s for s in _ERROR_SUFFIXES if split + s in surface.metrics), None)


def _profile_panels(surface: _Surface, splits: Sequence[str] | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[("loss", [(split, metric), ...]), ("error", [...])]``, panels without a metric left out."""
    loss_splits = [s for m in surface.metrics if _is_loss(m) and (s := _split_of(m)) is not None]
    acc_splits = [s for m in surface.metrics if _is_accuracy(m) and (s := _split_of(m)) is not None]
    if splits is None:  # Garipov et al.: train loss and test error
        loss = ["train"] if "train" in loss_splits else loss_splits[:1]
        error = ["test"] if "test" in acc_splits else acc_splits[-1:]
    else:
        if isinstance(splits, str):
            splits = [splits]
        unknown = [s for s in splits if s not in loss_splits and s not in acc_splits]
        if unknown:
            raise ValueError(
                f"{surface.name} has no loss or accuracy of split(s) {unknown}; its metrics are {list(surface.metrics)}"
            )
        loss = [s for s in splits if s in loss_splits]
        error = [s for s in splits if s in acc_splits]
    panels = []
    if loss:
        panels.append(("loss", [(s, f"{s}_loss") for s in loss]))
    if error:
        panels.append(("error", [(s, _accuracy_metric(surface, s)) for s in error]))
    if not panels:
        raise ValueError(
            f"plot_curve_profile: {surface.name} has no <split>_loss or <split>_acc metric; "
            f"it has {list(surface.metrics)}"
        )
    return panels


def _draw_profile_panel(
    ax: Axes, surface: _Surface, t: np.ndarray, what: str, chosen: list[tuple[str, str]], rows: dict[str, int]
) -> np.ndarray:
    """One panel: each split's loss (or error in %) along t, curve solid, line dashed.

    Returns the NaN mask (union over the drawn metrics) of the 2 x T grid.
    """
    curve_name = _curve_name(surface.attrs)
    several = len(chosen) > 1
    missing = np.zeros(surface.shape, dtype=bool)
    for k, (split, metric) in enumerate(chosen):
        values = surface.metric(metric)
        missing |= np.isnan(values)
        if what == "error":
            values = 100.0 * (1.0 - values)
        for row, style, colors, width in (
            ("curve", "-", _CURVE_COLORS, 2.4),
            ("line", "--", _LINE_COLORS, 1.9),
        ):
            label = curve_name if row == "curve" else "line segment"
            if several:
                label += f", {split}"
            height = _barrier(surface, row, split) if what == "loss" else None
            if height is not None:
                label += f" (barrier {height:.3g} nats)"
            ax.plot(
                t,
                values[rows[row]],
                style,
                color=colors[k % len(colors)],
                linewidth=width,
                label=label,
                gid=f"{row}-{split}_{what}",
                zorder=3 if row == "curve" else 2,
            )
        # the endpoints (t = 0 and t = 1): the two trained networks, shared by curve and line
        ends = []
        for i in (0, -1):
            column = values[[rows["curve"], rows["line"]], i]
            finite = column[np.isfinite(column)]
            ends.append(finite[0] if finite.size else np.nan)
        ax.plot(
            t[[0, -1]],
            ends,
            gid=f"endpoints-{split}_{what}",
            label="endpoints" if k == 0 else "_nolegend_",
            clip_on=False,
            **_ANCHOR_STYLE,
        )
    prefix = "" if several else f"{chosen[0][0]} "
    ax.set_ylabel(f"{prefix}loss" if what == "loss" else f"{prefix}error (%)")
    ax.set_xlabel(str(surface.attrs.get("x-label", "t")))
    span = float(t.max() - t.min()) or 1.0
    ax.set_xlim(float(t.min()) - 0.02 * span, float(t.max()) + 0.02 * span)
    ax.grid(True, alpha=0.3)
    # below the axes, as in plot_line: the legend never covers the barrier of the line
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "endpoints")  # endpoints last
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=1 if several else min(2, len(handles)),
        fontsize=9,
        frameon=False,
    )
    return missing


def plot_curve_profile(
    src: Source, *, ax: Axes | Sequence[Axes] | None = None, splits: Sequence[str] | None = None
) -> Figure:
    """Loss and error along a curve and along the line segment (Garipov et al., 2018).

    Reads a curve profile (kind ``"curve"``, written by
    :func:`landscape.curves.profile.evaluate_curve`): grid ``(2, T)`` with row 0 the
    trained curve and row 1 the straight line between the same endpoints (root
    attribute ``rows``), array ``t`` float[T].  Two panels side by side:

    * left, the loss along t (default: ``train_loss``): the curve solid, the line
      dashed; the legend gives each one's barrier height from the root attributes
      ``barrier-curve-<split>`` and ``barrier-line-<split>`` (max loss along the path
      minus the mean of the endpoint losses, e.g. ``barrier 0.45 nats``) once the run
      has written them;
    * right, the error in percent, ``100 * (1 - acc)`` (default: ``test_acc``).

    The legend names the curve from ``curve-kind`` and ``n-bends`` (``Bezier curve, 1
    bend``, ``polygonal chain, 3 bends``) and the ``line segment``; the endpoints
    (t = 0 and t = 1, the two trained networks) are white circles.  Points not computed
    yet (NaN) leave gaps and are counted in the title.  A panel whose metric the file
    lacks is left out (a file with only losses gives the loss panel alone).

    Parameters
    ----------
    src : str, path-like or ResultFile
        A curve profile result.
    ax : matplotlib Axes or sequence of Axes, optional
        Where to draw.  None: a new figure with both panels.  One Axes: the loss panel
        only (the error panel when the file has no loss).  A sequence of Axes: one per
        panel, loss then error.
    splits : sequence of str, optional
        Splits to draw, e.g. ``["train", "test"]``: the loss panel then shows the loss
        of each listed split and the error panel the error of each, in one colour per
        split.  Default: train loss on the left and test error on the right (the
        splits the file has when it lacks those).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        The file is not a curve profile, has no loss or accuracy metric, or a given
        split is not in it, or ``ax`` holds another number of axes than there are
        panels.
    """
    surface = _read(src)
    if not _is_curve_profile(surface):
        raise ValueError(
            f"plot_curve_profile needs a curve profile (kind 'curve', written by evaluate_curve) but "
            f"{surface.name} is a {surface.kind!r} result with surface-type {surface.surface_type!r}"
        )
    if len(surface.shape) != 2 or surface.shape[0] != 2:
        raise ValueError(
            f"{surface.name}: a curve profile has a (2, T) grid (curve, line); this one has {surface.shape}"
        )
    t = _curve_t(surface)
    rows = _curve_rows(surface)
    panels = _profile_panels(surface, splits)

    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.0 * len(panels), 4.6), layout="constrained")
        axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    elif isinstance(ax, (Sequence, np.ndarray)):
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(panels):
            raise ValueError(
                f"plot_curve_profile: {len(axes)} axes given for {len(panels)} panel(s) "
                f"({', '.join(what for what, _ in panels)}) of {surface.name}"
            )
        fig, _ = _figure_and_axes(axes[0])
    else:
        fig, ax = _figure_and_axes(ax)
        axes, panels = [ax], panels[:1]

    missing = np.zeros(surface.shape, dtype=bool)
    for axis, (what, chosen) in zip(axes, panels, strict=True):
        missing |= _draw_profile_panel(axis, surface, t, what, chosen, rows)
        if len(chosen) > 1:
            axis.set_title(f"{what}: {', '.join(s for s, _ in chosen)}")

    note = f"{int(missing.sum())} of {missing.size} points not computed" if missing.any() else ""
    title = f"{_curve_name(surface.attrs)} vs line segment between the same endpoints"
    if ax is None:
        fig.suptitle(title + (f"\n{note}" if note else ""))
    elif note:
        axes[0].set_title((axes[0].get_title() + "\n" if axes[0].get_title() else "") + note)
    return fig


# --------------------------------------------------------------------------- files


def _present(surface: _Surface, metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        for name in metrics:
            surface.metric(name)
        return list(metrics)
    return [name for name, values in surface.metrics.items() if np.isfinite(values).any()]


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
      accuracy along ``t`` of every method (:func:`~landscape.connect.plot_connections`);
    * WA-ensembles (kind ``"wa-ensemble"``): ``<stem>-wa-ensemble.<fmt>``
      (:func:`~landscape.connect.plot_wa_ensemble`);
    * ensembles at equal budgets (kind ``"ensembles"``): ``<stem>-ensembles.<fmt>``
      (:func:`~landscape.ensembles.plot_ensembles`).

    ``<stem>`` is the file name without ``.h5``.  Metrics with no finite value yet are
    skipped.

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
    if surface.kind == "ensembles":
        from .ensembles.report import plot_ensembles

        jobs.append(("ensembles", None, lambda: plot_ensembles(surface.path)))
    elif surface.kind == "wa-ensemble":
        from .connect.ensemble import plot_wa_ensemble

        jobs.append(("wa-ensemble", None, lambda: plot_wa_ensemble(surface.path)))
    elif surface.kind == "connections":
        from .connect.report import plot_connections

        for split in surface.attrs.get("splits", []):
            jobs.append(("connections", split, lambda split=split: plot_connections(surface.path, split=split)))
    elif _is_curve_profile(surface):
        splits = None
        if metrics is not None:
            chosen = [_split_of(m) for m in names if _is_loss(m) or _is_accuracy(m)]
            splits = list(dict.fromkeys(s for s in chosen if s is not None)) or None
        jobs.append(("profile", None, lambda: plot_curve_profile(surface, splits=splits)))
    elif len(surface.shape) == 1:
        standard = [m for m in names if _is_loss(m) or _is_accuracy(m) or _is_error(m)]
        if standard:
            jobs.append(("line", "loss", lambda: plot_line(surface, metrics=standard)))
        for name in names:
            if name not in standard:
                jobs.append(("line", name, lambda name=name: plot_line(surface, metrics=[name])))
    elif len(surface.shape) == 2:
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
    else:
        raise ValueError(f"plot_file: {surface.name} has a {len(surface.shape)}-D grid; only lines and planes plot")

    out_dir = os.fspath(out_dir)
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


def _base64_block(data: np.ndarray) -> str:
    """VTK XML inline binary: base64 of a UInt64 byte count followed by the raw data."""
    raw = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
    return base64.b64encode(np.array([len(raw)], dtype="<u8").tobytes() + raw).decode("ascii")


def export_vtp(
    src: Source,
    out_path: str | os.PathLike[str],
    metric: str = "train_loss",
    *,
    log: bool = False,
    zmax: float | None = None,
    force: bool = False,
) -> str:
    """Write a plane's surface as ParaView VTK XML PolyData (``.vtp``).

    Point ``i * ny + j`` (the cell's flat index) is at ``(x[i], y[j], z)`` with
    ``z`` the metric value (:math:`\\log_{10}` of it with ``log``, capped at ``zmax``);
    each grid square whose four corners are finite is one quad.  The metric itself is
    the point scalars, NaN where not computed.  Float arrays are stored as inline
    base64 binary (``format="binary"``, ``header_type="UInt64"``) because VTK's ASCII
    reader cannot read NaN; points of missing cells get the finite minimum as ``z``
    and belong to no quad.  The same file as loss-landscape's ``h52vtp`` makes, for
    ParaView renderings like Li et al. (2018), Fig. 1.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A plane result (2-D grid ``(nx, ny)``, arrays ``x``, ``y``).
    out_path : str or path-like
        The ``.vtp`` file to write.
    metric : str
    log : bool
        Heights are :math:`\\log_{10}` of the metric (positive values only).
    zmax : float, optional
        Heights above ``zmax`` are set to ``zmax`` (after ``log``).
    force : bool
        Overwrite an existing ``out_path``.

    Returns
    -------
    str
        ``out_path``.

    Raises
    ------
    ValueError
        The file is a line, or ``log`` with non-positive values.
    FileExistsError
        ``out_path`` exists and ``force`` is False.
    """
    surface = _read(src)
    if len(surface.shape) != 2:
        raise ValueError(
            f"export_vtp needs a plane (2-D grid) but {surface.name} is a {surface.kind!r} result with grid "
            f"{surface.shape}; a line has no surface to export"
        )
    out_path = os.fspath(out_path)
    if os.path.lexists(out_path) and not force:
        raise FileExistsError(f"'{out_path}' already exists; pass --force to overwrite it")
    values = surface.metric(metric)
    nx, ny = surface.shape
    x, y = surface.coordinates(0), surface.coordinates(1)
    low, _ = _finite_range(surface, metric, values)
    finite = np.isfinite(values)
    heights = values.copy()
    if log:
        if low <= 0:
            raise ValueError(
                f"{surface.name}: log needs positive values but {metric!r} has minimum {low:.6g}; pass log=False"
            )
        heights[finite] = np.log10(heights[finite])
    if zmax is not None:
        heights[finite] = np.minimum(heights[finite], float(zmax))
    heights[~finite] = heights[finite].min()
    grid_x, grid_y = np.meshgrid(x, y, indexing="ij")  # (nx, ny), C-order = flat cell index
    points = np.stack([grid_x.ravel(), grid_y.ravel(), heights.ravel()], axis=1)

    ids = np.arange(nx * ny).reshape(nx, ny)
    corners = np.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], axis=-1).reshape(-1, 4)
    keep = finite.ravel()[corners].all(axis=1)
    quads = corners[keep]
    offsets = 4 * np.arange(1, len(quads) + 1)

    def ints(array: np.ndarray) -> str:
        return " ".join(str(int(v)) for v in array.ravel())

    scalars = np.ascontiguousarray(values.ravel(), dtype=np.float64)
    text = f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">
  <PolyData>
    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" \
NumberOfPolys="{len(quads)}">
      <PointData Scalars={quoteattr(metric)}>
        <DataArray type="Float64" Name={quoteattr(metric)} NumberOfComponents="1" format="binary">
          {_base64_block(scalars)}
        </DataArray>
      </PointData>
      <Points>
        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="binary">
          {_base64_block(np.ascontiguousarray(points, dtype=np.float64))}
        </DataArray>
      </Points>
      <Polys>
        <DataArray type="Int64" Name="connectivity" format="ascii">
          {ints(quads)}
        </DataArray>
        <DataArray type="Int64" Name="offsets" format="ascii">
          {ints(offsets)}
        </DataArray>
      </Polys>
    </Piece>
  </PolyData>
</VTKFile>
"""
    directory = os.path.dirname(os.path.abspath(out_path))
    tmp = os.path.join(directory, f".{os.path.basename(out_path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        if force:
            os.replace(tmp, out_path)
        else:
            try:
                os.link(tmp, out_path)
            except FileExistsError:
                raise FileExistsError(f"'{out_path}' already exists; pass --force to overwrite it") from None
            except OSError:
                os.replace(tmp, out_path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    return out_path
