"""The registry of file kinds: docs/h5-format.md agrees with it, every writer writes what its
kind promises, versions are stamped and checked, and resuming follows one rule."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

import landscape as ls
from landscape import io as lio

DOCS = Path(__file__).resolve().parents[1] / "docs" / "h5-format.md"
COLUMNS = {"metrics": "metrics", "arrays": "arrays", "attributes": "attrs", "keys": "attrs"}
COLUMNS["not compared on resume"] = "not_compared"


# --------------------------------------------------------------------------- docs == registry


def _documented() -> dict[str, dict[str, str]]:
    """``{kind: {column: cell}}`` of the tables whose first header is `kind` or `format`."""
    rows: dict[str, dict[str, str]] = {}
    header = None
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif header is None:
            header = cells if cells[0] in ("`kind`", "`format`") else []
            container = "h5" if cells[0] == "`kind`" else "pt"
        elif header and not set(cells[0]) <= set("-: "):
            names = re.findall(r"`([^`]+)`", cells[0])
            assert len(names) == 1, f"docs row {line!r} should name one kind"
            assert names[0] not in rows, f"kind {names[0]!r} is documented twice"
            rows[names[0]] = dict(zip(header, cells), container=container)
    return rows


def _ticked(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def test_every_registered_kind_is_documented_and_every_documented_kind_is_registered():
    docs, kinds = _documented(), lio.result_kinds()
    assert set(docs) == set(kinds), (
        f"registered but not in docs/h5-format.md: {sorted(set(kinds) - set(docs))}; "
        f"documented but not registered: {sorted(set(docs) - set(kinds))}"
    )
    for name, spec in kinds.items():
        row = docs[name]
        assert row["container"] == spec.container, name
        assert int(row["version"]) == spec.version, (
            f"{name}: docs say version {row['version']}, registry {spec.version}"
        )
        for column, field in COLUMNS.items():
            if column in row:
                assert _ticked(row[column]) == set(getattr(spec, field)), f"{name}: column {column!r}"
        for column, dotted in (("written by", spec.writer), ("read by", spec.reader)):
            assert dotted.removeprefix("landscape.") in _ticked(row[column]), f"{name}: {column} {dotted}"


def test_the_docs_name_the_kinds_that_were_missing_and_the_attributes_never_compared():
    assert {"connections", "wa-ensemble", "predict", "ensemble-run", "hessian-density"} <= set(_documented())
    text = DOCS.read_text()
    intro = text[text.index("## Kinds of files") : text.index("| `kind` |")]
    assert set(lio.RUN_ATTRS) <= _ticked(intro), f"docs/h5-format.md should name every one of {lio.RUN_ATTRS}"


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", sorted(lio.result_kinds()))
def test_writer_and_reader_of_every_kind_exist(name):
    spec = lio.result_kind(name)
    assert callable(_resolve(spec.writer)) and callable(_resolve(spec.reader))
    assert spec.version in spec.reads


# --------------------------------------------------------------------------- the registry itself


def test_a_kind_has_one_definition():
    spec = lio.result_kind("line")
    assert lio.register_kind("line", 1, **{f: getattr(spec, f) for f in ("writer", "reader", "grid")},
                             arrays=spec.arrays, attrs=spec.attrs) == spec  # fmt: skip
    with pytest.raises(ValueError, match="already registered"):
        lio.register_kind("line", 2, writer="x.write", reader="x.read")
    with pytest.raises(KeyError, match="no kind 'nope' is registered"):
        lio.result_kind("nope")
    with pytest.raises(ValueError, match="version must be an int"):
        lio.register_kind("another", 0, writer="x.write", reader="x.read")


def test_files_carry_their_kind_version_and_old_files_read_as_version_1(tmp_path):
    path = tmp_path / "line.h5"
    with lio.create_result(path, kind="line", shape=(3,), metrics=["loss"], attrs={}) as rf:
        rf.write_cells([0], {"loss": [1.0]})
    with h5py.File(path, "r") as f:
        assert f.attrs["kind-version"] == lio.result_kind("line").version == 1
    with lio.open_result(path) as rf:
        assert rf.kind_version == 1 and "kind-version" not in rf.attrs
    with h5py.File(path, "a") as f:  # a file written before kinds had versions
        del f.attrs["kind-version"]
    with lio.open_result(path) as rf:
        assert rf.kind_version == 1 and rf.read_metric("loss")[0] == 1.0
    with h5py.File(path, "a") as f:
        f.attrs["kind-version"] = np.int64(2)
    with pytest.raises(lio.ResultFileError, match="is a 'line' file of kind version 2; this landscape reads version 1"):
        lio.open_result(path)
    adhoc = tmp_path / "adhoc.h5"
    with lio.create_result(adhoc, kind="my-grid", shape=(2,), metrics=["m"], attrs={}) as rf:
        assert rf.kind_version is None
    with pytest.raises(ValueError, match="reserved"):
        lio.create_result(tmp_path / "x.h5", kind="line", shape=(2,), metrics=["m"], attrs={"kind-version": 3})


def test_check_kind_names_what_a_file_lacks(tmp_path):
    path = tmp_path / "plane.h5"
    lio.create_result(path, kind="plane", shape=(2, 2), metrics=["loss"], attrs={"bn": "running"}).close()
    with pytest.raises(lio.ResultFileError, match="without its array 'x', array 'y'.*attribute 'surface-type'"):
        lio.check_kind(path)
    adhoc = tmp_path / "adhoc.h5"
    lio.create_result(adhoc, kind="my-grid", shape=(2,), metrics=["m"], attrs={}).close()
    with pytest.raises(lio.ResultFileError, match="not registered"):
        lio.check_kind(adhoc)


def test_attributes_a_kind_does_not_compare_may_differ_on_resume(tmp_path):
    path = tmp_path / "curve.h5"
    spec = dict(kind="curve", shape=(2, 3), metrics=["train_loss"])
    lio.create_result(path, **spec, attrs={"seed": 1, "barrier-curve-train": 0.5}).close()
    lio.open_or_create(path, **spec, attrs={"seed": 1}, resume=True).close()  # barrier-* not compared
    with pytest.raises(lio.ResultFileError, match="its 'seed' is 1 but this run has 2"):
        lio.open_or_create(path, **spec, attrs={"seed": 2}, resume=True)
    assert lio.first_difference({"a": 1, "b-x": 2}, {"a": 1}, ["b-*"]) is None
    key, old, new = lio.first_difference({"a": 1}, {"a": 1, "b": (1, 2)})
    assert key == "b" and old is lio.first_difference.MISSING and new == [1, 2]


# --------------------------------------------------------------------------- atomic files


def test_atomic_write_leaves_a_complete_file_or_none(tmp_path):
    path = tmp_path / "w.pt"
    lio.atomic_write(path, lambda tmp: Path(tmp).write_text("one"))
    with pytest.raises(FileExistsError, match="already exists; pass force=True"):
        lio.atomic_write(path, lambda tmp: Path(tmp).write_text("two"))

    def fails(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        lio.atomic_write(path, fails, force=True)
    assert path.read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]
    lio.atomic_write(path, lambda tmp: Path(tmp).write_text("two"), force=True)
    assert path.read_text() == "two"


def test_every_pt_writer_is_atomic_and_versioned(tmp_path):
    from landscape.curves import Curve, load_curve
    from landscape.weights import save_weights

    model = ls.build_model("mlp", {"in_features": 4, "widths": [3], "num_classes": 2})
    w = ls.Weights.from_module(model)
    save_weights(w.state_dict(), tmp_path / "w.pt")
    with pytest.raises(FileExistsError, match="already exists"):
        save_weights(w.state_dict(), tmp_path / "w.pt")
    curve = Curve(w, w, n_bends=1)
    curve.save(tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["version"] == lio.result_kind(raw["format"]).version
    raw["version"] = 9
    torch.save(raw, tmp_path / "c9.pt")
    with pytest.raises(ls.weights.CheckpointError, match="format version 9; expected 1"):
        load_curve(tmp_path / "c9.pt", model)
    del raw["version"]  # written before curve files had a version
    torch.save(raw, tmp_path / "c1.pt")
    assert load_curve(tmp_path / "c1.pt", model)[0].n_bends == 1
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- writers keep their promise


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [8]})
    other = ls.build_model("mlp", {"in_features": 64, "widths": [8]})
    data = ls.load_data("digits", "test", max_samples=64)
    return model, ls.Weights.from_module(model), ls.Weights.from_module(other), data


def test_engine_writers_write_what_their_kinds_promise(tiny, tmp_path):
    from landscape.curves import Curve, evaluate_curve

    model, a, b, data = tiny
    line = ls.PointSet.from_weights([a, b], [[1 - t, t] for t in (0.0, 0.5, 1.0)])
    ls.evaluate(model, line, data, out=tmp_path / "eval.h5", progress=False)
    plane = ls.directions.random_plane(a, seed=1)
    ls.compute_surface(model, plane, [-1, 1], [0, 1], splits={"test": data}, out=tmp_path / "plane.h5", progress=False)
    ls.compute_surface(
        model, ls.directions.line_through(a, b), [0, 1], splits={"test": data}, out=tmp_path / "line.h5", progress=False
    )
    evaluate_curve(model, Curve(a, b, n_bends=1), {"test": data}, points=3, bn="running", out=tmp_path / "curve.h5",
                   progress=False)  # fmt: skip
    for kind in ("eval", "plane", "line", "curve"):
        assert lio.check_kind(tmp_path / f"{kind}.h5").name == kind


def test_table_writers_round_trip_through_their_readers(tmp_path):
    from landscape.connect import ConnectionReport
    from landscape.connect.ensemble import WAEnsembleCurve
    from landscape.ensembles import EnsembleComparison
    from landscape.hessian import SpectralDensity
    from landscape.variational import save_predictions

    t = np.linspace(0, 1, 3)
    rep = ConnectionReport(
        methods=["linear", "arc"],
        splits=["test"],
        t={"linear": t},
        stage={"linear": np.zeros(3, np.int64)},
        acc={"linear": {"test": np.array([0.9, 0.5, 0.8])}},
        loss={"linear": {"test": np.array([0.1, 0.9, 0.2])}},
        endpoints={"test": {"A_acc": 0.9, "B_acc": 0.8, "A_loss": 0.1, "B_loss": 0.2}},
        skipped={"arc": "why not"},
        attrs={"points": 3},
    )
    rep.save(tmp_path / "conn.h5")
    wa = WAEnsembleCurve(
        [1, 2],
        [1, 2],
        np.eye(2),
        np.ones((2, 2)),
        [[0.5], [0.6]],
        [{"params": 1, "params_ordinary": 2, "macs": 1, "macs_ordinary": 2}] * 2,
        2,
    )
    wa.save(tmp_path / "wa.h5")
    per = {k: np.array([[0.5, np.nan]]) for k in ("cumulative_acc", "cumulative_nll", "member_acc", "budget")}
    EnsembleComparison(["FGE"], np.array([0.5]), np.array([1.0]), np.array([0.1]), per).save(tmp_path / "ens.h5")
    scores = {
        s: SimpleNamespace(acc=0.5 + i / 10, nll=1.0, ece=0.1) for i, s in enumerate(("deterministic", "ensemble"))
    }
    save_predictions(scores, tmp_path / "pred.h5", samples=4, seed=1, attrs={"split": "test"})
    d = SpectralDensity(np.array([[-1.0, 2.0], [0.5, 3.0]]), np.array([[0.3, 0.7], [0.5, 0.5]]), 10, 8, {"rule": "all"})
    d.save(tmp_path / "density.h5", attrs={"loss": "loss"})
    names = {
        "conn": "connections",
        "wa": "wa-ensemble",
        "ens": "ensembles",
        "pred": "predict",
        "density": "hessian-density",
    }
    for file, kind in names.items():
        assert lio.check_kind(tmp_path / f"{file}.h5").name == kind

    back = ConnectionReport.load(tmp_path / "conn.h5")
    np.testing.assert_array_equal(back.acc["linear"]["test"], rep.acc["linear"]["test"])
    assert back.skipped == {"arc": "why not"}
    pred = lio.read_predictions(tmp_path / "pred.h5")
    assert pred["schemes"] == ["deterministic", "ensemble"] and pred["acc"].tolist() == [0.5, 0.6]
    assert pred["samples"] == 4 and pred["attrs"]["split"] == "test"
    again = SpectralDensity.load(tmp_path / "density.h5")
    np.testing.assert_array_equal(again.nodes, d.nodes)
    assert (again.n, again.hvps, again.selection) == (10, 8, {"rule": "all"})
    assert again.moment(1) == d.moment(1)
    with pytest.raises(ValueError, match="holds a 'predict' result, not 'hessian-density'"):
        lio.read_density(tmp_path / "pred.h5")


def test_an_ensemble_run_resumes_by_done_flags_and_settings(tmp_path):
    from landscape.ensembles import open_ensemble_run, read_ensemble_run, save_ensemble_run

    settings = {"method": "ind", "epochs": 3, "lr": 0.1, "seed": 0, "ckpt-sha256": None}
    members = [f"ind-{j}.pt" for j in range(3)]
    with open_ensemble_run(tmp_path / "ind-run.h5", method="ind", settings=settings, members=members) as rf:
        rf.write_cells([0], {"budget": [3.0]})
    with pytest.raises(lio.ResultExistsError):
        open_ensemble_run(tmp_path / "ind-run.h5", method="ind", settings=settings, members=members)
    with pytest.raises(lio.ResultFileError, match="its 'lr' is 0.1 but this run has 0.2"):
        open_ensemble_run(tmp_path / "ind-run.h5", method="ind", settings={**settings, "lr": 0.2}, members=members,
                          resume=True)  # fmt: skip
    with open_ensemble_run(
        tmp_path / "ind-run.h5", method="ind", settings=settings, members=members, resume=True
    ) as rf:
        assert rf.pending().tolist() == [1, 2]
    rec = read_ensemble_run(tmp_path / "ind-run.h5", settings)
    assert rec["members"] == members and rec["done"].tolist() == [True, False, False]
    assert rec["budgets"][0] == 3.0 and np.isnan(rec["budgets"][1:]).all()
    assert rec["settings"] == {k: v for k, v in settings.items() if k != "method"}

    path = save_ensemble_run(
        tmp_path / "fge-run.h5",
        method="fge",
        settings={"cycles": 2, "lr": 0.05},
        members=["fge-iter2.pt", "fge-iter6.pt"],
        budgets=[1.5, 2.5],
        spent=3.0,
        arrays={"lr": np.linspace(0.05, 0.01, 8), "iterations": np.array([2, 6])},
    )
    rec = read_ensemble_run(path, {"cycles": 2, "lr": 0.05})
    assert rec["method"] == "fge" and rec["done"].all() and rec["spent"] == 3.0
    assert rec["arrays"]["iterations"].tolist() == [2, 6] and lio.check_kind(path).name == "ensemble-run"
    with pytest.raises(lio.ResultFileError, match="cannot resume .*'cycles' is 2 but this run has 3"):
        read_ensemble_run(path, {"cycles": 3, "lr": 0.05})


def test_a_curve_fit_resumes_only_with_its_own_settings(tiny, tmp_path):
    from landscape.curves import Curve, fit_curve

    model, a, b, data = tiny
    ck = tmp_path / "curve.pt"
    fit_curve(model, Curve(a, b, n_bends=1), data, epochs=1, batch_size=32, checkpoint=ck, progress=False)
    with pytest.raises(lio.ResultFileError, match="its 'lr' is 0.05 but this run has 0.1"):
        fit_curve(model, Curve(a, b, n_bends=1), data, epochs=1, lr=0.1, batch_size=32, checkpoint=ck, resume=True,
                  progress=False)  # fmt: skip
    with pytest.raises(lio.ResultFileError, match="its 'n-bends' is 1 but this run has 2"):
        fit_curve(model, Curve(a, b, n_bends=2), data, epochs=1, batch_size=32, checkpoint=ck, resume=True,
                  progress=False)  # fmt: skip
    res = fit_curve(model, Curve(a, b, n_bends=1), data, epochs=1, batch_size=32, checkpoint=ck, resume=True,
                    progress=False)  # fmt: skip
    assert res.resumed_from == 1
