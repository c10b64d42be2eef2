"""Bad input through the Python API: one specific exception with a message naming what arrived
and what was expected, raised before any work (issue 17, first items)."""

import pytest
import torch

import landscape as ls


def _mlp(width):
    return ls.build_model("mlp", {"in_features": 4, "widths": [width], "num_classes": 3})


def _data():
    return torch.randn(6, 4), torch.randint(0, 3, (6,))


def test_points_of_a_wider_model_are_refused():
    """Names alone matched before: a 128-wide point set ran on a 64-wide model and returned
    the wider network's numbers."""
    wide = ls.Weights.from_module(_mlp(128))
    with pytest.raises(ValueError, match=r"'1\.weight' is \[128, 4\] in the points and \[64, 4\] in the model"):
        ls.evaluate(_mlp(64), wide, _data(), progress=False)


@pytest.mark.parametrize("name", ["points_per_pass", "batch_size"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_chunk_sizes_must_be_positive_integers(name, value):
    w = ls.Weights.from_module(_mlp(8))
    with pytest.raises(ValueError, match=rf"{name} should be a positive integer or None, got {value!r}"):
        ls.evaluate(_mlp(8), w, _data(), progress=False, **{name: value})


@pytest.mark.parametrize("epochs", [0, -3])
def test_curve_fit_without_epochs_is_refused(epochs):
    """It wrote an untrained "fitted" curve before."""
    m = _mlp(8)
    a, b = ls.Weights.from_module(m), ls.Weights.from_module(_mlp(8))
    curve = ls.curves.Curve(a, b, n_bends=1)
    with pytest.raises(ValueError, match=rf"epochs should be a positive integer, got {epochs}"):
        ls.curves.fit_curve(m, curve, _data(), epochs=epochs, progress=False)


@pytest.mark.parametrize("xs", [[0.0, float("nan")], [float("inf")], []])
def test_grid_coordinates_must_be_finite(xs):
    m = _mlp(8)
    plane = ls.directions.random_plane(ls.Weights.from_module(m), seed=0)
    with pytest.raises(ValueError, match=r"grid coordinates x = .* should be finite numbers"):
        ls.compute_surface(m, plane, xs, [0.0, 1.0], splits={"test": _data()}, progress=False)
