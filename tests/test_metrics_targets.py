"""Targets and inputs that do not fit the model: one line naming what arrived and what was
expected, as a MetricError or DataError (ValueError subclasses), on every path, from the API and
the CLI (exit code 2, no traceback, no result file left behind)."""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.batches import DataError
from landscape.cli import main
from landscape.metrics import MetricError

PATHS = ["fused", "loop", "vmap"]
MLP = {"in_features": 4, "widths": [16], "num_classes": 3}


def _mlp_points():
    torch.manual_seed(0)
    m = ls.build_model("mlp", MLP)
    w = ls.Weights.from_module(m)
    return m, [w, w]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("metric", ["loss", "acc"])
@pytest.mark.parametrize("label", [7, 3, -3])
def test_labels_outside_the_classes(path, metric, label):
    """IndexError "Target 7 is out of bounds" for the loss before, an accuracy for acc."""
    m, points = _mlp_points()
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    y[5] = label
    msg = (
        rf"metric '{metric}': targets outside the 3 classes of the outputs, 1 of 12 \(got {label}\); "
        r"expected class indices 0\.\.2, or -100 for samples not counted"
    )
    with pytest.raises(MetricError, match=msg):
        ls.evaluate(m, points, (x, y), [metric], path=path, progress=False)


def test_several_labels_outside_name_their_range():
    m, points = _mlp_points()
    y = torch.tensor([0, 1, 9, 2, 4, -5])
    with pytest.raises(MetricError, match=r"3 of 6 \(got -5 to 9\)"):
        ls.evaluate(m, points, (torch.randn(6, 4), y), ["acc"], progress=False)


@pytest.mark.parametrize("path", PATHS)
def test_float_labels_for_a_classifier(path):
    m, points = _mlp_points()
    y = (torch.arange(12) % 3).float()
    with pytest.raises(MetricError, match=r"needs integer class targets, got torch.float32 targets \[12\]"):
        ls.evaluate(m, points, (torch.randn(12, 4), y), path=path, progress=False)


@pytest.mark.parametrize("path", PATHS)
def test_wrong_input_width(path):
    """RuntimeError "mat1 and mat2 shapes cannot be multiplied (1x5 and 4x16)" before."""
    m, points = _mlp_points()
    msg = (
        r"the data does not fit the model: its layer '1' \(Linear\) takes 4 input features \(the last "
        r"dimension\), got Tensor\[1, 5\] from samples of shape \[5\]"
    )
    with pytest.raises(DataError, match=msg):
        ls.evaluate(m, points, (torch.randn(12, 5), torch.arange(12) % 3), path=path, progress=False)


def test_wrong_image_channels():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    w = ls.Weights.from_module(m)
    x = torch.randn(5, 1, 8, 8)
    msg = r"layer '0' \(Conv2d\) takes 3 channels in \[N, C, \*, \*\] inputs .* got Tensor\[1, 1, 8, 8\]"
    with pytest.raises(DataError, match=msg):
        ls.evaluate(m, w, (x, torch.zeros(5, dtype=torch.long)), path="loop", progress=False)


class TinyLM(nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, 6)
        self.head = nn.Linear(6, vocab)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.emb(input_ids))


def test_token_ids_beyond_the_embedding():
    m = TinyLM()
    ids = torch.tensor([[1, 2, 30, 4]])
    with pytest.raises(DataError, match=r"layer 'emb' \(Embedding\) has 11 rows \(ids 0\.\.10\), got ids 1 to 30"):
        ls.evaluate(m, ls.Weights.from_module(m), [{"input_ids": ids}], ["token_loss"], progress=False)


def test_token_labels_beyond_the_vocabulary():
    m = TinyLM()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    labels = torch.tensor([[1, 2, 12, -100, 40]])
    msg = (
        r"metric 'token_acc': counted token targets outside the 11 classes of the outputs, 2 of 3 "
        r"\(got 12 to 40\); expected token ids 0\.\.10, or -100 for positions not counted"
    )
    with pytest.raises(MetricError, match=msg):
        ls.evaluate(m, ls.Weights.from_module(m), [{"input_ids": ids, "labels": labels}], ["token_acc"], progress=False)


def test_ignored_targets_are_not_range_checked():
    """-100 marks samples not counted: no error, and the metric is over the other samples."""
    m, points = _mlp_points()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.arange(12) % 3
    y[[2, 7]] = -100
    res = ls.evaluate(m, points, (x, y), ["acc"], precision="fp64", progress=False)
    keep = y != -100
    with torch.no_grad():
        want = (m.double()(x[keep]).argmax(-1) == y[keep]).double().mean().item()
    np.testing.assert_allclose(res["acc"], [want, want], rtol=1e-12)


# --------------------------------------------------------------------------- the CLI
@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    torch.save(ls.build_model("mlp", MLP).state_dict(), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    y7 = y.copy()
    y7[5] = 7
    np.savez(tmp_path / "label7.npz", x=x, y=y7)
    np.savez(tmp_path / "float.npz", x=x, y=y.astype(np.float32))
    np.savez(tmp_path / "width5.npz", x=rng.standard_normal((40, 5)).astype(np.float32), y=y)
    return tmp_path


CLI_CASES = {
    "label7": r"metric 'loss': targets outside the 3 classes of the outputs, 1 of 40 \(got 7\); expected class",
    "float": r"metric 'loss' needs integer class targets, got torch.float32 targets \[40\]",
    "width5": r"its layer '1' \(Linear\) takes 4 input features \(the last dimension\), got Tensor\[1, 5\]",
}


@pytest.mark.parametrize("command", ["eval", "surface"])
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_targets_and_inputs(folder, capsys, monkeypatch, command, case):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = folder / "out.h5"
    argv = [command, "--ckpt", str(folder / "m.pt"), "--model", "mlp", "--model-kwargs", json.dumps(MLP)]
    argv += ["--data", str(folder / f"{case}.npz"), "--split", "all", "--out", str(out), "--no-progress"]
    if command == "surface":
        argv += ["--type", "line", "--x=-1:1:3"]
    before = sorted(p.name for p in folder.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and re.search(CLI_CASES[case], err), err
    assert sorted(p.name for p in folder.iterdir()) == before  # no result file left behind
