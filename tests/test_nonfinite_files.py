"""Non-finite and missing values in result files: plots, warnings, summaries, ``landscape info``
and the resume comparison tell them apart (issue 17)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from landscape import io as lio

ATTRS = {"seed": 0}


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
