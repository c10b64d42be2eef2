"""Tests of landscape.plot.report and ``landscape report``: the page embeds the files' data
(compared with the files), makes no network reference, has one section per file made by the
builder of its kind, and is rewritten only when its results change."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from landscape.cli import main as cli_main
from landscape.io import create_result, open_result
from landscape.plot import report

NX, NY = 6, 5
X, Y = np.linspace(-1.0, 1.0, NX), np.linspace(0.0, 2.0, NY)
T = np.linspace(0.0, 1.0, 7)


def make_plane(path: Path, *, hessian: bool = False, surface_type: str = "curve-plane") -> Path:
    gx, gy = np.meshgrid(X, Y, indexing="ij")
    loss = 0.1 + gx**2 + (gy - 1.0) ** 2
    metrics = {"train_loss": loss, "train_acc": 1.0 / (1.0 + loss), "test_loss": loss + 0.2}
    if hessian:
        metrics.update(lambda_max=10 + gx, lambda_min=-0.1 * (1 + gy), eig_ratio=0.01 * (1 + gy) / (10 + gx))
    arrays = {"x": X, "y": Y, "anchors": np.array([[0.0, 0.0], [0.5, 1.0]]), "trajectory": np.c_[T - 0.5, 2 * T]}
    attrs = {"surface-type": surface_type, "anchor-names": ["a.pt", "bend 1"], "trajectory-label": "Bezier curve"}
    with create_result(path, kind="plane", shape=(NX, NY), metrics=list(metrics), attrs=attrs, arrays=arrays) as rf:
        rf.write_cells(np.arange(NX * NY - 1), {k: v.ravel()[:-1] for k, v in metrics.items()})  # last cell missing
    return path


def make_line(path: Path) -> Path:
    x = np.linspace(-0.5, 1.5, 9)
    metrics = {"train_loss": 0.2 + np.sin(np.pi * x) ** 2, "test_acc": 0.9 - 0.1 * np.sin(np.pi * x) ** 2}
    with create_result(
        path, kind="line", shape=(9,), metrics=list(metrics), attrs={"surface-type": "interpolation"}, arrays={"x": x}
    ) as rf:
        rf.write_cells(np.arange(9), metrics)
    return path


def make_profile(path: Path) -> Path:
    bump = np.sin(np.pi * T) ** 2
    metrics = {
        "train_loss": np.stack([0.1 + 0.05 * bump, 0.1 + 2 * bump]),
        "test_acc": np.stack([0.9 - bump / 50, 0.9 - bump / 2]),
    }
    attrs = {
        "surface-type": "curve",
        "curve-kind": "bezier",
        "n-bends": 1,
        "rows": ["curve", "line"],
        "splits": ["train"],
    }
    attrs.update({"barrier-curve-train": 0.05, "barrier-line-train": 2.0})
    with create_result(path, kind="curve", shape=(2, 7), metrics=list(metrics), attrs=attrs, arrays={"t": T}) as rf:
        rf.write_cells(np.arange(14), {k: v.ravel() for k, v in metrics.items()})
    return path


def make_connections(path: Path) -> Path:
    from landscape.connect import ConnectionReport

    t_ot = np.r_[np.linspace(0, 0.5, 3), np.linspace(0.51, 1.0, 9)]  # stage 2: the swaps, many points
    rep = ConnectionReport(
        methods=["linear", "ot"],
        splits=["test"],
        t={"linear": T, "ot": t_ot},
        stage={"linear": np.zeros(7, int), "ot": np.r_[np.ones(3, int), np.full(9, 2)]},
        acc={
            "linear": {"test": 0.9 - 0.2 * np.sin(np.pi * T)},
            "ot": {"test": np.r_[0.9, 0.88, 0.89, 0.9, 0.8, 0.91, 0.8, 0.9, 0.85, 0.9, 0.86, 0.91]},
        },
        loss={"linear": {"test": 0.3 + np.sin(np.pi * T)}, "ot": {"test": np.full(12, 0.35)}},
        endpoints={"test": {"A_acc": 0.9, "B_acc": 0.91, "A_loss": 0.3, "B_loss": 0.29}},
        labels={"linear": "Linear", "ot": "OT"},
    )
    rep.save(path)
    return path


def make_ensembles(path: Path) -> Path:
    from landscape.ensembles import EnsembleComparison

    budget = np.array([[4.0, 8.0, 12.0], [4.0, 6.0, np.nan]])
    acc = np.array([[0.90, 0.92, 0.93], [0.90, 0.91, np.nan]])
    EnsembleComparison(
        labels=["Ind (3)", "FGE (2)"],
        acc=np.array([0.93, 0.91]),
        nll=np.array([0.25, 0.3]),
        ece=np.array([0.02, 0.03]),
        per_member={"cumulative_acc": acc, "cumulative_nll": 1 - acc, "member_acc": acc, "budget": budget},
    ).save(path)
    return path


def make_eval(path: Path) -> Path:
    """A kind without a report section of its own: the generic section."""
    with create_result(path, kind="eval", shape=(4,), metrics=["loss", "acc"], attrs={"seed": 3}) as rf:
        rf.write_cells(np.arange(4), {"loss": np.array([0.5, 0.25, 0.125, 0.0625]), "acc": np.full(4, 0.75)})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    return {
        "plane": make_plane(d / "bezier-plane.h5"),
        "hessian": make_plane(d / "hessian-plane.h5", hessian=True, surface_type="random"),
        "line": make_line(d / "interpolation.h5"),
        "curve": make_profile(d / "bezier-profile.h5"),
        "connections": make_connections(d / "connections.h5"),
        "ensembles": make_ensembles(d / "ensembles.h5"),
        "eval": make_eval(d / "eval.h5"),
    }


def page_data(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_page_is_self_contained_and_embeds_the_files(files):
    page = report.render_report(list(files.values()))
    # nothing the browser would fetch: no http(s) reference, no src= or href= to anything but an anchor
    assert not re.search(r"https?://", page)
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == [f"#s{i}" for i in range(len(files))]
    assert "default-src 'none'" in page and "connect-src 'none'" in page
    # the script and style are embedded and allowed by their hashes
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    assert report._csp_hash(script) in csp and "unsafe-inline" not in csp
    data = page_data(page)
    assert len(data["sections"]) == len(files)
    # one section per file, made by its kind's builder; the eval file by the generic one
    builders = re.findall(r'<section class="section" id="s\d+" data-kind="([^"]+)" data-builder="([^"]+)"', page)
    assert builders == [
        ("plane", "plane"),
        ("plane", "plane"),
        ("line", "line"),
        ("curve", "curve"),
        ("connections", "connections"),
        ("ensembles", "ensembles"),
        ("eval", "generic"),
    ]
    types = [[b["type"] for b in s["blocks"]] for s in data["sections"]]
    assert types[0] == ["plane"] and types[1] == ["plane", "maps"]
    assert types[2] == ["lines", "lines"] and types[3] == ["lines", "lines", "table"]
    assert types[4] == ["table", "lines"] and types[5] == ["table", "lines"] and types[6] == ["lines", "lines"]
    # settings and provenance: every file's attributes, one details element each
    assert page.count("settings and provenance") == len(files)
    assert "&quot;anchor-names&quot;" in page and "&quot;seed&quot;: 3" in page


def test_plane_block_holds_the_file_values(files):
    block = report.report_section(files["plane"])["blocks"][0]
    with open_result(files["plane"]) as rf:
        loss, acc = rf.read_metric("train_loss"), rf.read_metric("train_acc")
    assert list(block["quantities"]) == ["loss", "acc"] and block["quantities"]["acc"]["label"] == "accuracy (%)"
    assert sorted(block["quantities"]["loss"]["splits"]) == ["test", "train"]
    drawn = np.array(block["quantities"]["loss"]["splits"]["train"], dtype=float)  # None -> NaN
    assert drawn.shape == (NX, NY) and np.isnan(drawn[-1, -1])  # the cell not computed
    np.testing.assert_allclose(drawn[:-1], loss[:-1], rtol=1e-5)
    np.testing.assert_allclose(
        np.array(block["quantities"]["acc"]["splits"]["train"], float)[0], 100 * acc[0], rtol=1e-5
    )
    assert block["x"] == pytest.approx(X) and block["y"] == pytest.approx(Y)
    assert block["anchors"] == [[0.0, 0.0, "a.pt"], [0.5, 1.0, "bend 1"]]
    assert block["curve"] and block["equal"] and block["trajectory_label"] == "Bezier curve"
    assert np.array(block["trajectory"]) == pytest.approx(np.c_[T - 0.5, 2 * T], rel=1e-5)


def test_hessian_maps_and_profile_and_connections(files):
    maps = report.report_section(files["hessian"])["blocks"][1]
    with open_result(files["hessian"]) as rf:
        lmax = rf.read_metric("lambda_max")
    assert [m["label"] for m in maps["maps"]] == ["λmax", "λmin", "|λmin / λmax|"]
    np.testing.assert_allclose(np.array(maps["maps"][0]["values"], float)[0], lmax[0], rtol=1e-5)
    # the diagnostics are not among the surface's metrics
    assert "eig_residual_max" not in report.report_section(files["hessian"])["blocks"][0]["quantities"]

    loss, acc, barriers = report.report_section(files["curve"])["blocks"]
    assert [s["label"] for s in loss["series"]] == ["Bezier curve, 1 bend, train", "line segment, train"]
    assert [s.get("dash", False) for s in loss["series"]] == [False, True]
    assert loss["series"][1]["y"][3] == pytest.approx(2.1)  # the line's bump at t = 1/2
    assert acc["series"][1]["y"][3] == pytest.approx(40.0)  # 100 * (0.9 - 1/2)
    assert barriers["rows"] == [["train", "0.05", "2"]]

    table, lines = report.report_section(files["connections"])["blocks"]
    assert [row[0] for row in table["rows"]] == ["Linear", "OT", "end points (A / B)"]
    assert table["rows"][0][1] == "70"  # worst accuracy of the line, in %
    ot = lines["series"][1]
    assert ot["faint"] == [False] * 3 + [True] * 9  # the swap stage, drawn faint
    assert "faint" not in lines["series"][0]
    assert [h["label"] for h in lines["hlines"]] == ["A (t = 0) 90.00%", "B (t = 1) 91.00%"]


def test_same_results_same_page_and_no_overwrite(files, tmp_path):
    out = tmp_path / "r.html"
    paths = [files["line"], files["curve"]]
    assert report.write_report(paths, out) is True
    first = out.read_bytes()
    assert report.write_report(paths, out) is False  # unchanged results: nothing written
    assert out.read_bytes() == first
    # a run stamp (created) changes, the results do not: still nothing to write
    with open_result(files["line"], "r+") as rf:
        rf.update_attrs({"created": "2000-01-01T00:00:00+00:00"})
    assert report.write_report(paths, out) is False
    # another page in its place is not overwritten without force
    with pytest.raises(FileExistsError, match="already exists"):
        report.write_report([files["line"]], out)
    assert out.read_bytes() == first
    assert report.write_report([files["line"]], out, force=True) is True
    assert len(page_data(out.read_text())["sections"]) == 1
    with pytest.raises(ValueError, match="at least one"):
        report.render_report([])


def test_register_section_is_one_place_per_kind(files):
    with pytest.raises(ValueError, match="already registered"):
        report.register_section("plane", lambda surface: {"blocks": []})
    assert set(report.section_builders()) >= {"line", "plane", "curve", "connections", "ensembles", "wa-ensemble"}


def test_cli_writes_refuses_and_reports_bad_input(files, tmp_path, capsys):
    out = tmp_path / "page.html"
    folder = os.path.dirname(files["plane"])
    assert cli_main(["report", folder, "--out", str(out)]) == 0
    assert f"{len(files)} result file(s)" in capsys.readouterr().out
    assert cli_main(["report", folder, "--out", str(out)]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert cli_main(["report", str(files["line"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["report", str(files["line"]), "--out", str(out), "--force"]) == 0
    assert cli_main(["report", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert cli_main(["report", str(files["line"]), "--out", str(tmp_path / "x.png")]) == 2
    assert "not an .html file" in capsys.readouterr().err


def test_a_fine_plane_is_thinned_with_a_note(files, monkeypatch):
    monkeypatch.setattr(report, "MAX_CELLS_PER_AXIS", 4)  # NX = 6 -> every 2nd cell, NY = 5 -> every 2nd
    plane, maps = report.report_section(files["hessian"])["blocks"]
    with open_result(files["hessian"]) as rf:
        loss, lmax = rf.read_metric("train_loss"), rf.read_metric("lambda_max")
    assert plane["note"] == "grid 6 x 5: shown every 2 x 2 cells"
    assert plane["x"] == pytest.approx(X[::2]) and plane["y"] == pytest.approx(Y[::2])
    np.testing.assert_allclose(
        np.array(plane["quantities"]["loss"]["splits"]["train"], float)[:2], loss[::2, ::2][:2], rtol=1e-5
    )
    np.testing.assert_allclose(np.array(maps["maps"][0]["values"], float), lmax[::2, ::2], rtol=1e-5)
    assert "shown every 2 x 2 cells" in maps["title"]
    monkeypatch.setattr(report, "MAX_CELLS_PER_AXIS", 6)  # 6 x 5 fits: every cell, no note
    assert report.report_section(files["plane"])["blocks"][0]["note"] == ""


def test_wa_ensemble_and_predictions_sections(tmp_path):
    wa = tmp_path / "wa.h5"
    acc = np.array([[0.90, 0.92, 0.93], [0.90, 0.91, 0.915]])
    attrs = {
        "n_layers": 3,
        "cost": [{"params": 300.0, "params_ordinary": 300.0}, {"params": 150.0, "params_ordinary": 300.0}],
        "member_acc": [[0.9, 0.9, 0.9], [0.9, 0.89, 0.9]],
        "table": "",
    }
    arrays = {"head_layers": np.array([3, 1]), "sizes": np.array([1, 2, 3])}
    with create_result(wa, kind="wa-ensemble", shape=(2, 3), metrics=["acc", "nll"], attrs=attrs, arrays=arrays) as rf:
        rf.write_cells(np.arange(6), {"acc": acc.ravel(), "nll": 1 - acc.ravel()})
    lines, table = report.report_section(wa)["blocks"]
    assert [s["label"] for s in lines["series"]] == ["Ind, 1.00x params", "WA(1), 0.50x params"]
    assert lines["series"][1]["y"] == pytest.approx([90.0, 91.0, 91.5]) and lines["series"][0]["dash"]
    assert table["rows"][1] == ["WA(1), 0.50x params", "90", "91", "91.5"]

    pred = tmp_path / "pred.h5"
    attrs = {"schemes": ["deterministic", "ensemble"], "samples": 8, "seed": 0, "bn": "running"}
    with pytest.warns(Warning, match="not finite"):  # the NaN ECE: a value the table shows as —
        with create_result(pred, kind="predict", shape=(2,), metrics=["acc", "nll", "ece"], attrs=attrs) as rf:
            rf.write_cells(
                np.arange(2),
                {"acc": np.array([0.9, 0.925]), "nll": np.array([0.3, 0.25]), "ece": np.array([0.05, np.nan])},
            )
    (table,) = report.report_section(pred)["blocks"]
    assert table["title"] == "8 samples"
    assert table["rows"] == [["deterministic", "90", "0.3", "0.05"], ["ensemble", "92.5", "0.25", "—"]]


def test_static_connections_figure_draws_the_swaps_faint_and_labels_the_ends(files):
    from landscape.io import read_connections
    from landscape.plot import plot_connections

    ax = plot_connections(files["connections"]).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    ot = lines["OT"]
    acc = 100 * read_connections(files["connections"])["acc"]["ot"]["test"]
    # the OT path's own line stops where its swap stage starts; the whole path is drawn faint, behind
    assert np.isfinite(ot.get_ydata()[:3]).all() and np.isnan(ot.get_ydata()[3:]).all()
    (faint,) = [line for line in ax.get_lines() if line.get_gid() == "swaps"]
    np.testing.assert_allclose(faint.get_ydata(), acc)
    assert faint.get_alpha() < 0.5 and faint.get_zorder() < ot.get_zorder() and faint.get_color() == ot.get_color()
    assert np.isfinite(lines["Linear"].get_ydata()).all()  # a path without stages is drawn whole
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Linear", "OT", "A (t = 0): 90.00%", "B (t = 1): 91.00%", "OT swap stage (faint)"]
