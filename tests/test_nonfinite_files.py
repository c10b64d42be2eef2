"""Non-finite and missing values in result files: plots, warnings, summaries, ``landscape info``
and the resume comparison tell them apart (issue 17)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from landscape import io as lio

ATTRS = {"seed": 0}

# files written with NaN on purpose warn when they close; the tests that check it catch it
pytestmark = pytest.mark.filterwarnings("ignore::landscape.metrics.NonFiniteWarning")


# --------------------------------------------------------------------------- resume message


def test_resume_names_what_differs_in_an_array(tmp_path):
    path = tmp_path / "plane.h5"
    coefficients = np.random.default_rng(0).normal(size=(625, 3))
    with lio.create_result(path, kind="x", shape=(625,), metrics=["loss"], attrs=ATTRS, arrays={"c": coefficients}):
        pass
    other = coefficients.copy()
    other[7, 2] += 3e-16  # the last digits, as another thread count gives
    other[400, 0] *= 1.0 + 2e-15
    with pytest.raises(lio.ResultFileError) as err:
        lio.open_or_create(
            path, kind="x", shape=(625,), metrics=["loss"], attrs=ATTRS, arrays={"c": other}, resume=True
        )
    message = str(err.value)
    assert "\n" not in message
    assert "2 of 1875 entries" in message
    largest = float(re.search(r"largest absolute difference ([0-9.e+-]+)", message).group(1))
    expected = np.abs(other - coefficients).max()
    assert largest == pytest.approx(expected, rel=1e-2)
    relative = float(re.search(r"largest relative ([0-9.e+-]+)", message).group(1))
    expected_rel = (np.abs(other - coefficients) / np.maximum(np.abs(other), np.abs(coefficients))).max()
    assert relative == pytest.approx(expected_rel, rel=1e-2)
    assert "first at index (7, 2)" in message
    assert repr(float(coefficients[7, 2])) in message and repr(float(other[7, 2])) in message


def test_resume_names_a_shape_change_and_nan(tmp_path):
    path = tmp_path / "line.h5"
    x = np.linspace(0.0, 1.0, 5)
    with lio.create_result(path, kind="x", shape=(5,), metrics=["loss"], attrs=ATTRS, arrays={"x": x}):
        pass
    with pytest.raises(lio.ResultFileError, match=r"file has float64\[5\], this run float64\[4\]"):
        lio.open_or_create(path, kind="x", shape=(5,), metrics=["loss"], attrs=ATTRS, arrays={"x": x[:4]}, resume=True)
    nan = x.copy()
    nan[3] = np.nan
    with pytest.raises(
        lio.ResultFileError, match=r"1 of 5 entries .* 1 NaN or Inf in one of them only; first at index 3"
    ):
        lio.open_or_create(path, kind="x", shape=(5,), metrics=["loss"], attrs=ATTRS, arrays={"x": nan}, resume=True)


# --------------------------------------------------------------------------- landscape info


def _interrupted_connect(path, monkeypatch, methods=("linear", "arc", "ot")):
    """A ``connect`` report killed while its second method runs (the file keeps the first)."""
    import sys

    import torch

    import landscape as ls
    from landscape.connect import compare_connections

    engine = sys.modules["landscape.evaluate"]
    real, calls = engine.evaluate, []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # endpoints, linear, then the kill during arc
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [8]})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
    data = {"test": ls.load_data("digits", "test", max_samples=64)}
    with pytest.raises(KeyboardInterrupt):
        compare_connections(model, A, B, data, methods=list(methods), points=3, out=path)
    monkeypatch.setattr(engine, "evaluate", real)
    return model, A, B, data


def test_info_counts_the_methods_of_an_interrupted_connect_run(tmp_path, monkeypatch, capsys):
    from landscape.cli import main

    path = tmp_path / "connect.h5"
    _interrupted_connect(path, monkeypatch)
    with lio.open_result(path) as rf:
        assert rf.done.all()  # every cell of the file is done: the cells alone say 100%
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "100.0%" not in text
    assert "methods: 1/3 done (33.3%), 2 pending (arc, ot)" in text
    assert "--resume" in text


def test_info_of_a_finished_connect_run_and_of_cells(tmp_path, monkeypatch):
    model, A, B, data = _interrupted_connect(tmp_path / "c.h5", monkeypatch, methods=("linear", "arc"))
    from landscape.connect import compare_connections

    compare_connections(model, A, B, data, methods=["linear", "arc"], points=3, out=tmp_path / "c.h5", resume=True)
    assert "methods: 2/2 done (100.0%)" in lio.describe(tmp_path / "c.h5")
    path = tmp_path / "plane.h5"
    with lio.create_result(path, kind="plane", shape=(3, 4), metrics=["loss"], attrs=ATTRS) as rf:
        rf.write_cells([0, 5, 6], {"loss": [1.0, np.nan, np.inf]})
        rf.add_metrics(["lambda_max"])
        rf.set_metric_cells("lambda_max", [0, 1], [2.0, np.inf])
    text = lio.describe(path)
    assert "cells: 3/12 done (25.0%), 9 pending" in text
    assert re.search(r"loss\s+min 1 at \(0, 0\), max 1 at \(0, 0\), 2 computed cells not finite \(NaN/Inf\)", text)
    assert re.search(r"lambda_max\s+2/12 cells written \(added later\), min 2 .*, 1 computed cells not finite", text)


# --------------------------------------------------------------------------- plots


def _plane_with_nan(path, nx=7, ny=6, missing=(40, 41), nonfinite=(3, 10, 17)):
    """A plane whose cells ``missing`` are not computed and ``nonfinite`` computed as NaN/Inf."""
    x, y = np.linspace(-1, 1, nx), np.linspace(-1, 1, ny)
    loss = (0.1 + x[:, None] ** 2 + y[None, :] ** 2).ravel()
    loss[list(nonfinite)] = [np.nan, np.inf, np.nan][: len(nonfinite)]
    cells = np.array([c for c in range(nx * ny) if c not in missing])
    arrays = {"x": x, "y": y}
    with lio.create_result(path, kind="plane", shape=(nx, ny), metrics=["train_loss"], attrs=ATTRS, arrays=arrays) as f:
        f.write_cells(cells, {"train_loss": loss[cells]})
    return path


def _gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def test_plane_figures_tell_missing_from_nonfinite(tmp_path):
    from landscape import plot

    path = _plane_with_nan(tmp_path / "p.h5")
    for draw in (plot.plot_heatmap, plot.plot_contour, plot.plot_surface3d):
        ax = draw(path, "train_loss").axes[0]
        title = ax.get_title()
        assert "2 of 42 cells not computed" in title, (draw.__name__, title)
        assert "3 computed cells not finite (NaN/Inf)" in title, (draw.__name__, title)
        assert "5 of 42" not in title
    for draw in (plot.plot_heatmap, plot.plot_contour):
        ax = draw(path, "train_loss").axes[0]
        (cells,) = _gid(ax, "nonfinite")  # drawn apart from the grey of the cells not computed
        assert len(cells.get_paths()) == 3 and cells.get_hatch()
        centres = sorted(tuple(np.round(p.vertices[:4].mean(0), 6)) for p in cells.get_paths())
        x, y = np.linspace(-1, 1, 7), np.linspace(-1, 1, 6)
        expected = sorted((round(x[c // 6], 6), round(y[c % 6], 6)) for c in (3, 10, 17))
        np.testing.assert_allclose(centres, expected, atol=1e-9)
    (missing,) = _gid(plot.plot_contour(path, "train_loss").axes[0], "missing")
    shaded = np.ma.getmaskarray(missing.get_array()).reshape(-1)
    assert int((~shaded).sum()) == 2  # only the cells not computed are grey


def test_line_and_profile_mark_nonfinite_points(tmp_path):
    from landscape import plot

    path = tmp_path / "line.h5"
    x = np.linspace(0, 1, 9)
    loss = 1.0 + x
    loss[[2, 5]] = np.nan
    with lio.create_result(path, kind="line", shape=(9,), metrics=["train_loss"], attrs=ATTRS, arrays={"x": x}) as f:
        f.write_cells(np.arange(8), {"train_loss": loss[:8]})  # the last point is not computed
    ax = plot.plot_line(path).axes[0]
    assert "1 of 9 cells not computed" in ax.get_title()
    assert "2 computed cells not finite (NaN/Inf)" in ax.get_title()
    (marks,) = _gid(ax, "nonfinite")
    np.testing.assert_array_equal(marks.get_xdata(), x[[2, 5]])

    path = tmp_path / "curve.h5"
    t = np.linspace(0, 1, 5)
    values = {"train_loss": np.stack([1 + t, 2 + t]), "test_acc": np.stack([0.9 - t / 10, 0.8 - t / 10])}
    values["train_loss"][0, 1] = np.nan
    with lio.create_result(path, kind="curve", shape=(2, 5), metrics=list(values), attrs=ATTRS, arrays={"t": t}) as f:
        f.write_cells(np.arange(9), {k: v.ravel()[:9] for k, v in values.items()})
    fig = plot.plot_curve_profile(path)
    assert "1 of 10 points not computed" in fig.get_suptitle()
    assert "1 computed points not finite (NaN/Inf)" in fig.get_suptitle()
    marks = [a for a in fig.axes[0].get_lines() if a.get_gid() == "nonfinite-loss"]
    np.testing.assert_array_equal(marks[0].get_xdata(), [t[1]])


def test_connections_figure_counts_nonfinite_points():
    from landscape import plot

    acc = np.array([0.9, np.nan, 0.5, 0.9])
    report = {
        "methods": ["linear", "arc"],
        "splits": ["test"],
        "skipped": {"arc": "not this model"},
        "t": {"linear": np.linspace(0, 1, 4)},
        "acc": {"linear": {"test": acc}},
        "endpoints": {"test": {"A_acc": 0.9, "B_acc": 0.9}},
    }
    ax = plot.plot_connections(report).axes[0]
    assert "Linear: 1 of 4 points not finite (NaN/Inf)" in ax.get_title()
    assert "Arc" not in ax.get_title()


# --------------------------------------------------------------------------- warnings


def test_a_run_warns_once_how_many_cells_are_not_finite_and_where(tmp_path):
    from landscape.metrics import NonFiniteWarning

    path = tmp_path / "plane.h5"
    arrays = {"x": np.array([-1.0, 0.0, 1.0]), "y": np.array([0.0, 0.5, 1.0, 1.5])}
    with pytest.warns(NonFiniteWarning) as caught:
        with lio.create_result(
            path, kind="plane", shape=(3, 4), metrics=["loss", "acc"], attrs=ATTRS, arrays=arrays
        ) as f:
            f.write_cells([0, 1, 2, 3], {"loss": [1.0, np.nan, 2.0, np.inf], "acc": [0.5, 0.5, 0.5, 0.5]})
            f.write_cells([6, 11, 5], {"loss": [1.0, np.nan, -np.inf], "acc": [0.5, 0.5, np.nan]})
    assert len(caught) == 1  # once per run, at the end
    message = str(caught[0].message)
    assert "\n" not in message and "plane.h5" in message
    assert (
        "loss in 4 of 7 cells, first at x=-1 y=0.5 (cell (0, 1)), x=-1 y=1.5 (cell (0, 3)), x=0 y=0.5 (cell (1, 1)), ..."
        in message
    )
    assert "acc in 1 of 7 cells, first at x=0 y=0.5 (cell (1, 1))" in message
    assert caught[0].filename == __file__  # points at the caller's line

    # a curve profile names the row and t; a resumed run warns about its own cells only
    path = tmp_path / "curve.h5"
    attrs = {"rows": ["curve", "line"]}
    with lio.create_result(path, kind="curve", shape=(2, 3), metrics=["loss"], attrs=attrs, arrays={"t": [0, 0.5, 1]}):
        pass
    with pytest.warns(NonFiniteWarning, match=r"loss in 1 of 2 cells, first at line t=0.5 \(cell \(1, 1\)\)$"):
        with lio.open_or_create(path, kind="curve", shape=(2, 3), metrics=["loss"], attrs=attrs, resume=True) as f:
            f.write_cells([4, 0], {"loss": [np.nan, 1.0]})


def test_no_warning_for_finite_cells_or_nan_padded_tables(tmp_path, recwarn):
    with lio.create_result(tmp_path / "a.h5", kind="line", shape=(3,), metrics=["loss"], attrs=ATTRS) as f:
        f.write_cells([0, 1, 2], {"loss": [1.0, 2.0, 3.0]})
    # an ensembles table marks the members past a run's size with NaN: no result is NaN there
    metrics = ["cumulative_acc", "cumulative_nll", "member_acc", "budget"]
    with lio.create_result(tmp_path / "e.h5", kind="ensembles", shape=(1, 2), metrics=metrics, attrs=ATTRS) as f:
        f.write_cells([0, 1], {m: [1.0, np.nan] for m in metrics})
    assert not recwarn.list


def test_the_cli_prints_the_warning_as_one_line(tmp_path, capsys):
    import torch

    import landscape as ls
    from landscape.cli import main
    from landscape.metrics import NonFiniteWarning

    paths = []
    for i in range(2):
        torch.manual_seed(i)
        state = ls.build_model("mlp", {"widths": [16]}).state_dict()
        if i == 1:  # extrapolated BN statistics or a diverged run: weights that give NaN losses
            state[next(k for k in state if k.endswith("weight"))].view(-1)[0] = float("inf")
        paths.append(str(tmp_path / f"c{i}.pt"))
        torch.save(state, paths[-1])
    out = tmp_path / "s.h5"
    args = ["surface", "--type", "interpolate", "--ckpt", paths[0], "--ckpt", paths[1], "--x", "0:1:5"]
    args += ["--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits", "--max-samples", "64"]
    args += ["--no-progress", "--path", "loop", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("default", NonFiniteWarning)  # this module ignores it elsewhere
        assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if "NonFiniteWarning" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("landscape: warning: ") and "in 4 of 5 cells, first at x=0.25 (cell 1)" in lines[0]
    assert not [line for line in err if line.startswith(" ")]  # no source line under it


# --------------------------------------------------------------------------- summaries


def test_surface_summary_counts_nonfinite_values_and_keeps_all_nan_metrics(capsys):
    from types import SimpleNamespace

    from landscape.cli.common import print_surface_summary

    res = SimpleNamespace(
        metrics={
            "train_loss": np.array([[1.0, np.nan], [3.0, np.inf]]),
            "train_acc": np.array([[np.nan, np.nan], [np.nan, np.nan]]),
            "test_loss": np.array([[1.0, 2.0], [3.0, 4.0]]),
        },
        plane=SimpleNamespace(kind="random"),
        evaluated=4,
        seconds=0.1,
        path="loop",
        file=None,
    )
    print_surface_summary(res)
    out = capsys.readouterr().out.splitlines()
    assert re.search(r"train_loss\s+min 1  max 3 \(2 of 4 not finite: NaN/Inf\)$", out[1]), out
    assert re.search(r"train_acc\s+no finite value \(4 of 4 not finite: NaN/Inf\)$", out[2]), out
    assert re.search(r"test_loss\s+min 1  max 4$", out[3]), out


def _report(acc_linear, endpoints):
    from landscape.connect import ConnectionReport

    t = np.linspace(0, 1, len(acc_linear))
    return ConnectionReport(
        methods=["linear", "arc"],
        splits=["test"],
        t={"linear": t},
        stage={"linear": np.zeros(len(t), np.int64)},
        acc={"linear": {"test": np.asarray(acc_linear, float)}},
        loss={"linear": {"test": np.ones(len(t))}},
        endpoints={"test": endpoints},
        skipped={"arc": "weight adjustment cannot follow this model"},
    )


def test_connect_table_shows_a_computed_nan_as_nan_not_skipped():
    ends = {"A_acc": 0.9, "B_acc": 0.8, "A_loss": 0.3, "B_loss": 0.4}
    report = _report([0.9, np.nan, 0.5, 0.8], ends)
    table = report.markdown()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines() if "|" in line}
    assert rows["Linear"] == "NaN" and rows["Arc"] == "skipped" and rows["End points"] == "80.00"
    assert "Linear: 1 of 4 test accuracies not finite (NaN/Inf)" in table
    # an endpoint with a NaN accuracy makes the worse end NaN, whichever of the two it is
    for nan_end in ("A_acc", "B_acc"):
        report = _report([0.9, 0.7, 0.8], dict(ends, **{nan_end: float("nan")}))
        assert np.isnan(report.endpoint_acc("test")), nan_end
        assert f"End points: {nan_end} on test not finite (NaN/Inf)" in report.markdown()
    assert "not finite" not in _report([0.9, 0.7, 0.8], ends).markdown()


def test_curve_barrier_of_a_path_with_nan_is_nan_and_counted():
    import torch

    import landscape as ls
    from landscape import curves

    t = np.linspace(0, 1, 5)
    h, where = curves.barrier(np.array([1.0, 2.0, np.nan, 3.0, 1.0]), t)
    assert np.isnan(h) and np.isnan(where)  # nanargmax gave the barrier of the finite points
    h, where = curves.barrier(np.array([1.0, np.inf, 2.0, 3.0, 1.0]), t)
    assert h == np.inf and where == 0.25

    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [8]})
    a = ls.Weights.from_module(model)
    other = ls.build_model("mlp", {"widths": [8]})
    with torch.no_grad():
        next(p for n, p in other.named_parameters() if n.endswith("weight")).view(-1)[0] = float("inf")
    curve = curves.Curve(a, ls.Weights.from_module(other), n_bends=1)
    data = {"train": ls.load_data("digits", "train", max_samples=64)}
    prof = curves.evaluate_curve(model, curve, data, points=5, bn="running", progress=False)
    losses = prof.metrics["train_loss"]
    assert prof.nonfinite["train_loss"] == int((~np.isfinite(losses)).sum()) > 0
    assert np.isnan(losses[1]).any() and np.isnan(prof.barriers["line"]["train"])  # not left out
    assert np.isnan(prof.barriers["curve"]["train"])


def test_plot_file_says_why_a_metric_computed_as_nan_has_no_figure(tmp_path):
    from landscape import plot
    from landscape.metrics import NonFiniteWarning

    path = tmp_path / "line.h5"
    x = np.linspace(0, 1, 4)
    with lio.create_result(
        path, kind="line", shape=(4,), metrics=["train_loss", "lambda_max"], attrs=ATTRS, arrays={"x": x}
    ) as f:
        f.write_cells(np.arange(4), {"train_loss": 1.0 + x, "lambda_max": np.full(4, np.nan)})
    with pytest.warns(NonFiniteWarning, match=r"no figure of 'lambda_max' \(4 cells\): every computed value"):
        written = plot.plot_file(path, tmp_path / "figs", formats=("png",))
    assert [p.rsplit("-", 1)[-1] for p in written] == ["loss.png"]
