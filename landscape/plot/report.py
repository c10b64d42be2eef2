"""One self-contained HTML page of result files: ``landscape report PATH... --out report.html``.

Every file becomes a section, made by the section builder registered for its kind (the
surfaces' builder follows :func:`~landscape.plot.files.figure_view`, the dispatch of
:func:`~landscape.plot.plot_file`): an interactive 3-D surface and a contour map with the
checkpoints, trajectory or curve overlaid for planes, line plots along ``t`` or ``x`` for
lines, curve profiles and connections, tables for ensembles and connections, Hessian
eigenvalue maps, merges against their parameters, sharpness per measure, and the run's
settings and provenance (its attributes). A kind without a builder gets the generic section: its metrics as line
plots or tables, and its attributes. A new kind adds its section in one place::

    from landscape.plot.report import register_section

    @register_section("my-kind")
    def my_kind_section(surface):     # a landscape.plot._base._Surface, read once
        return {"title": "...", "blocks": [table_block("...", columns, rows)]}

The page draws with a small canvas script of our own (``report_assets/report.js``, about
25 kB, no WebGL: the 3-D surface is painted quad by quad, far to near); all script, style
and data are embedded, a Content-Security-Policy meta tag forbids every network request, and
the page opens offline. docs/report.md says why this and not plotly's 4.8 MB bundle.

Blocks (the data a section hands to the page, plain JSON):

* ``{"type": "plane", ...}`` (:func:`plane_block`): a 3-D surface and a contour map of one
  metric over a plane, with metric and split selectors and a linear/log height switch;
* ``{"type": "lines", ...}`` (:func:`lines_block`): one plot of series along one axis;
* ``{"type": "maps", ...}``: small heatmaps side by side (the Hessian eigenvalue maps);
* ``{"type": "table", ...}`` (:func:`table_block`): a table, written into the HTML itself.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import html
import json
import os
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from ..io import RUN_ATTRS, read_connections, read_ensembles, read_predictions, read_wa_ensemble, result_kinds
from ._base import (
    _SURFACE_NAMES,
    Source,
    _display_values,
    _is_accuracy,
    _is_error,
    _is_loss,
    _metric_label,
    _read,
    _Surface,
)
from .connections import swap_points
from .curves import _curve_name, _curve_rows, _curve_t, _split_of
from .files import figure_view
from .hessian import _DIAGNOSTICS, _MAP_PANELS
from .merge import _AXIS_LABELS, _merge_file
from .sharpness import _read_cells

__all__ = [
    "SectionBuilder",
    "lines_block",
    "plane_block",
    "register_section",
    "render_report",
    "report_section",
    "section_builders",
    "table_block",
    "write_report",
]

SectionBuilder = Callable[[_Surface], dict[str, Any]]
"""A function from a result file read once (``_Surface``: ``kind``, ``shape``, ``attrs``,
``metrics``, small ``arrays``, ``path``) to its section: ``{"title": str, "blocks": [...]}``."""

_SECTIONS: dict[str, SectionBuilder] = {}
_DIGITS = 6  # significant digits of the numbers embedded in the page


def register_section(name: str, build: SectionBuilder | None = None) -> Any:
    """Register the section builder of the result kind ``name`` (``"connections"``; a kind
    of :func:`landscape.io.register_kind`). Usable as a decorator. Registering a kind twice
    with another function raises ``ValueError`` (one builder per kind)."""

    def add(function: SectionBuilder) -> SectionBuilder:
        old = _SECTIONS.get(name)
        if old is not None and old is not function:
            raise ValueError(f"a report section for {name!r} is already registered ({old.__qualname__})")
        _SECTIONS[name] = function
        return function

    return add if build is None else add(build)


def section_builders() -> dict[str, SectionBuilder]:
    """Every registered section builder, by kind."""
    return dict(_SECTIONS)


# --------------------------------------------------------------------------- JSON data


def _numbers(values: Any) -> Any:
    """An array as nested lists of floats with ``_DIGITS`` significant digits, None for NaN/Inf."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0:
        v = float(a)
        return float(f"{v:.{_DIGITS}g}") if np.isfinite(v) else None
    return [_numbers(v) for v in a]


def _jsonable(value: Any) -> Any:
    """Attributes as JSON: numpy values as Python ones, NaN/Inf as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.generic,)):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: Any, digits: int = 4) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{v:.{digits}g}" if np.isfinite(v) else "—"


# --------------------------------------------------------------------------- blocks


def lines_block(
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[dict[str, Any]],
    *,
    hlines: Sequence[dict[str, Any]] = (),
    vlines: Sequence[dict[str, Any]] = (),
    log_toggle: bool = False,
) -> dict[str, Any]:
    """A line plot: each series ``{"label", "x", "y"}`` with optional ``"dash": True``,
    ``"faint"`` (a bool[K] mask of the points drawn thin and faint behind the others, e.g. an
    OT swap stage) and ``"color"`` (index into the page's palette); ``hlines``/``vlines``
    ``{"y"|"x": float, "label": str}`` are labelled grey lines."""
    out = []
    for s in series:
        item = {"label": str(s["label"]), "x": _numbers(s["x"]), "y": _numbers(s["y"])}
        for key in ("dash", "color"):
            if key in s:
                item[key] = s[key]
        if "faint" in s and np.any(s["faint"]):
            item["faint"] = [bool(v) for v in np.asarray(s["faint"]).reshape(-1)]
        out.append(item)
    return {
        "type": "lines",
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "series": out,
        "hlines": [{"y": _numbers(h["y"]), "label": str(h["label"])} for h in hlines],
        "vlines": [{"x": _numbers(v["x"]), "label": str(v["label"])} for v in vlines],
        "log_toggle": bool(log_toggle),
    }


def table_block(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table of strings (numbers formatted with 4 significant digits, None and NaN as —)."""
    return {
        "type": "table",
        "title": title,
        "columns": [str(c) for c in columns],
        "rows": [[v if isinstance(v, str) else "—" if v is None else _fmt(v) for v in row] for row in rows],
    }


def _quantity(name: str) -> tuple[str, str]:
    """``train_loss`` -> ``("loss", "train")``; a metric without a split -> ``(name, "")``."""
    split = _split_of(name)
    return (name[len(split) + 1 :], split) if split else (name, "")


def _quantity_label(quantity: str) -> str:
    return _metric_label(quantity) if quantity not in ("acc", "accuracy") else "accuracy (%)"


#: The most cells a plane shows along each axis; a finer grid is shown every k-th cell (a
#: 1001 x 1001 plane would make a page of 10 MB per metric and a slow 3-D view).
MAX_CELLS_PER_AXIS = 201


def _plane_cells(surface: _Surface) -> tuple[slice, slice, str]:
    """The cells of a plane the page shows (every k-th along an axis longer than
    :data:`MAX_CELLS_PER_AXIS`, the last one kept) and a note saying so, or ``""``."""
    steps = [-(-n // MAX_CELLS_PER_AXIS) for n in surface.shape[:2]]
    if steps == [1, 1]:
        return slice(None), slice(None), ""
    note = f"grid {surface.shape[0]} x {surface.shape[1]}: shown every {steps[0]} x {steps[1]} cells"
    return slice(None, None, steps[0]), slice(None, None, steps[1]), note


def plane_block(surface: _Surface, metrics: Sequence[str]) -> dict[str, Any]:
    """The 3-D surface and contour map of a plane: every metric in ``metrics`` (accuracies in
    percent) grouped by quantity and split, with the plane's anchors and trajectory; a grid
    finer than :data:`MAX_CELLS_PER_AXIS` is thinned (``note`` says so)."""
    sx, sy, note = _plane_cells(surface)
    quantities: dict[str, dict[str, Any]] = {}
    for name in metrics:
        quantity, split = _quantity(name)
        entry = quantities.setdefault(quantity, {"label": _quantity_label(quantity), "splits": {}})
        entry["splits"][split or "-"] = _numbers(_display_values(name, surface.metrics[name])[sx, sy])
    points, names = surface.anchors()
    trajectory = surface.trajectory()
    curve = surface.surface_type == "curve-plane"
    return {
        "type": "plane",
        "note": note,
        "x": _numbers(surface.coordinates(0)[sx]),
        "y": _numbers(surface.coordinates(1)[sy]),
        "xlabel": surface.axis_label(0),
        "ylabel": surface.axis_label(1),
        "equal": surface.equal_units,
        "quantities": quantities,
        "anchors": [[*_numbers(p), str(n)] for p, n in zip(points, names, strict=True)],
        "trajectory": None if trajectory is None else _numbers(trajectory),
        "trajectory_label": str(surface.attrs.get("trajectory-label", "curve" if curve else "training trajectory")),
        "curve": curve,
    }


# --------------------------------------------------------------------------- sections


def _finite_extreme(values: Any, extreme: Callable[[np.ndarray], Any]) -> float:
    """``extreme`` (np.min, np.max) of the finite values, NaN when there is none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(extreme(finite)) if finite.size else float("nan")


def _finite_metrics(surface: _Surface) -> list[str]:
    return [m for m, v in surface.metrics.items() if np.isfinite(v).any()]


def plane_section(surface: _Surface) -> dict[str, Any]:
    """A plane: the interactive surface and contour of every metric, the Hessian eigenvalue
    maps when the file has them."""
    names = [m for m in _finite_metrics(surface) if m not in _DIAGNOSTICS]
    blocks: list[dict[str, Any]] = []
    if names:
        blocks.append(plane_block(surface, names))
    if all(m in surface.metrics for m in _MAP_PANELS):
        sx, sy, note = _plane_cells(surface)
        labels = {"lambda_max": "λmax", "lambda_min": "λmin", "eig_ratio": "|λmin / λmax|"}
        maps = [{"label": labels[m], "values": _numbers(surface.metrics[m][sx, sy])} for m in _MAP_PANELS]
        blocks.append(
            {
                "type": "maps",
                "title": "Hessian eigenvalues" + (f" ({note})" if note else ""),
                "x": _numbers(surface.coordinates(0)[sx]),
                "y": _numbers(surface.coordinates(1)[sy]),
                "xlabel": surface.axis_label(0),
                "ylabel": surface.axis_label(1),
                "maps": maps,
            }
        )
    return {"blocks": blocks}


def _metric_groups(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Losses together, accuracies together, errors together, every other metric alone."""
    groups = [
        ("loss", [m for m in names if _is_loss(m)]),
        ("accuracy (%)", [m for m in names if _is_accuracy(m)]),
        ("error (%)", [m for m in names if _is_error(m)]),
    ]
    grouped = {m for _, ms in groups for m in ms}
    groups += [(_metric_label(m), [m]) for m in names if m not in grouped]
    return [(label, ms) for label, ms in groups if ms]


def line_section(surface: _Surface) -> dict[str, Any]:
    """A line: one plot per quantity (losses, accuracies, each other metric), splits as series,
    the anchors (the checkpoints) as vertical lines."""
    x = surface.coordinates(0)
    points, names = surface.anchors()
    vlines = [{"x": p[0], "label": n.replace("$", "").replace("\\", "")} for p, n in zip(points, names, strict=True)]
    blocks = []
    for label, metrics in _metric_groups(_finite_metrics(surface)):
        series = [
            {
                "label": _metric_label(m),
                "x": x,
                "y": _display_values(m, surface.metrics[m]),
                "dash": _split_of(m) == "test",
            }
            for m in metrics
        ]
        positive = all(_finite_extreme(surface.metrics[m], np.min) > 0 for m in metrics)
        blocks.append(lines_block(label, surface.axis_label(0), label, series, vlines=vlines, log_toggle=positive))
    return {"blocks": blocks}


def profile_section(surface: _Surface) -> dict[str, Any]:
    """A curve profile: loss and accuracy along t, the curve solid against the line dashed,
    one colour per split; the barriers in a table."""
    t = _curve_t(surface)
    rows = _curve_rows(surface)
    curve = _curve_name(surface.attrs)
    blocks, barriers = [], []
    for quantity, test in (("loss", _is_loss), ("accuracy (%)", _is_accuracy)):
        metrics = [m for m in _finite_metrics(surface) if test(m)]
        series = []
        for color, m in enumerate(metrics):
            values = _display_values(m, surface.metrics[m])
            split = _split_of(m) or m
            series.append({"label": f"{curve}, {split}", "x": t, "y": values[rows["curve"]], "color": color})
            series.append(
                {"label": f"line segment, {split}", "x": t, "y": values[rows["line"]], "dash": True, "color": color}
            )
        if series:
            positive = quantity == "loss" and all(_finite_extreme(surface.metrics[m], np.min) > 0 for m in metrics)
            blocks.append(lines_block(f"{quantity} along t", "t", quantity, series, log_toggle=positive))
    for split in surface.attrs.get("splits", []) or []:
        cells = [surface.attrs.get(f"barrier-{row}-{split}") for row in ("curve", "line")]
        if any(c is not None for c in cells):
            barriers.append([str(split), *cells])
    if barriers:
        blocks.append(
            table_block(
                "loss barrier (max along the path minus the endpoints' mean)", ["split", curve, "line"], barriers
            )
        )
    return {"blocks": blocks}


def surface_section(surface: _Surface) -> dict[str, Any]:
    """A surface (kinds ``line``, ``plane``, ``curve``, ``loss-landscape``), by the view
    :func:`~landscape.plot.files.figure_view` gives it, as :func:`~landscape.plot.plot_file`
    draws it: a plane, a line or a curve profile; a grid of more dimensions gets the
    generic section."""
    try:
        view = figure_view(surface)
    except ValueError:
        return generic_section(surface)
    return {"plane": plane_section, "line": line_section, "profile": profile_section}[view](surface)


for _kind in ("line", "plane", "curve", "loss-landscape"):
    register_section(_kind, surface_section)


@register_section("connections")
def connections_section(surface: _Surface) -> dict[str, Any]:
    """Connections of two networks: accuracy along t of every method per split (the OT swap
    stage thin and faint behind the others, the endpoints as labelled lines) and the table of
    worst accuracies and largest losses."""
    rep = read_connections(surface.path)
    methods = [m for m in rep["methods"] if m not in rep["skipped"]]
    blocks = []
    for split in rep["splits"]:
        e = rep["endpoints"][split]
        series = [
            {
                "label": rep["labels"].get(m, m),
                "x": rep["t"][m],
                "y": 100.0 * np.asarray(rep["acc"][m][split], dtype=np.float64),
                "faint": swap_points(rep["stage"][m]),
            }
            for m in methods
        ]
        hlines = [
            {"y": 100.0 * e["A_acc"], "label": f"A (t = 0) {100 * e['A_acc']:.2f}%"},
            {"y": 100.0 * e["B_acc"], "label": f"B (t = 1) {100 * e['B_acc']:.2f}%"},
        ]
        blocks.append(lines_block(f"{split} accuracy along t", "t", f"{split} accuracy (%)", series, hlines=hlines))
    columns = ["method"] + [f"worst {s} acc (%)" for s in rep["splits"]] + [f"max {s} loss" for s in rep["splits"]]
    rows = []
    for m in methods:
        acc = [100.0 * _finite_extreme(rep["acc"][m][s], np.min) for s in rep["splits"]]
        loss = [_finite_extreme(rep["loss"][m][s], np.max) for s in rep["splits"]]
        rows.append([rep["labels"].get(m, m), *acc, *loss])
    rows.append(
        [
            "end points (A / B)",
            *[
                f"{100 * rep['endpoints'][s]['A_acc']:.4g} / {100 * rep['endpoints'][s]['B_acc']:.4g}"
                for s in rep["splits"]
            ],
            *[f"{rep['endpoints'][s]['A_loss']:.4g} / {rep['endpoints'][s]['B_loss']:.4g}" for s in rep["splits"]],
        ]
    )
    rows += [
        [f"{rep['labels'].get(m, m)}: skipped", reason] + [""] * (len(columns) - 2)
        for m, reason in rep["skipped"].items()
    ]
    blocks.insert(0, table_block("along each path", columns, rows))
    return {"title": "Connections between A and B", "blocks": blocks}


@register_section("ensembles")
def ensembles_section(surface: _Surface) -> dict[str, Any]:
    """Ensembles at equal budgets: the table of accuracy, NLL and ECE per run and the
    ensemble's accuracy as members are added against the training budget."""
    ens = read_ensembles(surface.path)
    rows = [
        [label, 100.0 * a, 100.0 * (1.0 - a), n, c]
        for label, a, n, c in zip(ens["labels"], ens["acc"], ens["nll"], ens["ece"], strict=True)
    ]
    pm = ens["per_member"]
    series = []
    for i, label in enumerate(ens["labels"]):
        budget, acc = np.asarray(pm["budget"][i], float), np.asarray(pm["cumulative_acc"][i], float)
        ok = np.isfinite(budget)
        series.append({"label": label, "x": budget[ok], "y": 100.0 * acc[ok]})
    return {
        "title": "Ensembles at equal training budgets",
        "blocks": [
            table_block("the whole ensemble", ["run", "accuracy (%)", "error (%)", "NLL", "ECE"], rows),
            lines_block("ensemble accuracy as members are added", "training budget (epochs)", "accuracy (%)", series),
        ],
    }


@register_section("wa-ensemble")
def wa_ensemble_section(surface: _Surface) -> dict[str, Any]:
    """WA-ensembles: accuracy against the number of members, one series per head size."""
    curve = read_wa_ensemble(surface.path)
    acc = np.asarray(curve["acc"], dtype=np.float64)
    series, rows = [], []
    for i, n in enumerate(curve["head_layers"]):
        c = curve["cost"][i]
        label = (
            "Ind" if n == curve["n_layers"] else f"WA({n})"
        ) + f", {c['params'] / c['params_ordinary']:.2f}x params"
        series.append({"label": label, "x": curve["sizes"], "y": 100.0 * acc[i], "dash": n == curve["n_layers"]})
        rows.append([label, *(100.0 * acc[i])])
    return {
        "blocks": [
            lines_block("ensemble accuracy", "number of networks", "accuracy (%)", series),
            table_block("ensemble accuracy (%)", ["heads", *[str(s) for s in curve["sizes"]]], rows),
        ]
    }


@register_section("predict")
def predictions_section(surface: _Surface) -> dict[str, Any]:
    """Prediction schemes of a variational network: accuracy, NLL and ECE per scheme."""
    p = read_predictions(surface.path)
    rows = [[s, 100.0 * a, n, c] for s, a, n, c in zip(p["schemes"], p["acc"], p["nll"], p["ece"], strict=True)]
    return {"blocks": [table_block(f"{p['samples']} samples", ["scheme", "accuracy (%)", "NLL", "ECE"], rows)]}


@register_section("merge")
def merge_section(surface: _Surface) -> dict[str, Any]:
    """Merges (``landscape merge``): soups as a table of their rows; any other grid as each
    quantity against its last parameter axis (lambda, t, alpha), one line per value of the
    other axes (the lambda-plane: one line per lambda_a), as :func:`~landscape.plot.plot_merge`."""
    surface, axes, params = _merge_file(surface)
    names = _finite_metrics(surface)
    if axes == ["row"]:
        rows = [str(r) for r in surface.attrs.get("rows") or range(surface.shape[0])]
        values = [_display_values(m, surface.metrics[m]) for m in names]
        table = [[r, *[v[i] for v in values]] for i, r in enumerate(rows)]
        return {"blocks": [table_block("soups and their ingredients", ["row", *map(_metric_label, names)], table)]}
    x, others = params[axes[-1]], axes[:-1]
    xlabel = _AXIS_LABELS.get(axes[-1], axes[-1])
    blocks = []
    for label, metrics in _metric_groups(names):
        series = []
        for m in metrics:
            values = _display_values(m, surface.metrics[m])
            for idx in np.ndindex(*values.shape[:-1]):
                tag = ", ".join(f"{a}={params[a][i]:g}" for a, i in zip(others, idx, strict=True))
                name = ", ".join(part for part in (_split_of(m) or m, tag) if part)
                series.append({"label": name, "x": x, "y": values[idx]})
        blocks.append(lines_block(label, xlabel, label, series))
    return {"blocks": blocks}


@register_section("sharpness")
def sharpness_section(surface: _Surface) -> dict[str, Any]:
    """Sharpness (``landscape sharpness``): per measure, the loss increase of every cell
    (perturbation or batch) and its mean (count-weighted over a worst case's batches), as
    :func:`~landscape.plot.plot_sharpness` draws them."""
    labels, incs, counts, _ = _read_cells(surface.path)
    rows, series = [], []
    for label, inc, count in zip(labels, incs, counts, strict=True):
        ok = np.isfinite(inc)
        mean = float(np.sum(inc[ok] * count[ok]) / np.sum(count[ok])) if ok.any() else None
        cells = [np.min(inc[ok]), np.max(inc[ok])] if ok.any() else [None, None]
        rows.append([label, f"{int(ok.sum())} of {inc.size}", mean, *cells])
        series.append({"label": label, "x": np.arange(inc.size), "y": inc})
    blocks = [table_block("loss increase L(w + delta) - L(w)", ["measure", "cells done", "mean", "min", "max"], rows)]
    blocks.append(lines_block("loss increase per cell", "cell", "loss increase", series))
    return {"blocks": blocks}


def generic_section(surface: _Surface) -> dict[str, Any]:
    """Any kind without a builder: each metric of a 1-D grid as a line over its cells, of a
    small grid as a table, of a larger one as its range; the attributes below, as always."""
    blocks: list[dict[str, Any]] = []
    one_d = [m for m, v in surface.metrics.items() if v.ndim == 1 and v.size > 1]
    for label, metrics in _metric_groups(one_d):
        x = np.arange(surface.shape[0])
        series = [{"label": _metric_label(m), "x": x, "y": _display_values(m, surface.metrics[m])} for m in metrics]
        blocks.append(lines_block(label, "cell", label, series))
    summary = []
    for name, values in surface.metrics.items():
        if name in one_d:
            continue
        if values.size <= 64:
            grid = np.atleast_2d(values.reshape(values.shape[0], -1) if values.ndim else values)
            rows = [[str(i), *row] for i, row in enumerate(grid)]
            blocks.append(table_block(_metric_label(name), ["cell", *[str(j) for j in range(grid.shape[1])]], rows))
        else:
            finite = values[np.isfinite(values)]
            cells = [np.min(finite), np.max(finite), np.mean(finite)] if finite.size else ["—"] * 3
            summary.append([name, "x".join(map(str, values.shape)), int(finite.size), *cells])
    if summary:
        blocks.append(table_block("metrics", ["metric", "grid", "finite cells", "min", "max", "mean"], summary))
    return {"blocks": blocks}


def report_section(src: Source) -> dict[str, Any]:
    """The section of one result file: the builder registered for its kind, else
    :func:`generic_section`.

    Returns
    -------
    dict
        ``title``, ``file`` (the path as given), ``kind``, ``builder`` (the name it was built
        by, ``"generic"`` for the fallback), ``blocks`` and ``attrs`` (the file's attributes
        as JSON: its settings and provenance).
    """
    surface = _read(src)
    name = surface.kind if surface.kind in _SECTIONS else None
    section = (_SECTIONS[name] if name else generic_section)(surface)
    kind = surface.surface_type
    default = f"{os.path.basename(surface.path)} — {_SURFACE_NAMES.get(kind, kind)}"
    return {
        "title": section.get("title", default),
        "file": surface.path,
        "kind": surface.kind,
        "builder": name or "generic",
        "blocks": section["blocks"],
        "attrs": _jsonable(surface.attrs),
    }


# --------------------------------------------------------------------------- the page


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("report_assets", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _render_table(block: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in block["columns"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in block["rows"])
    return f"<table><caption>{html.escape(block['title'])}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_section(index: int, section: dict[str, Any]) -> str:
    parts = [
        f'<section class="section" id="s{index}" data-kind="{html.escape(section["kind"])}" '
        f'data-builder="{html.escape(section["builder"])}">',
        f"<h2>{html.escape(section['title'])}</h2>",
        f'<p class="file">{html.escape(section["file"])} · kind <code>{html.escape(section["kind"])}</code></p>',
    ]
    for k, block in enumerate(section["blocks"]):
        if block["type"] == "table":
            parts.append(f'<div class="block table">{_render_table(block)}</div>')
        else:
            parts.append(f'<div class="block {block["type"]}" data-section="{index}" data-block="{k}"></div>')
    if not section["blocks"]:
        parts.append('<p class="note">nothing computed yet</p>')
    attrs = html.escape(json.dumps(section["attrs"], indent=1, ensure_ascii=False))
    parts.append(f"<details><summary>settings and provenance (attributes)</summary><pre>{attrs}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


_FINGERPRINT = re.compile(r'<meta name="landscape-report-inputs" content="([0-9a-f]{64})">')


def _fingerprint(title: str, sections: Sequence[dict[str, Any]], script: str, style: str) -> str:
    """sha256 of what the page shows, the stamps of one execution aside (the attributes a
    resumed run may change, :data:`~landscape.io.RUN_ATTRS` and the kind's ``not_compared``,
    such as ``created``): equal for a rerun whose results did not change."""
    kinds = result_kinds()
    shown = []
    for s in sections:
        ignore = kinds[s["kind"]].ignore if s["kind"] in kinds else RUN_ATTRS
        attrs = {k: v for k, v in s["attrs"].items() if not any(fnmatch.fnmatchcase(k, p) for p in ignore)}
        shown.append({**s, "attrs": attrs})
    text = json.dumps([title, shown, script, style], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_report(paths: Sequence[Source], *, title: str = "landscape report") -> str:
    """The HTML page of the result files ``paths``: one section each, all script, style and
    data embedded, no network request (a Content-Security-Policy allows only the page's own
    script and style, by hash). The same files give the same page, byte for byte.

    Raises
    ------
    ValueError
        No file given.
    """
    if not paths:
        raise ValueError("render_report needs at least one result file; got none")
    sections = [report_section(p) for p in paths]
    script, style = _asset("report.js"), _asset("report.css")
    data = {"title": title, "sections": [{"blocks": s["blocks"]} for s in sections]}
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
    csp = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        "img-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    fingerprint = _fingerprint(title, sections, script, style)
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s["title"])}</a></li>' for i, s in enumerate(sections))
    body = "\n".join(_render_section(i, s) for i, s in enumerate(sections))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="generator" content="landscape report">\n'
        f'<meta name="landscape-report-inputs" content="{fingerprint}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style></head>\n"
        f"<body><header><h1>{html.escape(title)}</h1><nav><ol>{toc}</ol></nav>"
        '<p class="note" id="status">drawing…</p></header>\n'
        f"<main>\n{body}\n</main>\n"
        f'<script type="application/json" id="report-data">{payload}</script>\n'
        f"<script>{script}</script>\n</body></html>\n"
    )


def write_report(
    paths: Sequence[Source], out: str | os.PathLike[str], *, title: str = "landscape report", force: bool = False
) -> bool:
    """Write the page of :func:`render_report` to ``out``.

    An existing ``out`` that already holds the page of the same results is left as it is
    (nothing to redo: a rerun whose results did not change writes nothing, even when a
    resumed run restamped its files' ``created``); any other existing file is replaced only
    with ``force``.

    Returns
    -------
    bool
        Whether the file was written (False: it already held the page of these results).

    Raises
    ------
    FileExistsError
        ``out`` exists, holds something else, and ``force`` is False.
    """
    from ..io import atomic_write

    page = render_report(paths, title=title)
    out = os.fspath(out)
    if os.path.isfile(out):
        with open(out, encoding="utf-8", errors="replace") as f:
            old = _FINGERPRINT.search(f.read(4096))
        if old is not None and old.group(1) == _FINGERPRINT.search(page).group(1):
            return False

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(out, write, force=force)
    return True
