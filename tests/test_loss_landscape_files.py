"""Surface files of loss-landscape (tomgoldstein/loss-landscape) in and out (issue 19 item 3).

The oracle for the files is what loss-landscape's scripts do, written down here in words and
re-enacted with numpy (no code of theirs):

* ``plot_surface.py`` (``setup_surface_file``, ``crunch``): ``xcoordinates`` (nx,) and, for a
  plane, ``ycoordinates`` (ny,); each metric starts as ``-np.ones((nx, ny))`` ((nx,) for a line)
  and the value of cell ``ind`` is written to ``values.ravel()[ind]``, where ``ind`` runs over
  ``np.meshgrid(x, y)`` flattened (``scheduler.get_unplotted_indices``: the cells whose value is
  ``<= 0`` are the ones still to compute). Accuracies are ``100 * correct / total``.
* ``plot_2D.py`` (``plot_2d_contour``): ``X, Y = np.meshgrid(x, y)`` and ``Z = f[surf_name][:]``
  are handed together to ``contour``, ``contourf`` and ``plot_surface``; so ``Z`` must have
  ``X``'s shape, (ny, nx), with ``Z[j, i]`` the value at ``(x[i], y[j])``.
* ``plot_1D.py`` (``plot_1d_loss_err``): ``x = f['xcoordinates']``, asserts ``train_loss``,
  reads ``train_loss`` and ``train_acc`` (percent: its axis runs 0 to 100, error ``100 - acc``)
  and, when ``test_loss`` is there, ``test_loss`` and ``test_acc``.
* ``h52vtp.py`` (``h5_to_vtp``): ``meshgrid(x, y)`` raveled beside ``f[surf_name][:].ravel()``
  (point ``k`` at ``(X.ravel()[k], Y.ravel()[k])``), a square grid (``int(sqrt(points))``), and
  with ``--log`` the heights ``ln(value + 0.1)``.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

import landscape as ls
from landscape import io as lio
from landscape import io_ll, plot
from landscape.cli import main

NX, NY = 4, 3  # not square: a transposed read would put values at the wrong cells
X = np.array([-1.0, -0.5, 0.0, 0.5])
Y = np.array([10.0, 20.0, 30.0])


def loss_at(x, y):
    """A loss that names its cell: 1000 x + y is different at every (x, y) of the grid."""
    return 2000.0 + 1000.0 * x + y


def acc_at(x, y):
    """Accuracy in percent, different at every cell."""
    return 50.0 + 40.0 * x + y / 10.0


def write_ll_plane(path, x=X, y=Y, missing=(), transposed=False, metrics=None, dir_file=None, extra=None):
    """A surface file as plot_surface.py's crunch fills it: -1 everywhere, then each cell of the
    flattened meshgrid(x, y) written at values.ravel()[ind]; ``missing`` lists the indices left."""
    metrics = metrics or {"train_loss": loss_at, "train_acc": acc_at}
    mesh_x, mesh_y = np.meshgrid(x, y)
    with h5py.File(path, "w") as f:
        if dir_file is not None:
            f["dir_file"] = dir_file
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        for name, fn in metrics.items():
            values = -np.ones((len(x), len(y)))
            for ind in range(values.size):
                if ind not in missing:
                    values.ravel()[ind] = fn(mesh_x.ravel()[ind], mesh_y.ravel()[ind])
            f[name] = values.reshape(len(y), len(x)) if transposed else values
        for name, value in (extra or {}).items():
            f[name] = value
    return path


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("transposed", [False, True], ids=["(nx, ny) as plot_surface.py", "(ny, nx)"])
def test_import_puts_each_value_at_its_own_coordinates_on_a_grid_that_is_not_square(tmp_path, transposed):
    mesh_x, mesh_y = np.meshgrid(X, Y)
    missing = {1, 7}  # flat meshgrid indices: (x[1], y[0]) and (x[3], y[1])
    src = write_ll_plane(tmp_path / "surf.h5", missing=missing, transposed=transposed, dir_file="dirs.h5")
    out, read = io_ll.import_loss_landscape(src, tmp_path / "ours.h5")
    assert read.shape == (NX, NY) and read.dir_file == "dirs.h5"
    with lio.open_result(out) as rf:
        assert rf.kind == "loss-landscape" and rf.shape == (NX, NY)
        assert rf.metrics == ["train_loss", "train_acc"]
        np.testing.assert_array_equal(rf.read_array("x"), X)
        np.testing.assert_array_equal(rf.read_array("y"), Y)
        loss, acc, done = rf.read_metric("train_loss"), rf.read_metric("train_acc"), rf.done.astype(bool)
        assert rf.attrs["source"] == str(src) and rf.attrs["source-sha256"] == sha256(src)
        assert rf.attrs["dir-file"] == "dirs.h5" and rf.attrs["dir-file-found"] is None
    missing_cells = {(list(X).index(mesh_x.ravel()[k]), list(Y).index(mesh_y.ravel()[k])) for k in missing}
    assert missing_cells == {(1, 0), (3, 1)}
    for i in range(NX):
        for j in range(NY):
            if (i, j) in missing_cells:
                assert not done[i, j] and np.isnan(loss[i, j]) and np.isnan(acc[i, j])
            else:
                assert done[i, j]
                assert loss[i, j] == loss_at(X[i], Y[j])
                assert acc[i, j] == pytest.approx(acc_at(X[i], Y[j]) / 100.0, rel=1e-15)
    assert lio.check_kind(out).name == "loss-landscape"


def test_a_square_grid_is_the_transpose_of_what_the_dataset_shows(tmp_path):
    y = np.array([5.0, 6.0, 7.0, 8.0])
    src = write_ll_plane(tmp_path / "sq.h5", y=y)
    with h5py.File(src, "r") as f:
        stored = f["train_loss"][()]
    surface = io_ll.read_loss_landscape(src)
    np.testing.assert_array_equal(surface.metrics["train_loss"], stored.T)
    assert surface.metrics["train_loss"][1, 3] == loss_at(X[1], y[3]) != stored[1, 3]


def test_a_line_has_xcoordinates_only(tmp_path):
    x = np.linspace(-1, 1, 5)
    with h5py.File(tmp_path / "line.h5", "w") as f:
        f["xcoordinates"] = x
        f["train_loss"] = np.where(np.arange(5) == 2, -1.0, 1.0 + x)
        f["train_acc"] = np.where(np.arange(5) == 2, -1.0, 80.0 + x)
    out, _ = io_ll.import_loss_landscape(tmp_path / "line.h5", tmp_path / "ours.h5")
    with lio.open_result(out) as rf:
        assert rf.shape == (5,) and "y" not in rf.array_names()
        assert rf.done.tolist() == [1, 1, 0, 1, 1]
        np.testing.assert_allclose(rf.read_metric("train_acc")[[0, 4]], (80.0 + x[[0, 4]]) / 100, rtol=1e-15)
    assert "surface1d" not in "".join(plot.plot_file(out, tmp_path / "figs", formats=("png",)))
    assert (tmp_path / "figs" / "ours-line-loss.png").exists()


def test_other_datasets_are_left_out_by_name_and_partial_cells_counted(tmp_path):
    metrics = {"train_loss": loss_at, "train_acc": acc_at, "test_loss": loss_at, "test_acc": acc_at}
    src = write_ll_plane(tmp_path / "s.h5", metrics=metrics, extra={"max_eig": -np.ones((NX, NY)), "note": 3.0})
    with h5py.File(src, "a") as f:  # the test split computed at one cell less
        f["test_loss"][0, 0] = -1.0
        f["test_acc"][0, 0] = -1.0
    surface = io_ll.read_loss_landscape(src)
    assert list(surface.metrics) == ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert set(surface.left_out) == {"max_eig", "note"}
    assert surface.partial == 1 and not surface.done[0, 0] and surface.done.sum() == NX * NY - 1
    with h5py.File(src, "a") as f:  # a split never computed is left out, not a reason to drop every cell
        f["test_loss"][...] = -1.0
        f["test_acc"][...] = -1.0
    surface = io_ll.read_loss_landscape(src)
    assert list(surface.metrics) == ["train_loss", "train_acc"] and surface.done.all()
    assert surface.left_out["test_loss"].startswith("never computed")


def test_a_pca_directions_file_beside_it_labels_the_axes(tmp_path):
    with h5py.File(tmp_path / "dirs.h5", "w") as f:
        f["explained_variance_ratio_"] = np.array([0.7, 0.2])
    src = write_ll_plane(tmp_path / "s.h5", dir_file="/elsewhere/dirs.h5")  # moved: found beside the file
    out, _ = io_ll.import_loss_landscape(src, tmp_path / "ours.h5")
    with lio.open_result(out) as rf:
        np.testing.assert_array_equal(rf.read_array("explained-variance-ratio"), [0.7, 0.2])
        assert rf.attrs["dir-file-sha256"] == sha256(tmp_path / "dirs.h5")
    fig = plot.plot_contour(out, "train_loss")
    assert "(70.0%)" in fig.axes[0].get_xlabel() and "(20.0%)" in fig.axes[0].get_ylabel()


def test_info_plot_and_export_read_an_imported_file(tmp_path, capsys):
    src = write_ll_plane(tmp_path / "surf.h5", missing={5})
    assert main(["import-ll", str(src), "--out", str(tmp_path / "ours.h5")]) == 0
    said = capsys.readouterr().out
    assert "grid 4 x 3" in said and f"{NX * NY - 1} of {NX * NY} cells computed" in said
    assert main(["info", str(tmp_path / "ours.h5")]) == 0
    info = capsys.readouterr().out
    assert "kind 'loss-landscape'" in info and f"{NX * NY - 1}/{NX * NY} done" in info
    assert main(["plot", str(tmp_path / "ours.h5"), "--out", str(tmp_path / "figs"), "--format", "png"]) == 0
    assert (tmp_path / "figs" / "ours-contour-train_loss.png").exists()
    assert main(["export", str(tmp_path / "ours.h5"), "--vtp", str(tmp_path / "o.vtp")]) == 0
    assert main(["import-ll", str(src), "--out", str(tmp_path / "ours.h5")]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err


def test_public_names():
    assert set(io_ll.__all__) >= {"import_loss_landscape", "read_loss_landscape"}
    assert ls.io.result_kind("loss-landscape").writer == "landscape.io_ll.import_loss_landscape"
