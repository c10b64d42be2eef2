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

import base64
import hashlib
import xml.etree.ElementTree as ET

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


# --------------------------------------------------------------------------- export


def our_plane(path, x=X, y=Y, missing=(), nan=()):
    """A landscape plane with loss_at/acc_at (fractions) at [i, j]; cells in ``missing`` not
    done, cells in ``nan`` done with a NaN loss (a diverged point)."""
    mesh_x, mesh_y = np.meshgrid(x, y, indexing="ij")
    loss, acc = loss_at(mesh_x, mesh_y), acc_at(mesh_x, mesh_y) / 100.0
    for cell in nan:
        loss[cell] = np.nan
    keep = [k for k in range(loss.size) if np.unravel_index(k, loss.shape) not in set(missing)]
    attrs = {"surface-type": "random"}
    arrays = {"x": x, "y": y}
    with lio.create_result(path, kind="plane", shape=loss.shape, metrics=["train_loss", "train_acc"],
                           attrs=attrs, arrays=arrays) as rf:  # fmt: skip
        rf.write_cells(keep, {"train_loss": loss.ravel()[keep], "train_acc": acc.ravel()[keep]})
    return path


def test_the_exported_file_holds_what_plot_2d_and_h52vtp_read(tmp_path):
    src = our_plane(tmp_path / "ours.h5", missing={(2, 1)})
    io_ll.export_loss_landscape(src, tmp_path / "ll.h5")
    with h5py.File(tmp_path / "ll.h5", "r") as f:
        assert sorted(f.keys()) == ["train_acc", "train_loss", "xcoordinates", "ycoordinates"]
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        loss, acc = f["train_loss"][()], f["train_acc"][()]
        assert f.attrs["landscape-source-sha256"] == sha256(src)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
    # plot_2D.py: Z goes with meshgrid(x, y), so it has its shape and Z[j, i] is at (x[i], y[j])
    mesh_x, mesh_y = np.meshgrid(x, y)
    assert loss.shape == acc.shape == mesh_x.shape == (NY, NX)
    for j in range(NY):
        for i in range(NX):
            if (i, j) == (2, 1):
                assert loss[j, i] == acc[j, i] == -1.0  # not computed, as crunch leaves it
            else:
                assert loss[j, i] == loss_at(x[i], y[j])
                assert acc[j, i] == pytest.approx(acc_at(x[i], y[j]), rel=1e-14)  # percent
    # h52vtp.py (and crunch's ravel): flat point k is at (X.ravel()[k], Y.ravel()[k])
    flat = loss.ravel()
    computed = flat != -1
    np.testing.assert_array_equal(flat[computed], loss_at(mesh_x.ravel(), mesh_y.ravel())[computed])
    # plot_surface.py's scheduler would compute exactly the missing cell
    assert np.flatnonzero(flat <= 0).tolist() == [1 * NX + 2]


def test_the_exported_line_holds_what_plot_1d_reads(tmp_path):
    x = np.linspace(0, 1, 5)
    with lio.create_result(tmp_path / "line.h5", kind="line", shape=(5,), attrs={}, arrays={"x": x},
                           metrics=["train_loss", "train_acc", "test_loss", "test_acc"]) as rf:  # fmt: skip
        rf.write_cells(range(4), {"train_loss": x[:4], "train_acc": x[:4], "test_loss": 2 * x[:4], "test_acc": x[:4]})
    io_ll.export_loss_landscape(tmp_path / "line.h5", tmp_path / "ll.h5")
    with h5py.File(tmp_path / "ll.h5", "r") as f:
        assert sorted(f.keys()) == ["test_acc", "test_loss", "train_acc", "train_loss", "xcoordinates"]
        assert all(f[k].shape == (5,) for k in f)
        np.testing.assert_array_equal(f["test_loss"][()], [*(2 * x[:4]), -1.0])
        np.testing.assert_allclose(f["train_acc"][()], [*(100 * x[:4]), -1.0])


def test_ours_to_loss_landscape_and_back_is_equal(tmp_path):
    with pytest.warns(ls.NonFiniteWarning, match="ours.h5"):  # a computed NaN, on purpose
        src = our_plane(tmp_path / "ours.h5", missing={(0, 2), (3, 0)}, nan={(1, 1)})
    io_ll.export_loss_landscape(src, tmp_path / "ll.h5")
    with pytest.warns(ls.NonFiniteWarning, match=r"'\S*back.h5': .*train_loss in 1 of 10 cells"):
        back, _ = io_ll.import_loss_landscape(tmp_path / "ll.h5", tmp_path / "back.h5")
    with lio.open_result(src) as a, lio.open_result(back) as b:
        assert a.shape == b.shape and a.metrics == b.metrics
        np.testing.assert_array_equal(a.done, b.done)
        for name in ("x", "y"):
            np.testing.assert_array_equal(a.read_array(name), b.read_array(name))
        np.testing.assert_array_equal(a.read_metric("train_loss"), b.read_metric("train_loss"))  # NaN at (1, 1)
        np.testing.assert_allclose(a.read_metric("train_acc"), b.read_metric("train_acc"), rtol=1e-15)
        assert b.done[1, 1] and np.isnan(b.read_metric("train_loss")[1, 1])


def test_export_ll_through_the_command_line_and_what_it_refuses(tmp_path, capsys):
    src = our_plane(tmp_path / "ours.h5")
    assert main(["export", str(src), "--ll", str(tmp_path / "ll.h5")]) == 0
    assert io_ll.read_loss_landscape(tmp_path / "ll.h5").done.all()
    with lio.create_result(tmp_path / "eval.h5", kind="eval", shape=(2,), metrics=["loss"], attrs={}) as rf:
        rf.write_cells([0, 1], {"loss": [1.0, 2.0]})
    cases = [
        (
            ["export", str(tmp_path / "eval.h5"), "--ll", str(tmp_path / "x.h5")],
            "needs a line or plane with array(s) 'x'",
        ),
        (["export", str(src), "--ll", str(tmp_path / "ll.h5")], "already exists"),
        (["export", str(src), "--ll", str(src), "--force"], "is the input file"),
        (["export", str(src)], "export needs --vtp OUT.vtp or --ll OUT.h5"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------- bad input


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("landscape: error: ") and "Traceback" not in err[0], err
    return err[0]


def test_import_refuses_what_is_not_a_loss_landscape_surface_in_one_line(tmp_path, capsys):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["weights"] = np.zeros(3)
    with h5py.File(tmp_path / "nocoords.h5", "w") as f:
        f["train_loss"] = -np.ones((3, 3))
    write_ll_plane(tmp_path / "badshape.h5")
    with h5py.File(tmp_path / "badshape.h5", "a") as f:
        del f["train_acc"]
        f["train_acc"] = np.zeros((NX, NX))
    write_ll_plane(tmp_path / "noy.h5")
    with h5py.File(tmp_path / "noy.h5", "a") as f:
        del f["ycoordinates"]
    (tmp_path / "notes.txt").write_text("hello")
    ours = our_plane(tmp_path / "ours.h5")
    cases = {
        "other.h5": ["is neither a landscape result file nor a loss-landscape surface file", "weights"],
        "nocoords.h5": ["has no dataset 'xcoordinates'", "train_loss"],
        "badshape.h5": ["'train_acc' has shape (4, 4) but xcoordinates (4) and ycoordinates (3) make a 4 x 3 grid"],
        "noy.h5": ["'train_acc' has shape (4, 3) but the file has no 'ycoordinates'"],
        "notes.txt": [
            "'",
            "notes.txt' is truncated or not an HDF5 file (no HDF5 signature); expected a surface file written by loss-landscape",
        ],
        "ours.h5": ["ours.h5' is already a landscape result file (kind 'plane')"],
        "nosuch.h5": ["nosuch.h5' does not exist"],
    }
    for name, fragments in cases.items():
        line = _one_line_error(["import-ll", str(tmp_path / name), "--out", str(tmp_path / "out.h5")], capsys)
        assert all(f in line for f in fragments), line
        with pytest.raises((lio.ResultFileError, FileNotFoundError)):
            io_ll.read_loss_landscape(tmp_path / name)
    assert not (tmp_path / "out.h5").exists()
    line = _one_line_error(["import-ll", str(ours), "--out", str(ours), "--force"], capsys)
    assert "is the input file" in line or "already a landscape result file" in line


# --------------------------------------------------------------------------- VTP log transforms


def heights_and_arrays(path):
    root = ET.parse(path).getroot()
    piece = root.find("PolyData/Piece")

    def decode(element):
        raw = base64.b64decode(element.text.strip())
        return np.frombuffer(raw[8:], dtype="<f8")

    points = decode(piece.find("Points/DataArray")).reshape(-1, 3)
    arrays = {a.get("Name"): decode(a) for a in piece.findall("PointData/DataArray")}
    return points[:, 2], arrays


def test_vtp_log_names_its_transform_and_ln_plus_0_1_is_loss_landscapes(tmp_path):
    src = our_plane(tmp_path / "ours.h5", missing={(1, 2)})
    with lio.open_result(src) as rf:
        loss = rf.read_metric("train_loss").ravel()
    done = ~np.isnan(loss)
    out = plot.export_vtp(src, tmp_path / "ln.vtp", log="ln+0.1")
    z, arrays = heights_and_arrays(out)
    expected = np.array([np.log(v + 0.1) for v in loss[done]])  # h52vtp.py --log
    np.testing.assert_allclose(z[done], expected, rtol=1e-15)
    np.testing.assert_array_equal(arrays["ln(train_loss + 0.1)"][done], z[done])
    assert np.isnan(arrays["ln(train_loss + 0.1)"][~done]).all()
    assert "heights (z): ln(train_loss + 0.1)" in open(out).read()

    z10, arrays10 = heights_and_arrays(plot.export_vtp(src, tmp_path / "l10.vtp", log=True))  # unchanged default
    np.testing.assert_allclose(z10[done], np.log10(loss[done]), rtol=1e-15)
    assert "log10(train_loss)" in arrays10
    z_plain, arrays_plain = heights_and_arrays(plot.export_vtp(src, tmp_path / "plain.vtp"))
    np.testing.assert_array_equal(z_plain[done], loss[done])
    assert list(arrays_plain) == ["train_loss"]

    capped, _ = heights_and_arrays(plot.export_vtp(src, tmp_path / "cap.vtp", log="ln+0.1", zmax=7.6))
    np.testing.assert_allclose(capped[done], np.minimum(expected, 7.6), rtol=1e-15)
    with pytest.raises(ValueError, match="is not a height transform"):
        plot.export_vtp(src, tmp_path / "bad.vtp", log="ln")


def test_vtp_log_in_the_command_line(tmp_path, capsys):
    src = our_plane(tmp_path / "ours.h5")
    assert main(["export", str(src), "--vtp", str(tmp_path / "a.vtp"), "--log", "ln+0.1"]) == 0
    assert "ln(train_loss + 0.1)" in heights_and_arrays(tmp_path / "a.vtp")[1]
    assert main(["export", str(src), "--vtp", str(tmp_path / "b.vtp"), "--log"]) == 0
    assert "log10(train_loss)" in heights_and_arrays(tmp_path / "b.vtp")[1]
    assert main(["export", "--help"]) == 0
    helptext = " ".join(capsys.readouterr().out.split())
    assert "log10 (ours" in helptext and "ln(value + 0.1) as loss-landscape's h52vtp.py --log" in helptext
    assert main(["export", str(src), "--vtp", str(tmp_path / "c.vtp"), "--log", "ln"]) == 2
    assert "invalid choice: 'ln'" in capsys.readouterr().err


def test_values_between_minus_0_1_and_0_take_ln_plus_0_1_but_not_log10(tmp_path):
    path = tmp_path / "p.h5"
    values = np.array([[-0.05, 0.0], [0.5, 2.0]])
    with lio.create_result(path, kind="plane", shape=(2, 2), metrics=["m"], attrs={},
                           arrays={"x": np.arange(2.0), "y": np.arange(2.0)}) as rf:  # fmt: skip
        rf.write_cells(range(4), {"m": values.ravel()})
    z, _ = heights_and_arrays(plot.export_vtp(path, tmp_path / "m.vtp", "m", log="ln+0.1"))
    np.testing.assert_allclose(z, np.log(values.ravel() + 0.1), rtol=1e-15)
    with pytest.raises(ValueError, match="log needs positive values but 'm' has minimum -0.05"):
        plot.export_vtp(path, tmp_path / "n.vtp", "m", log="log10")


def test_public_names():
    assert set(io_ll.__all__) >= {"import_loss_landscape", "export_loss_landscape", "read_loss_landscape"}
    assert ls.io.result_kind("loss-landscape").writer == "landscape.io_ll.import_loss_landscape"
