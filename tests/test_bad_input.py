"""Bad input through the Python API: one specific exception with a message naming what arrived
and what was expected, raised before any work (issue 17, first items)."""

import pytest
import torch

import landscape as ls
import landscape.ensembles  # noqa: F401 - ls.ensembles below
import landscape.train  # noqa: F401


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


# --------------------------------------------------------------------------- a table of API calls
from landscape.batches import BatchError, DataError  # noqa: E402
from landscape.io import ResultExistsError, ResultFileError  # noqa: E402
from landscape.models import ModelSpecError  # noqa: E402
from landscape.weights import CheckpointError  # noqa: E402


def _api_cases(tmp):
    """(name, call, exception class, pattern of the one-line message)."""
    m = _mlp(8)
    w, w2 = ls.Weights.from_module(m), ls.Weights.from_module(_mlp(8))
    data = _data()
    ckpt = tmp / "wide.pt"
    torch.save(_mlp(16).state_dict(), ckpt)
    (tmp / "notes.txt").write_text("hello\n")
    (tmp / "empty.pt").write_bytes(b"")
    done = tmp / "done.h5"
    ls.evaluate(m, w, data, progress=False, out=str(done))
    plane = ls.directions.random_plane(w, seed=0)
    return [
        (
            "missing checkpoint",
            lambda: ls.load_checkpoint(tmp / "nosuch.pt", m),
            CheckpointError,
            r"'.*nosuch\.pt' does not exist",
        ),
        (
            "checkpoint of another width",
            lambda: ls.load_checkpoint(ckpt, m),
            CheckpointError,
            r"key '1\.weight' has shape \(16, 4\) in the checkpoint and \(8, 4\) in the model",
        ),
        ("empty checkpoint", lambda: ls.load_checkpoint(tmp / "empty.pt", m), CheckpointError, r"is empty \(0 bytes\)"),
        (
            "text as checkpoint",
            lambda: ls.load_checkpoint(tmp / "notes.txt", m),
            CheckpointError,
            r"not a readable PyTorch checkpoint",
        ),
        (
            "unknown data spec",
            lambda: ls.load_data("nosuch:spec", "test"),
            DataError,
            r"unknown data spec 'nosuch:spec' \(expected",
        ),
        (
            "unknown split",
            lambda: ls.load_data("digits", "val"),
            DataError,
            r"split 'val' is not one of \['train', 'test', 'all'\]",
        ),
        (
            "unknown model",
            lambda: ls.build_model("nosuch", {}),
            ModelSpecError,
            r"unknown model 'nosuch' \(expected one of",
        ),
        (
            "unknown metric",
            lambda: ls.evaluate(m, w, data, metrics=["nosuch"], progress=False),
            ValueError,
            r"unknown metric 'nosuch'; expected one of",
        ),
        (
            "unknown path",
            lambda: ls.evaluate(m, w, data, path="gpu", progress=False),
            ValueError,
            r"path should be one of .*got 'gpu'",
        ),
        (
            "unknown bn",
            lambda: ls.evaluate(m, w, data, bn="nosuch", progress=False),
            ValueError,
            r"bn should be one of .*got 'nosuch'",
        ),
        (
            "unknown precision",
            lambda: ls.evaluate(m, w, data, precision="fp8", progress=False),
            ValueError,
            r"precision should be one of .*got 'fp8'",
        ),
        (
            "one-shot iterator",
            lambda: ls.evaluate(m, w, iter([data]), progress=False),
            BatchError,
            r"list_iterator is a one-shot iterator",
        ),
        (
            "no data",
            lambda: ls.evaluate(m, w, None, progress=False),
            BatchError,
            r"NoneType is not a data set; expected",
        ),
        (
            "inputs and targets of other lengths",
            lambda: ls.evaluate(m, w, (torch.randn(6, 4), torch.randint(0, 3, (5,))), progress=False),
            DataError,
            r"data has 6 inputs but 5 targets; expected the same number",
        ),
        (
            "empty data",
            lambda: ls.evaluate(m, w, (torch.randn(0, 4), torch.randint(0, 3, (0,))), progress=False),
            DataError,
            r"data is empty \(0 samples\)",
        ),
        (
            "unknown normalization",
            lambda: ls.directions.random_plane(w, norm="nosuch"),
            ValueError,
            r"norm should be one of .*got 'nosuch'",
        ),
        (
            "three dimensions",
            lambda: ls.directions.random_plane(w, dims=3),
            ValueError,
            r"dims should be 1 or 2, got 3",
        ),
        (
            "three-point plane of a repeated checkpoint",
            lambda: ls.directions.three_point_plane(w, w, w2),
            ValueError,
            r"the first two checkpoints are identical",
        ),
        (
            "PCA of one checkpoint",
            lambda: ls.directions.pca_plane([w]),
            ValueError,
            r"needs at least 3 checkpoints .* got 1",
        ),
        (
            "negative learning rate",
            lambda: ls.ensembles.sse(m, data, epochs=2, cycles=1, lr=-0.1),
            ValueError,
            r"lr should be a positive number, got -0\.1",
        ),
        (
            "momentum of one",
            lambda: ls.train.train_classifier(m, data, epochs=1, momentum=1.0),
            ValueError,
            r"momentum should be a number in \[0, 1\), got 1\.0",
        ),
        (
            "negative bends",
            lambda: ls.curves.Curve(w, w2, n_bends=-1),
            ValueError,
            r"n_bends should be a non-negative integer, got -1",
        ),
        (
            "missing result file",
            lambda: ls.open_result(tmp / "nosuch.h5"),
            ResultFileError,
            r"nosuch\.h5' does not exist",
        ),
        (
            "text as result file",
            lambda: ls.open_result(tmp / "notes.txt"),
            ResultFileError,
            r"not an HDF5 file .*expected a landscape result file",
        ),
        (
            "existing output",
            lambda: ls.compute_surface(
                m, plane, [0.0, 1.0], [0.0, 1.0], splits={"test": data}, out=str(done), progress=False
            ),
            ResultExistsError,
            r"done\.h5' already exists",
        ),
        (
            "no splits",
            lambda: ls.compute_surface(m, plane, [0.0, 1.0], [0.0, 1.0], splits={}, progress=False),
            ValueError,
            r"splits is empty; expected at least one",
        ),
    ]


def test_api_bad_inputs_raise_their_class_with_one_line_and_touch_no_file(tmp_path, folder_state):
    cases = _api_cases(tmp_path)
    assert len(cases) >= 20
    before = folder_state(tmp_path)
    for name, call, cls, pattern in cases:
        with pytest.raises(cls, match=pattern) as info:
            call()
        assert len(str(info.value).strip().splitlines()) == 1, name
    assert folder_state(tmp_path) == before
