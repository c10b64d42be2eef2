"""Tests of landscape.connect.report: compare_connections, ConnectionReport, plot_connections."""

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.connect import (
    METHODS,
    ConnectionReport,
    compare_connections,
    permute,
)
from landscape.demo import train_classifier
from landscape.io import ResultExistsError, open_result
from landscape.plot import plot_connections

TINY = 1e-12


def _trained(widths, seed, data, epochs=3):
    torch.manual_seed(seed)
    model = ls.build_model("mlp", {"widths": list(widths)})
    train_classifier(model, data, epochs=epochs, seed=seed)
    return model


@pytest.fixture(scope="module")
def splits():
    return {"train": ls.load_data("digits", "train"), "test": ls.load_data("digits", "test")}


@pytest.fixture(scope="module")
def pair(splits):
    ma, mb = _trained([32], 0, splits["train"]), _trained([32], 1, splits["train"])
    return ma, ls.Weights.from_module(ma), ls.Weights.from_module(mb)


@pytest.fixture(scope="module")
def report(pair, splits):
    model, A, B = pair
    return compare_connections(model, A, B, splits, points=11)


def test_every_method_is_computed_and_starts_and_ends_at_the_endpoints(report):
    assert report.methods == list(METHODS) and report.skipped == {}
    assert report.splits == ["train", "test"]
    for m in METHODS:
        t = report.t[m]
        assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) >= 0)
        for s in report.splits:
            acc, loss = report.acc[m][s], report.loss[m][s]
            assert acc.shape == t.shape == loss.shape
            e = report.endpoints[s]
            assert acc[0] == pytest.approx(e["A_acc"], abs=TINY), (m, s)
            assert acc[-1] == pytest.approx(e["B_acc"], abs=TINY), (m, s)
            assert loss[0] == pytest.approx(e["A_loss"], rel=1e-5), (m, s)
            assert loss[-1] == pytest.approx(e["B_loss"], rel=1e-5), (m, s)
            worst = report.worst_acc(m, s)
            assert worst == acc.min()
            assert worst <= min(e["A_acc"], e["B_acc"]) + TINY
            assert report.max_loss(m, s) == loss.max() >= max(e["A_loss"], e["B_loss"]) - 1e-6
    # the points of a linear path are the requested t
    np.testing.assert_allclose(report.t["linear"], np.linspace(0, 1, 11))
    assert not report.has_stages("linear")
    # the paper's WA with one hidden layer: phase 1 (first layer) on [0, 1/2], phase 2 after it
    assert report.attrs["wa-form"] == "paper" and report.stages("arc+wa") == [1, 2]
    assert report.stage_word("arc+wa") == "phase"
    assert np.all(report.t["arc+wa"][report.stage["arc+wa"] == 1] <= 0.5)


def test_ot_reports_both_stages_and_the_joined_worst(report):
    for m in ("ot", "ot+wa"):
        st = report.stage[m]
        assert report.has_stages(m) and set(np.unique(st)) == {1, 2}
        assert np.all(report.t[m][st == 1] <= 0.5) and np.all(report.t[m][st == 2] >= 0.5)
        for s in report.splits:
            w1, w2 = report.worst_acc(m, s, 1), report.worst_acc(m, s, 2)
            assert report.worst_acc(m, s) == min(w1, w2)
    # stage 1 of OT is evaluated at `points` values of t
    assert int(np.sum(report.stage["ot"] == 1)) == 11


def test_markdown_has_a_row_per_method_and_the_report_numbers(report):
    text = report.markdown(stages=False)
    lines = text.splitlines()
    assert lines[0] == "| Method | Worst train acc (%) | Worst test acc (%) |"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    labels = [r[0] for r in rows]
    assert labels == [
        "Linear",
        "Arc",
        "Linear + WA (paper)",
        "Arc + WA (paper)",
        "OT",
        "OT + WA (paper)",
        "End points",
    ]
    for (_label, train, test), m in zip(rows, list(METHODS) + [None]):
        if m is None:
            want = [100 * report.endpoint_acc(s) for s in ("train", "test")]
        else:
            want = [100 * report.worst_acc(m, s) for s in ("train", "test")]
        assert float(train) == pytest.approx(want[0], abs=0.006)
        assert float(test) == pytest.approx(want[1], abs=0.006)
    # with stages, OT rows are followed by their two stages
    full = [line.split("|")[1].strip() for line in report.markdown().splitlines()[2:]]
    i = full.index("OT")
    assert full[i + 1 : i + 3] == ["OT (stage 1)", "OT (stage 2)"]
    assert full[-1] == "End points"


def test_save_round_trips_and_plots_from_the_file(report, tmp_path):
    path = tmp_path / "conn.h5"
    report.save(path)
    with pytest.raises(ResultExistsError):
        report.save(path)
    report.save(path, force=True)
    with open_result(path) as rf:
        assert rf.kind == "connections"
        assert rf.shape == (len(METHODS) + 1, 2)
        assert rf.metrics == ["worst_acc", "max_loss"]
        assert rf.done.all()
        worst = rf.read_metric("worst_acc")
        assert worst[METHODS.index("ot"), 1] == report.worst_acc("ot", "test")
        assert worst[-1, 0] == report.endpoint_acc("train")
        assert rf.attrs["methods"] == list(METHODS)
        assert rf.attrs["table"] == report.markdown()
        np.testing.assert_array_equal(rf.read_array("arc.test.acc"), report.acc["arc"]["test"])
    back = ConnectionReport.load(path)
    assert back.methods == report.methods and back.splits == report.splits
    assert back.endpoints == report.endpoints and back.skipped == report.skipped
    for m in METHODS:
        np.testing.assert_array_equal(back.t[m], report.t[m])
        np.testing.assert_array_equal(back.stage[m], report.stage[m])
        for s in report.splits:
            np.testing.assert_array_equal(back.acc[m][s], report.acc[m][s])
            np.testing.assert_array_equal(back.loss[m][s], report.loss[m][s])
    assert back.markdown() == report.markdown()
    fig = plot_connections(str(path))
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()][: len(METHODS)] == [
        "Linear",
        "Arc",
        "Linear + WA (paper)",
        "Arc + WA (paper)",
        "OT",
        "OT + WA (paper)",
    ]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 100 * report.acc["linear"]["test"])


def test_out_writes_the_file_and_refuses_to_overwrite(pair, splits, tmp_path):
    model, A, B = pair
    path = tmp_path / "c.h5"
    rep = compare_connections(model, A, B, splits, methods=("linear",), points=3, out=path)
    assert ConnectionReport.load(path).markdown() == rep.markdown()
    with pytest.raises(ResultExistsError):
        compare_connections(model, A, B, splits, methods=("linear",), points=3, out=path)
    compare_connections(model, A, B, splits, methods=("arc",), points=3, out=path, force=True)
    assert ConnectionReport.load(path).methods == ["arc"]


def test_planted_permutation_is_connected_by_ot_at_constant_accuracy(pair, splits):
    model, A, _ = pair
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    B = permute(A, model, {"1": perm})
    rep = compare_connections(model, A, B, splits, methods=("ot",), points=6)
    for s in rep.splits:
        a_acc = rep.endpoints[s]["A_acc"]
        assert rep.endpoints[s]["B_acc"] == pytest.approx(a_acc, abs=TINY)
        acc, st = rep.acc["ot"][s], rep.stage["ot"]
        # stage 1 goes from A to B' = A: constant
        np.testing.assert_allclose(acc[st == 1], a_acc, atol=TINY)
        assert rep.worst_acc("ot", s, 1) == pytest.approx(a_acc, abs=TINY)
        # stage 2's states (every other point: swap ends) are reorderings of A
        np.testing.assert_allclose(acc[st == 2][1::2], a_acc, atol=TINY)


def test_deeper_models_run_wa_through_transitional_networks(splits):
    model = _trained([16, 16], 0, splits["train"], epochs=1)
    other = _trained([16, 16], 1, splits["train"], epochs=1)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(other)
    rep = compare_connections(model, A, B, splits, methods=("linear", "arc+wa"), points=3)
    assert rep.computed == ["linear", "arc+wa"] and rep.attrs["wa_steps"] == 3
    # three steps A -> Theta_2 -> Theta_3 -> B, each with 3 points, joints counted once
    assert rep.stages("arc+wa") == [1, 2, 3] and len(rep.t["arc+wa"]) == 7
    for s in rep.splits:
        e = rep.endpoints[s]
        assert rep.acc["arc+wa"][s][0] == pytest.approx(e["A_acc"], abs=TINY)
        assert rep.acc["arc+wa"][s][-1] == pytest.approx(e["B_acc"], abs=TINY)
        steps = [rep.worst_acc("arc+wa", s, k) for k in (1, 2, 3)]
        assert min(steps) == rep.worst_acc("arc+wa", s)
    text = rep.markdown()
    assert "| Arc + WA (paper) (step 2) |" in text and "(stage" not in text


def test_skipped_methods_show_in_the_table():
    rep = ConnectionReport(methods=["linear", "arc+wa"], splits=["test"], skipped={"arc+wa": "no data"})
    rep.t["linear"], rep.stage["linear"] = np.array([0.0, 1.0]), np.zeros(2, np.int64)
    rep.acc["linear"], rep.loss["linear"] = {"test": np.array([0.9, 0.8])}, {"test": np.array([0.1, 0.2])}
    rep.endpoints["test"] = {"A_acc": 0.9, "B_acc": 0.8, "A_loss": 0.1, "B_loss": 0.2}
    assert rep.computed == ["linear"] and np.isnan(rep.worst_acc("arc+wa", "test"))
    text = rep.markdown(stages=False)
    # a report without the attribute was made before the paper's WA became the default
    assert "| Arc + WA (bias column) | skipped |" in text and "Arc + WA (bias column) skipped: no data" in text
    assert "| Linear | 80.00 |" in text and "| End points | 80.00 |" in text


def test_curves_join_the_table(pair, splits):
    from landscape.curves import Curve

    model, A, B = pair
    # a Bezier curve whose bend is the midpoint is the straight line: same numbers as Linear
    line = Curve(A, B, n_bends=1, kind="bezier", init="line")
    rep = compare_connections(model, A, B, splits, methods=("linear",), curves={"Bezier (3)": line}, points=5)
    assert rep.methods == ["linear", "Bezier (3)"]
    for s in rep.splits:
        np.testing.assert_allclose(rep.acc["Bezier (3)"][s], rep.acc["linear"][s], atol=1e-6)
        np.testing.assert_allclose(rep.loss["Bezier (3)"][s], rep.loss["linear"][s], rtol=1e-5)
    assert "| Bezier (3) |" in rep.markdown()
    with pytest.raises(ValueError, match="curve names"):
        compare_connections(model, A, B, splits, methods=("linear",), curves={"linear": line})


def test_rejects_bad_arguments(pair, splits):
    model, A, B = pair
    with pytest.raises(ValueError, match="unknown methods"):
        compare_connections(model, A, B, splits, methods=("spline",))
    with pytest.raises(ValueError, match="points"):
        compare_connections(model, A, B, splits, points=1)


def test_an_interrupted_run_resumes_without_recomputing(pair, splits, tmp_path, monkeypatch):
    import landscape.connect.registry as registry_mod
    from landscape.io import ResultFileError

    model, A, B = pair
    path = tmp_path / "conn.h5"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(registry_mod, "arc_path", interrupted)
        with pytest.raises(KeyboardInterrupt):
            compare_connections(model, A, B, splits, methods=("linear", "arc"), points=5, out=path)
    partial = ConnectionReport.load(path)
    assert partial.computed == ["linear"] and partial.attrs["complete"] is False
    with pytest.raises(ResultExistsError):
        compare_connections(model, A, B, splits, methods=("linear", "arc"), points=5, out=path)
    with pytest.raises(ResultFileError, match="points"):
        compare_connections(model, A, B, splits, methods=("linear", "arc"), points=7, out=path, resume=True)
    with monkeypatch.context() as mp:
        mp.setattr(registry_mod, "linear_path", interrupted)  # linear must come from the file
        rep = compare_connections(model, A, B, splits, methods=("linear", "arc"), points=5, out=path, resume=True)
    fresh = compare_connections(model, A, B, splits, methods=("linear", "arc"), points=5)
    for m in ("linear", "arc"):
        for s in splits:
            np.testing.assert_array_equal(rep.acc[m][s], fresh.acc[m][s])
    back = ConnectionReport.load(path)
    assert back.computed == ["linear", "arc"] and back.attrs["complete"] is True


def test_convnets_with_batchnorm_connect_by_linear_arc_and_ot_with_recomputed_statistics():
    from landscape.connect import identity_permutations

    train, test = ls.load_data("digits:image", "train"), ls.load_data("digits:image", "test")
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 4, "batch_norm": True})
    train_classifier(model, train, epochs=1, seed=0)
    A = ls.Weights.from_module(model)
    g = torch.Generator().manual_seed(1)
    perms = {k: torch.randperm(len(v), generator=g) for k, v in identity_permutations(model).items()}
    B = permute(A, model, perms)  # a reordering of A: OT stage 1 stays at A
    splits = {"test": test}
    rep = compare_connections(
        model, A, B, splits, methods=("linear", "ot", "arc+wa"), points=3, bn="recompute", bn_data=train
    )
    assert rep.attrs["groups"] == ["0", "3"] and rep.attrs["bn"] == "recompute"
    # WA through transitional networks: conv, conv, linear = three steps, ending at B
    assert rep.stages("arc+wa") == [1, 2, 3]
    assert rep.acc["arc+wa"]["test"][-1] == pytest.approx(rep.endpoints["test"]["B_acc"], abs=1e-12)
    a_acc = rep.endpoints["test"]["A_acc"]
    assert rep.endpoints["test"]["B_acc"] == pytest.approx(a_acc, abs=1e-12)
    np.testing.assert_allclose(rep.acc["ot"]["test"][rep.stage["ot"] == 1], a_acc, atol=1e-12)
    # the straight line between two reorderings passes through other networks
    assert rep.worst_acc("linear", "test") < a_acc


def test_flow_connection_models_join_the_table(pair, splits):
    from landscape.connect.flows import fit_flows_for, flow_groups, flow_path

    model, A, B = pair
    groups = flow_groups(model)
    flows = fit_flows_for(model, [A, B], groups, epochs=2)
    rep = compare_connections(
        model, A, B, splits, methods=("arc",), connection_models={"Flow (realnvp)": (flows, groups)}, points=5
    )
    assert rep.methods == ["arc", "Flow (realnvp)"]
    direct = ls.evaluate(model, flow_path(A, B, groups, flows, np.linspace(0, 1, 5)), splits["test"], progress=False)
    np.testing.assert_allclose(rep.acc["Flow (realnvp)"]["test"], direct["acc"], atol=1e-12)
    e = rep.endpoints["test"]
    assert rep.acc["Flow (realnvp)"]["test"][[0, -1]].tolist() == pytest.approx([e["A_acc"], e["B_acc"]], abs=1e-12)
    with pytest.raises(ValueError, match="connection model names"):
        compare_connections(model, A, B, splits, methods=("arc",), connection_models={"arc": (flows, groups)})
