"""Tests of landscape.plot: what is drawn is what the result file holds."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from landscape import plot
from landscape.io import create_result, open_result

ROOT = Path(__file__).resolve().parents[1]
NX, NY = 9, 7
X = np.linspace(-1.0, 1.0, NX)
Y = np.linspace(-0.5, 1.0, NY)  # another extent than x: a swapped axis shows
MISSING = (2, 5)  # the cell (i, j) left NaN
ANCHORS = np.array([[0.0, 0.0], [0.5, 0.75]])
ANCHOR_NAMES = ["A", "B"]
TRAJECTORY = np.array([[0.9, 0.8], [0.6, 0.5], [0.3, 0.2], [0.1, 0.05], [0.0, 0.0]])
RATIO = np.array([0.723, 0.151])


def plane_values() -> dict[str, np.ndarray]:
    grid_x, grid_y = np.meshgrid(X, Y, indexing="ij")  # (NX, NY): cell (i, j) at (X[i], Y[j])
    loss = 0.1 + grid_x**2 + 2.0 * grid_y**2
    return {"train_loss": loss, "test_acc": 1.0 / (1.0 + loss)}


def make_plane(path: Path, *, surface_type: str = "random", trajectory: bool = False) -> Path:
    values = plane_values()
    arrays = {"x": X, "y": Y, "basis": np.zeros((2, 4)), "coefficients": np.zeros((NX * NY, 2)), "anchors": ANCHORS}
    attrs = {"surface-type": surface_type, "x-label": "δ", "y-label": "η", "anchor-names": ANCHOR_NAMES}
    if trajectory:
        arrays.update({"trajectory": TRAJECTORY, "explained-variance-ratio": RATIO})
        attrs.update({"x-label": "PC1", "y-label": "PC2"})
    flat = np.arange(NX * NY)
    flat = flat[flat != np.ravel_multi_index(MISSING, (NX, NY))]
    with create_result(path, kind="plane", shape=(NX, NY), metrics=list(values), attrs=attrs, arrays=arrays) as result:
        result.write_cells(flat, {name: v.ravel()[flat] for name, v in values.items()})
    return path


def file_metric(path: Path, name: str) -> np.ndarray:
    with open_result(path) as result:
        return result.read_metric(name)


@pytest.fixture
def plane(tmp_path):
    return make_plane(tmp_path / "plane.h5")


@pytest.fixture
def pca(tmp_path):
    return make_plane(tmp_path / "pca.h5", surface_type="pca", trajectory=True)


@pytest.fixture
def line(tmp_path):
    x = np.linspace(-0.25, 1.25, 13)
    loss = 0.2 + np.sin(np.pi * x) ** 2
    path = tmp_path / "line.h5"
    metrics = {"train_loss": loss, "test_loss": loss + 0.3, "train_acc": 1 / (1 + loss), "test_acc": 0.8 / (1 + loss)}
    with create_result(
        path,
        kind="line",
        shape=(13,),
        metrics=list(metrics),
        attrs={"surface-type": "interpolation", "x-label": "interpolation coefficient α"},
        arrays={"x": x, "basis": np.zeros((2, 4)), "coefficients": np.stack([1 - x, x], 1)},
    ) as result:
        done = np.arange(12)  # the last cell is not computed
        result.write_cells(done, {k: v[done] for k, v in metrics.items()})
    return path


def by_gid(ax, gid):
    found = [a for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist {gid!r}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- contour


def test_contour_extent_levels_and_anchors(plane):
    fig = plot.plot_contour(plane)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlim() == (X.min(), X.max())
    assert ax.get_ylim() == (Y.min(), Y.max())

    loss = file_metric(plane, "train_loss")
    contours = by_gid(ax, "contour")
    assert isinstance(contours, ContourSet)
    levels = np.asarray(contours.levels)
    assert len(levels) == 20
    assert np.nanmin(loss) < levels.min() and levels.max() < np.nanmax(loss)
    steps = np.diff(np.log(levels))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)  # log-spaced

    anchors = by_gid(ax, "anchors")
    np.testing.assert_array_equal(anchors.get_xdata(), ANCHORS[:, 0])
    np.testing.assert_array_equal(anchors.get_ydata(), ANCHORS[:, 1])
    names = {t.get_text(): t.xy for t in ax.texts if t.get_gid() == "anchor-name"}
    assert names == {"A": (0.0, 0.0), "B": (0.5, 0.75)}
    assert "train loss" in ax.get_title() and "random plane" in ax.get_title()
    assert "1 of 63 cells not computed" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "train loss"  # the colour bar
    shaded = by_gid(ax, "missing").get_array()  # the one missing cell is grey
    assert (~shaded.mask).sum() == 1 and not shaded.mask[MISSING[1], MISSING[0]]


def test_contour_linear_and_explicit_levels(plane):
    loss = file_metric(plane, "train_loss")
    levels = np.asarray(by_gid(plot.plot_contour(plane, log_levels=False, levels=6).axes[0], "contour").levels)
    assert len(levels) == 6
    assert np.nanmin(loss) < levels.min() and levels.max() < np.nanmax(loss)
    np.testing.assert_allclose(np.diff(levels), np.diff(levels)[0])
    fig = plot.plot_contour(plane, levels=[0.5, 1.0, 2.0], labels=False, mark=False)
    ax = fig.axes[0]
    assert list(by_gid(ax, "contour").levels) == [0.5, 1.0, 2.0]
    assert not [a for a in ax.get_lines() if a.get_gid() == "anchors"]


def test_accuracy_contour_is_linear_percent(plane):
    acc = 100 * file_metric(plane, "test_acc")
    levels = np.asarray(by_gid(plot.plot_contour(plane, "test_acc").axes[0], "contour").levels)
    assert np.nanmin(acc) < levels.min() and levels.max() < np.nanmax(acc)
    np.testing.assert_allclose(np.diff(levels), np.diff(levels)[0])  # accuracies: linear by default


def test_draws_into_given_axes_from_open_file(plane):
    fig = Figure()
    left, right = fig.subplots(1, 2)
    with open_result(plane) as result:
        assert plot.plot_contour(result, ax=right) is fig
        assert plot.plot_heatmap(result, ax=left) is fig
        assert not result.closed  # an open file stays the caller's
    assert right.get_xlim() == (X.min(), X.max())
    assert left.collections and left.collections[0].get_gid() == "heatmap"


# --------------------------------------------------------------------------- heatmap and 3-D


def test_heatmap_cells_are_the_file_values(plane):
    ax = plot.plot_heatmap(plane).axes[0]
    mesh = by_gid(ax, "heatmap")
    drawn = mesh.get_array()
    loss = file_metric(plane, "train_loss")
    assert drawn.shape == (NY, NX)  # rows are y, columns are x
    i, j = 1, 4  # X[1] = -0.75, Y[4] = 0.5
    assert drawn[j, i] == loss[i, j] == pytest.approx(0.1 + X[1] ** 2 + 2 * Y[4] ** 2)
    assert drawn.mask[MISSING[1], MISSING[0]] and drawn.mask.sum() == 1
    np.testing.assert_array_equal(drawn.filled(np.nan), loss.T)
    # the cell centres are the file's coordinates
    corners = np.asarray(mesh.get_coordinates())  # (NY + 1, NX + 1, 2) cell edges
    x_edges, y_edges = corners[0, :, 0], corners[:, 0, 1]
    np.testing.assert_allclose((x_edges[:-1] + x_edges[1:]) / 2, X)
    np.testing.assert_allclose((y_edges[:-1] + y_edges[1:]) / 2, Y)
    acc = by_gid(plot.plot_heatmap(plane, "test_acc", log=False).axes[0], "heatmap").get_array()
    np.testing.assert_allclose(acc.filled(np.nan), 100 * file_metric(plane, "test_acc").T)


def test_surface3d(plane):
    fig = plot.plot_surface3d(plane, log=True)
    ax = fig.axes[0]
    assert ax.name == "3d"
    assert by_gid(ax, "surface") is not None
    low, high = (
        np.log10(np.nanmin(file_metric(plane, "train_loss"))),
        np.log10(np.nanmax(file_metric(plane, "train_loss"))),
    )
    zlow, zhigh = ax.get_zlim()
    assert zlow <= low and high <= zhigh
    assert ax.get_xlim() == (X.min(), X.max())
    with pytest.raises(ValueError, match="3-D axes"):
        plot.plot_surface3d(plane, ax=Figure().add_subplot())


# --------------------------------------------------------------------------- line


def test_line_draws_the_file(line):
    fig = plot.plot_line(line)
    with open_result(line) as result:
        x = result.read_array("x")
        values = {m: result.read_metric(m) for m in result.metrics}
    lines = {a.get_gid(): a for ax in fig.axes for a in ax.get_lines()}
    np.testing.assert_array_equal(lines["train_loss"].get_xdata(), x)
    np.testing.assert_array_equal(lines["train_loss"].get_ydata(), values["train_loss"])  # NaN included
    np.testing.assert_allclose(lines["train_acc"].get_ydata(), 100 * values["train_acc"])
    np.testing.assert_allclose(lines["test_acc"].get_ydata(), 100 * values["test_acc"])
    assert lines["train_loss"].get_linestyle() == "-" and lines["test_loss"].get_linestyle() == "--"
    loss_ax, acc_ax = lines["train_loss"].axes, lines["train_acc"].axes
    assert loss_ax is not acc_ax and "accuracy (%)" in acc_ax.get_ylabel() and loss_ax.get_ylabel() == "loss"
    assert loss_ax.get_xlabel() == "interpolation coefficient α"
    anchors = sorted(a.get_xdata()[0] for a in loss_ax.get_lines() if a.get_gid() == "anchor")
    assert anchors == [0.0, 1.0]
    assert "linear interpolation" in loss_ax.get_title()
    assert plot.plot_line(line, metrics=["test_loss"], log_loss=True).axes[0].get_yscale() == "log"


def test_wrong_dimension_and_metric_are_clear_errors(plane, line):
    with pytest.raises(ValueError, match="needs a plane .* 'line' result"):
        plot.plot_contour(line)
    with pytest.raises(ValueError, match="needs a line"):
        plot.plot_line(plane)
    with pytest.raises(ValueError, match=r"has no metric 'test_loss'; it has \['train_loss', 'test_acc'\]"):
        plot.plot_heatmap(plane, "test_loss")


def test_signed_metric_gets_linear_levels(tmp_path):
    path = tmp_path / "eig.h5"
    values = -np.arange(NX * NY, dtype=float).reshape(NX, NY) / 10  # lambda_min <= 0
    with create_result(
        path, kind="plane", shape=(NX, NY), metrics=["lambda_min"], attrs={}, arrays={"x": X, "y": Y}
    ) as rf:
        rf.write_cells(np.arange(NX * NY), {"lambda_min": values.ravel()})
    levels = np.asarray(by_gid(plot.plot_contour(path, "lambda_min").axes[0], "contour").levels)
    np.testing.assert_allclose(np.diff(levels), np.diff(levels)[0])
    assert values.min() < levels.min() and levels.max() < values.max()
    with pytest.raises(ValueError, match="log_levels needs positive values but 'lambda_min' has minimum -6.2"):
        plot.plot_contour(path, "lambda_min", log_levels=True)
    with pytest.raises(ValueError, match="log needs positive values"):
        plot.export_vtp(path, tmp_path / "eig.vtp", "lambda_min", log=True)


# --------------------------------------------------------------------------- trajectory


def test_trajectory_is_the_file_array(pca, plane):
    ax = plot.plot_trajectory(pca).axes[0]
    path = by_gid(ax, "trajectory")
    np.testing.assert_array_equal(np.column_stack([path.get_xdata(), path.get_ydata()]), TRAJECTORY)
    assert ax.get_xlabel() == "PC1 (72.3%)" and ax.get_ylabel() == "PC2 (15.1%)"
    assert "PCA plane" in ax.get_title()
    # the contour figure of a PCA file shows the trajectory and the variance too
    contour_ax = plot.plot_contour(pca).axes[0]
    assert by_gid(contour_ax, "trajectory") is not None and "72.3%" in contour_ax.get_xlabel()
    with pytest.raises(ValueError, match="has no trajectory"):
        plot.plot_trajectory(plane)


# --------------------------------------------------------------------------- files


def test_plot_file_names_and_no_overwrite(pca, tmp_path):
    out = tmp_path / "figs"
    written = plot.plot_file(pca, out)
    expected = [
        f"pca-{figure}-{metric}.{fmt}"
        for metric in ("train_loss", "test_acc")
        for figure in ("contour", "heatmap", "surface3d")
        for fmt in ("png", "pdf")
    ] + ["pca-trajectory-train_loss.png", "pca-trajectory-train_loss.pdf"]
    assert [os.path.basename(p) for p in written] == expected
    assert sorted(os.listdir(out)) == sorted(expected)
    assert (out / "pca-contour-train_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pca-heatmap-test_acc.pdf").read_bytes()[:5] == b"%PDF-"

    before = (out / "pca-contour-train_loss.png").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"pca-contour-train_loss\.png' already exists; pass --force"):
        plot.plot_file(pca, out, metrics=["train_loss"], formats=("png",))
    assert (out / "pca-contour-train_loss.png").stat().st_mtime_ns == before
    again = plot.plot_file(pca, out, metrics=["train_loss"], formats=("png",), force=True)
    assert [os.path.basename(p) for p in again] == [
        "pca-contour-train_loss.png",
        "pca-heatmap-train_loss.png",
        "pca-surface3d-train_loss.png",
        "pca-trajectory-train_loss.png",
    ]


def test_plot_file_line(line, tmp_path):
    written = plot.plot_file(line, tmp_path, formats=("png",))
    assert [os.path.basename(p) for p in written] == ["line-line-loss.png"]


# --------------------------------------------------------------------------- curves

T = 11
T_VALUES = np.linspace(0.0, 1.0, T)
BARRIERS = {"barrier-curve-train": 0.0731, "barrier-line-train": 2.2468, "barrier-t-curve-train": 0.5}


def curve_values() -> dict[str, np.ndarray]:
    bump = np.sin(np.pi * T_VALUES) ** 2
    return {
        "train_loss": np.stack([0.01 + 0.07 * bump, 0.01 + 2.2 * bump]),
        "train_acc": np.stack([0.999 - 0.001 * bump, 0.999 - 0.8 * bump]),
        "test_loss": np.stack([0.3 + 0.1 * bump, 0.3 + 2.5 * bump]),
        "test_acc": np.stack([0.93 - 0.01 * bump, 0.93 - 0.85 * bump]),
    }


def make_curve(path: Path, *, kind: str = "bezier", bends: int = 1, partial: bool = False) -> Path:
    values = curve_values()
    attrs = {"surface-type": "curve", "curve-kind": kind, "n-bends": bends, "rows": ["curve", "line"], "x-label": "t"}
    if not partial:
        attrs.update(BARRIERS)
    flat = np.arange(2 * T)
    if partial:  # the run stopped: the end of both rows is missing, no barriers yet
        flat = np.r_[np.arange(7), T + np.arange(4)]
    with create_result(
        path, kind="curve", shape=(2, T), metrics=list(values), attrs=attrs, arrays={"t": T_VALUES}
    ) as result:
        result.write_cells(flat, {name: v.ravel()[flat] for name, v in values.items()})
    return path


@pytest.fixture
def curve(tmp_path):
    return make_curve(tmp_path / "curve.h5")


def lines_by_gid(fig) -> dict:
    return {a.get_gid(): a for ax in fig.axes for a in ax.get_lines()}


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_curve_profile_draws_the_file(curve):
    fig = plot.plot_curve_profile(curve)
    with open_result(curve) as result:
        t = result.read_array("t")
        loss, acc = result.read_metric("train_loss"), result.read_metric("test_acc")
        attrs = dict(result.attrs)
    lines = lines_by_gid(fig)
    for row, r in (("curve", 0), ("line", 1)):
        np.testing.assert_array_equal(lines[f"{row}-train_loss"].get_xdata(), t)
        np.testing.assert_array_equal(lines[f"{row}-train_loss"].get_ydata(), loss[r])
        np.testing.assert_array_equal(lines[f"{row}-test_error"].get_xdata(), t)
        np.testing.assert_allclose(lines[f"{row}-test_error"].get_ydata(), 100 * (1 - acc[r]))
    assert lines["curve-train_loss"].get_linestyle() == "-" and lines["line-train_loss"].get_linestyle() == "--"
    loss_ax, error_ax = lines["curve-train_loss"].axes, lines["curve-test_error"].axes
    assert loss_ax is not error_ax and len(fig.axes) == 2
    assert loss_ax.get_ylabel() == "train loss" and error_ax.get_ylabel() == "test error (%)"
    assert loss_ax.get_xlabel() == "t"
    # the barrier heights are the file's attributes, the names come from curve-kind and n-bends
    texts = legend_texts(loss_ax)
    assert f"Bezier curve, 1 bend (barrier {attrs['barrier-curve-train']:.3g} nats)" in texts
    assert f"line segment (barrier {attrs['barrier-line-train']:.3g} nats)" in texts
    assert "barrier 0.0731 nats" in texts[0] and "barrier 2.25 nats" in texts[1]
    assert legend_texts(error_ax)[:2] == ["Bezier curve, 1 bend", "line segment"]
    # the endpoints t = 0 and t = 1 are marked on both panels
    ends = lines["endpoints-train_loss"]
    np.testing.assert_array_equal(ends.get_xdata(), [0.0, 1.0])
    np.testing.assert_array_equal(ends.get_ydata(), loss[0, [0, -1]])
    np.testing.assert_allclose(lines["endpoints-test_error"].get_ydata(), 100 * (1 - acc[0, [0, -1]]))
    assert "not computed" not in fig.get_suptitle()


def test_curve_profile_partial_file_and_names(tmp_path):
    path = make_curve(tmp_path / "partial.h5", kind="polychain", bends=3, partial=True)
    fig = plot.plot_curve_profile(path)
    lines = lines_by_gid(fig)
    loss = file_metric(path, "train_loss")
    np.testing.assert_array_equal(lines["line-train_loss"].get_ydata(), loss[1])  # NaN gaps kept
    assert np.isnan(lines["line-train_loss"].get_ydata()[4:]).all()
    texts = legend_texts(lines["curve-train_loss"].axes)
    assert texts[:2] == ["polygonal chain, 3 bends", "line segment"]  # no barrier attrs yet
    assert "11 of 22 points not computed" in fig.get_suptitle()
    assert "polygonal chain, 3 bends" in fig.get_suptitle()


def test_curve_profile_axes_and_splits(curve, tmp_path):
    single = Figure().add_subplot()
    fig = plot.plot_curve_profile(curve, ax=single)
    assert fig is single.figure and len(fig.axes) == 1  # one axes: the loss panel only
    assert {a.get_gid() for a in single.get_lines()} == {"curve-train_loss", "line-train_loss", "endpoints-train_loss"}
    left, right = Figure().subplots(1, 2)
    plot.plot_curve_profile(curve, ax=[left, right], splits=["train", "test"])
    values = curve_values()
    drawn = {a.get_gid(): a.get_ydata() for a in right.get_lines()}
    np.testing.assert_allclose(drawn["line-train_error"], 100 * (1 - values["train_acc"][1]))
    np.testing.assert_allclose(drawn["curve-test_error"], 100 * (1 - values["test_acc"][0]))
    assert {a.get_gid() for a in left.get_lines()} >= {"curve-train_loss", "curve-test_loss", "line-test_loss"}
    with pytest.raises(ValueError, match="no loss or accuracy of split"):
        plot.plot_curve_profile(curve, splits=["valid"])
    with pytest.raises(ValueError, match="1 axes given for 2 panel"):
        plot.plot_curve_profile(curve, ax=[left])
    # a file with only the train split: its loss and its error
    only_train = tmp_path / "train.h5"
    with create_result(
        only_train, kind="curve", shape=(2, T), metrics=["train_loss", "train_acc"], attrs={}, arrays={"t": T_VALUES}
    ) as result:
        result.write_cells(np.arange(2 * T), {k: values[k].ravel() for k in ("train_loss", "train_acc")})
    assert set(lines_by_gid(plot.plot_curve_profile(only_train))) >= {"curve-train_loss", "line-train_error"}


def test_curve_profile_is_not_a_plane(curve, plane, tmp_path):
    with pytest.raises(ValueError, match="curve profile .* use plot_curve_profile"):
        plot.plot_contour(curve)
    with pytest.raises(ValueError, match="needs a curve profile"):
        plot.plot_curve_profile(plane)
    written = plot.plot_file(curve, tmp_path / "figs", formats=("png",))
    assert [os.path.basename(p) for p in written] == ["curve-profile.png"]
    again = plot.plot_file(curve, tmp_path / "figs", formats=("png",), metrics=["test_loss", "test_acc"], force=True)
    assert again == written
    assert Path(written[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def make_curve_plane(path: Path) -> Path:
    values = plane_values()
    arrays = {"x": X, "y": Y, "anchors": np.array([[0.0, 0.0], [0.5, 0.0], [0.25, 0.75]]), "trajectory": TRAJECTORY}
    attrs = {
        "surface-type": "curve-plane",
        "anchor-names": ["a.pt", "b.pt", "bend 1"],
        "trajectory-label": "Bezier curve (1 bend)",
        "curve-kind": "bezier",
        "n-bends": 1,
    }
    with create_result(path, kind="plane", shape=(NX, NY), metrics=list(values), attrs=attrs, arrays=arrays) as result:
        result.write_cells(np.arange(NX * NY), {name: v.ravel() for name, v in values.items()})
    return path


def test_curve_plane_draws_the_curve(tmp_path):
    path = make_curve_plane(tmp_path / "cplane.h5")
    with open_result(path) as result:
        trajectory, label = result.read_array("trajectory"), result.attrs["trajectory-label"]
    for fig in (plot.plot_trajectory(path), plot.plot_contour(path)):
        ax = fig.axes[0]
        drawn = by_gid(ax, "trajectory")
        np.testing.assert_array_equal(np.column_stack([drawn.get_xdata(), drawn.get_ydata()]), trajectory)
        assert drawn.get_label() == label == "Bezier curve (1 bend)"
        assert not [a for a in ax.get_lines() if a.get_gid() in ("trajectory-start", "trajectory-end")]
        assert "plane through a curve" in ax.get_title()
    ax = plot.plot_trajectory(path).axes[0]
    assert "curve over train loss" in ax.get_title()
    assert "Bezier curve (1 bend)" in legend_texts(ax)
    written = plot.plot_file(path, tmp_path / "figs", formats=("png",), metrics=["train_loss"])
    assert [os.path.basename(p) for p in written] == [
        "cplane-contour-train_loss.png",
        "cplane-heatmap-train_loss.png",
        "cplane-surface3d-train_loss.png",
        "cplane-curve-train_loss.png",
    ]


def test_planes_of_orthonormal_coordinates_have_equal_axis_scales(tmp_path):
    """A plane through a curve (or three checkpoints) has x and y in the same units: equal
    scales, so the curve's bend keeps its shape; other planes fill the axes."""
    path = make_curve_plane(tmp_path / "cplane.h5")
    for fig in (plot.plot_trajectory(path), plot.plot_contour(path), plot.plot_heatmap(path)):
        assert fig.axes[0].get_aspect() == 1.0
    assert plot.plot_contour(make_plane(tmp_path / "p.h5")).axes[0].get_aspect() == "auto"
    three = make_plane(tmp_path / "three.h5", surface_type="three-checkpoints")
    assert plot.plot_heatmap(three).axes[0].get_aspect() == 1.0


# --------------------------------------------------------------------------- VTK export


def decode_binary(element: ET.Element) -> np.ndarray:
    raw = base64.b64decode(element.text.strip())
    count = int(np.frombuffer(raw[:8], dtype="<u8")[0])
    assert count == len(raw) - 8
    return np.frombuffer(raw[8:], dtype="<f8")


def test_export_vtp(plane, tmp_path):
    out = plot.export_vtp(plane, tmp_path / "plane.vtp")
    root = ET.parse(out).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    piece = root.find("PolyData/Piece")
    loss = file_metric(plane, "train_loss")
    finite = np.isfinite(loss)
    quads = sum(finite[i : i + 2, j : j + 2].all() for i in range(NX - 1) for j in range(NY - 1))
    assert quads == (NX - 1) * (NY - 1) - 4  # an interior missing cell removes four quads
    assert int(piece.get("NumberOfPoints")) == NX * NY
    assert int(piece.get("NumberOfPolys")) == quads

    scalars = decode_binary(piece.find("PointData/DataArray[@Name='train_loss']"))
    np.testing.assert_array_equal(scalars, loss.ravel())  # NaN where not computed
    points = decode_binary(piece.find("Points/DataArray")).reshape(-1, 3)
    grid_x, grid_y = np.meshgrid(X, Y, indexing="ij")
    np.testing.assert_array_equal(points[:, 0], grid_x.ravel())
    np.testing.assert_array_equal(points[:, 1], grid_y.ravel())
    np.testing.assert_array_equal(points[finite.ravel(), 2], loss[finite])
    assert np.isfinite(points).all()

    connectivity = np.array(piece.find("Polys/DataArray[@Name='connectivity']").text.split(), dtype=int)
    offsets = np.array(piece.find("Polys/DataArray[@Name='offsets']").text.split(), dtype=int)
    assert connectivity.size == 4 * quads and offsets.tolist() == list(range(4, 4 * quads + 1, 4))
    assert np.ravel_multi_index(MISSING, (NX, NY)) not in connectivity

    log_root = ET.parse(plot.export_vtp(plane, tmp_path / "log.vtp", log=True, zmax=0.0)).getroot()
    log_points = decode_binary(log_root.find("PolyData/Piece/Points/DataArray")).reshape(-1, 3)
    expected = np.minimum(np.log10(loss[finite]), 0.0)
    np.testing.assert_allclose(log_points[finite.ravel(), 2], expected)


def test_export_vtp_refuses_lines_and_overwrite(plane, line, tmp_path):
    with pytest.raises(ValueError, match="export_vtp needs a plane"):
        plot.export_vtp(line, tmp_path / "line.vtp")
    target = tmp_path / "plane.vtp"
    target.write_text("keep")
    with pytest.raises(FileExistsError, match="--force"):
        plot.export_vtp(plane, target)
    assert target.read_text() == "keep"
    plot.export_vtp(plane, target, force=True)
    assert target.read_text().startswith("<?xml")


# --------------------------------------------------------------------------- import


def test_import_sets_no_backend_and_no_pyplot(plane):
    code = (
        "import sys, matplotlib\n"
        "before = matplotlib.get_backend()\n"
        "import landscape, landscape.plot\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported by import'\n"
        f"landscape.plot.plot_contour({str(plane)!r}).savefig({str(plane)!r} + '.png')\n"
        f"landscape.plot.plot_surface3d({str(plane)!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported by plotting'\n"
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())\n"
        "print('ok', before)\n"
    )
    env = dict(os.environ, MPLBACKEND="agg", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "agg"]
