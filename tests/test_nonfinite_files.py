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
