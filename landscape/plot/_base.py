"""What every figure shares: reading a result file once, labels, new figure or given axes.

Imports numpy and :mod:`landscape.io` only; matplotlib is imported when a figure is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import ResultFile, open_result

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
_SPECIAL_LABELS = {
    "lambda_max": r"$\lambda_{\max}$",
    "lambda_min": r"$\lambda_{\min}$",
    "eig_ratio": "eigenvalue ratio",
}
#: Planes whose two coordinates are lengths along orthonormal directions (Gram-Schmidt): drawn
#: with equal axis scales, so the geometry (the curve's bend, the checkpoints' triangle) is true.
_EQUAL_UNIT_PLANES = ("curve-plane", "three-checkpoints")
_FIGURE_ARRAYS = ("x", "y", "t", "anchors", "trajectory", "explained-variance-ratio")
_DEFAULT_LEVELS = 20
_MISSING_COLOR = (0.86, 0.86, 0.86)  # cells not computed (done flag 0)
_NONFINITE_COLOR = (0.93, 0.47, 0.47)  # computed cells whose value is NaN or Inf, hatched
_NONFINITE_HATCH = "xx"
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
    done: np.ndarray | None = None  # bool[shape]: the file's done flags (None: NaN means missing)
    added: tuple[str, ...] = ()  # metrics added after the run (no done flags: NaN means missing)

    @property
    def name(self) -> str:
        return f"'{self.path}'"

    @property
    def surface_type(self) -> str:
        return str(self.attrs.get("surface-type", self.kind))

    @property
    def equal_units(self) -> bool:
        """Whether x and y are lengths in the same units (:data:`_EQUAL_UNIT_PLANES`)."""
        return self.surface_type in _EQUAL_UNIT_PLANES

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

    def cells(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(missing, nonfinite)``: bool[shape] masks of the cells of metric ``name`` not
        computed (done flag 0; NaN for metrics added later, which have no flags) and of
        those computed whose value is NaN or Inf."""
        values = self.metric(name)
        missing = np.isnan(values) if self.done is None or name in self.added else ~self.done
        return missing, ~missing & ~np.isfinite(values)

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
    done = np.asarray(result.done, dtype=bool)
    added = tuple(m for m in result.metrics if m not in result.base_metrics)
    metrics = {}
    for name in result.metrics:
        values = np.asarray(result.read_metric(name), dtype=np.float64)
        # a value written without its done flag (a killed run) is not a result yet
        metrics[name] = values if name in added else np.where(done, values, np.nan)
    return _Surface(
        path=result.path,
        kind=result.kind,
        shape=tuple(result.shape),
        attrs=dict(result.attrs),
        metrics=metrics,
        # only the small arrays a figure uses: never the basis (J x P weights)
        arrays={name: result.read_array(name) for name in result.array_names() if name in _FIGURE_ARRAYS},
        done=done,
        added=added,
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


def _cells_note(surface: _Surface, names: Sequence[str], what: str = "cells") -> str:
    """``"\\n3 of 41 cells not computed; 8 computed cells not finite (NaN/Inf)"`` over the
    metrics ``names`` (a cell counts when it is so in any of them), or ``""``."""
    missing = np.zeros(surface.shape, dtype=bool)
    nonfinite = np.zeros(surface.shape, dtype=bool)
    for name in names:
        m, bad = surface.cells(name)
        missing |= m
        nonfinite |= bad
    nonfinite &= ~missing
    parts = []
    if missing.any():
        parts.append(f"{int(missing.sum())} of {missing.size} {what} not computed")
    if nonfinite.any():
        parts.append(f"{int(nonfinite.sum())} computed {what} not finite (NaN/Inf)")
    return "\n" + "; ".join(parts) if parts else ""


def _mark_nonfinite_points(ax: Axes, x: np.ndarray, nonfinite: np.ndarray, *, gid: str) -> None:
    """Red crosses along the bottom of ``ax`` at the computed points whose value is NaN or Inf
    (a line leaves a gap there, as it does where nothing is computed)."""
    if not nonfinite.any():
        return
    ax.plot(
        x[nonfinite],
        np.full(int(nonfinite.sum()), 0.03),
        "x",
        color="tab:red",
        markersize=7,
        markeredgewidth=2,
        transform=ax.get_xaxis_transform(),
        clip_on=False,
        gid=gid,
        label="computed, not finite (NaN/Inf)",
        zorder=6,
    )


def _fmt_level(value: float) -> str:
    return f"{value:.3g}"


def _fields(src: Any, reader: Callable[[Any], dict[str, Any]]) -> Any:
    """The data of a result that is not a grid over coordinates, read by attribute.

    ``src`` is a result file (a path or an open :class:`~landscape.io.ResultFile`, read with
    ``reader``, one of :mod:`landscape.io`'s ``read_<kind>`` functions), the plain dict such a
    reader returns, or any object with the same attributes (the analysis' dataclass: a
    figure reads its fields and calls none of its code).
    """
    if isinstance(src, (str, os.PathLike, ResultFile)):
        return SimpleNamespace(**reader(src))
    if isinstance(src, Mapping):
        return SimpleNamespace(**src)
    return src


def _figure_of(ax: Axes) -> Figure:
    """The figure that holds ``ax`` (the root figure when ``ax`` is in a subfigure)."""
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10: no subfigures to tell apart
        return ax.figure


def _figure_and_axes(
    ax: Axes | None, *, projection: str | None = None, figsize: tuple[float, float] = (7.0, 5.5)
) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new :class:`~matplotlib.figure.Figure` (no pyplot) with one
    axes of ``figsize`` when ``ax`` is None: the one way every figure function starts."""
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot(projection=projection)
    if projection == "3d" and getattr(ax, "name", None) != "3d":
        raise ValueError(
            f"plot_surface3d needs 3-D axes (projection='3d'), got {type(ax).__name__} "
            f"with projection {getattr(ax, 'name', None)!r}"
        )
    return _figure_of(ax), ax


def _finite_range(surface: _Surface, metric: str, values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        _, nonfinite = surface.cells(metric)
        if nonfinite.any():
            raise ValueError(
                f"{surface.name}: metric {metric!r} has no finite value: its {int(nonfinite.sum())} computed "
                "cells are all NaN or Inf"
            )
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
