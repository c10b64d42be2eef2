"""Tests of landscape.connect.registry: the connection methods by name, as compare_connections,
the result file, its figure and ``landscape connect`` read them."""

import h5py
import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main
from landscape.connect import METHODS, ConnectionReport, compare_connections, linear_path, registry
from landscape.connect.result import Path
from landscape.io import read_connections
from landscape.plot import plot_connections


@pytest.fixture(scope="module")
def splits():
    return {"test": ls.load_data("digits", "test")}


def _pair(widths):
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": list(widths)})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": list(widths)}))
    return model, A, B


@pytest.fixture
def midpoint():
    """A method registered for one test: one function and one entry."""
    seen = {}

    def halves(A, B, model, data, *, t, **options):
        """The straight line in two stages: up to the midpoint, then on to ``B``."""
        seen.update(data=data, options=options)
        t = np.asarray(t, dtype=np.float64)
        return Path(linear_path(A, B, t), t, np.where(t <= 0.5, 1, 2), ("to the middle", "from it"), method="halves")

    registry.register("halves", halves, label=lambda *, wa_form=None, **o: f"Halves ({wa_form})")
    yield seen
    registry.unregister("halves")


def test_the_paper_methods_are_registered_in_its_order():
    assert METHODS == ("linear", "arc", "linear+wa", "arc+wa", "ot", "ot+wa")
    assert registry.names()[:6] == METHODS
    assert [registry.get(m).needs_data for m in METHODS] == [False, False, True, True, False, True]
    labels = {m: registry.label(m, wa_form="paper", neuron="bl") for m in METHODS}
    assert labels == {
        "linear": "Linear",
        "arc": "Arc",
        "linear+wa": "Linear + WA (paper)",
        "arc+wa": "Arc + WA (paper)",
        "ot": "OT (b, l)",
        "ot+wa": "OT + WA (paper)",
    }
    assert registry.label("arc+wa", wa_form="bias") == "Arc + WA (bias column)"
    assert registry.row_label("Bezier (3)", wa_form="paper") == "Bezier (3)"


def test_an_unknown_or_repeated_name_gives_one_clear_error(splits):
    with pytest.raises(ValueError, match=r"unknown connection method 'spline'; registered: linear, arc, ") as e:
        registry.get("spline")
    assert len(str(e.value).splitlines()) == 1 and "ot+wa" in str(e.value)
    model, A, B = _pair([8])
    with pytest.raises(ValueError, match=r"unknown methods \['spline'\]; registered: linear, arc"):
        compare_connections(model, A, B, splits, methods=("linear", "spline"))
    with pytest.raises(ValueError, match="registered already"):
        registry.register("linear", registry.linear_connection)
    with pytest.raises(ValueError, match="without '/' or '.'"):
        registry.register("a.b", registry.linear_connection)


def test_a_registered_method_runs_through_compare_connections_into_the_file_and_the_figure(midpoint, splits, tmp_path):
    model, A, B = _pair([8])
    out = tmp_path / "conn.h5"
    rep = compare_connections(model, A, B, splits, methods=("linear", "halves"), points=5, wa_form="bias", out=out)
    # the method got every option and no data (it needs none)
    assert midpoint["data"] is None
    assert midpoint["options"] == {"wa_form": "bias", "neuron": "blc", "ridge": 0.0, "snap_ends": True}
    # same points as the straight line: the same numbers, in two stages
    np.testing.assert_array_equal(rep.acc["halves"]["test"], rep.acc["linear"]["test"])
    assert rep.stage["halves"].tolist() == [1, 1, 1, 2, 2] and rep.stage["linear"].tolist() == [0] * 5
    assert rep.label("halves") == "Halves (bias)"
    assert "| Halves (bias) (stage 2) |" in rep.markdown()
    # the file holds the labels; the figure reads them from the file alone
    back = read_connections(out)
    assert back["labels"] == {"linear": "Linear", "halves": "Halves (bias)"}
    assert "labels" not in back["attrs"]
    registry.unregister("halves")  # the figure and the report read back need no registry
    try:
        assert ConnectionReport.load(out).label("halves") == "Halves (bias)"
        legend = [line.get_label() for line in plot_connections(str(out)).axes[0].get_lines()]
        assert legend[:2] == ["Linear", "Halves (bias)"]
    finally:
        registry.register("halves", lambda *a, **k: None)  # for the fixture to remove


def test_files_without_labels_get_the_labels_of_their_time(splits, tmp_path):
    model, A, B = _pair([8])
    out = tmp_path / "old.h5"
    compare_connections(model, A, B, splits, methods=("arc", "ot"), points=3, neuron="bl", out=out)
    with h5py.File(out, "a") as f:
        del f.attrs["labels"]
    back = ConnectionReport.load(out)
    assert back.labels == {"arc": "Arc", "ot": "OT (b, l)"}
    legend = [line.get_label() for line in plot_connections(str(out)).axes[0].get_lines()]
    assert legend[:2] == ["Arc", "OT (b, l)"]
    # a report built by hand, without labels, is labelled by the registry's rule
    rep = ConnectionReport(methods=["ot", "curve"], splits=["test"], attrs={"wa-form": "paper", "ot-neuron": "blc"})
    assert [rep.label(m) for m in rep.methods] == ["OT", "curve"]


@pytest.mark.parametrize("widths", [[8], [8, 6]], ids=["one-hidden-layer", "two-hidden-layers"])
def test_each_entry_returns_a_path_with_the_t_and_stage_the_report_stores(widths, splits):
    model, A, B = _pair(widths)
    rep = compare_connections(model, A, B, splits, points=4, wa_data=splits["test"])
    X = splits["test"].x
    options = {"t": np.linspace(0.0, 1.0, 4), "wa_form": "paper", "neuron": "blc", "ridge": 0.0, "snap_ends": True}
    for m in METHODS:
        method = registry.get(m)
        path = method(A, B, model, X if method.needs_data else None, **options)
        assert isinstance(path, Path) and path.method == m
        np.testing.assert_array_equal(path.t, rep.t[m])
        want = rep.stage[m] if rep.has_stages(m) else np.ones_like(rep.stage[m])
        np.testing.assert_array_equal(path.stage, want)
        assert len(path.labels) == len(path.stages)
    assert rep.stages("ot") == [1, 2] and rep.stages("linear") == []
    if len(widths) == 1:  # the paper's two phases of WA
        assert rep.stages("arc+wa") == [1, 2] and "wa_steps" not in rep.attrs
    else:  # through transitional networks: one step per layer
        assert rep.stages("arc+wa") == [1, 2, 3] and rep.attrs["wa_steps"] == 3
        assert [w.split(":")[0] for w in registry.get("arc+wa")(A, B, model, X, **options).labels] == [
            "step 1",
            "step 2",
            "step 3",
        ]


def test_connect_help_lists_the_registered_methods_and_refuses_an_unknown_one(midpoint, tmp_path, capsys):
    assert main(["connect", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "linear, arc, linear+wa, arc+wa, ot, ot+wa, " in text  # the paper's six first, then later ones
    assert f"{', '.join(registry.names())}; or paper" in text and registry.names()[-1] == "halves"
    assert "the default) or all" in text
    argv = ["connect", "--model", "mlp", "--data", "digits", "--ckpt", "a.pt", "--ckpt", "b.pt"]
    assert main([*argv, "--methods", "linear,spline", "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown ['spline']" in err[0] and "halves" in err[0]
