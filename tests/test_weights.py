"""Weights, layouts, safe loading and point sets."""

import collections

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.weights import CheckpointError, read_state_dict


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.deconv = nn.ConvTranspose2d(4, 2, 2)
        self.fc = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.ones(1))


def test_layout_kinds_and_filter_dims():
    layout = ls.Layout.from_module(_Net())
    kinds = {e.name: (e.kind, e.filter_dim) for e in layout}
    assert kinds["conv.weight"] == ("weight", 0)
    assert kinds["deconv.weight"] == ("weight", 1)
    assert kinds["fc.bias"] == ("bias", None)
    assert kinds["bn.weight"][0] == "bn_weight"
    assert kinds["bn.running_var"][0] == "bn_running_var"
    assert kinds["bn.num_batches_tracked"][0] == "bn_count"
    assert kinds["scale"][0] == "param"
    assert not layout["bn.num_batches_tracked"].flat
    assert layout["bn.running_mean"].flat and not layout["bn.running_mean"].is_parameter
    n_float = sum(t.numel() for t in _Net().state_dict().values() if t.is_floating_point())
    assert layout.size == n_float
    assert int(layout.mask(["bn_running_mean"]).sum()) == 4


def test_flatten_roundtrip():
    net = _Net()
    w = ls.Weights.from_module(net)
    back = w.unflatten(w.flatten())
    for k, v in net.state_dict().items():
        assert torch.equal(back[k], v)


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model_state": sd, "optimizer_state": {}},
        lambda sd: {"model": sd},
        lambda sd: collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
)
def test_load_accepts_usual_wrappers(tmp_path, wrap):
    net = _Net()
    path = _save(wrap(net.state_dict()), tmp_path / "c.pt")
    w = ls.load_checkpoint(path, _Net())
    for k, v in net.state_dict().items():
        assert torch.equal(w[k], v)
    assert w.source == path and len(w.sha256) == 64


def test_load_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    net = _Net()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "c.safetensors"))
    w = ls.load_checkpoint(tmp_path / "c.safetensors", _Net())
    assert torch.equal(w["fc.weight"], net.fc.weight)


def test_mismatched_checkpoint_names_key_and_shapes(tmp_path):
    sd = _Net().state_dict()
    sd["fc.weight"] = torch.zeros(3, 9)
    path = _save(sd, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"'fc.weight' has shape \(3, 9\) in the checkpoint and \(3, 8\) in the model"
    ):
        ls.load_checkpoint(path, _Net())
    sd = _Net().state_dict()
    del sd["conv.bias"]
    with pytest.raises(CheckpointError, match="'conv.bias'.*in the model but not in the checkpoint"):
        ls.load_checkpoint(_save(sd, tmp_path / "missing.pt"), _Net())
    sd = _Net().state_dict()
    sd["extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="'extra.weight'.*in the checkpoint but not in the model"):
        ls.load_checkpoint(_save(sd, tmp_path / "extra.pt"), _Net())


class _Opaque:
    def __init__(self):
        self.note = "not a tensor"


def test_pickle_checkpoint_needs_trust(tmp_path):
    net = _Net()
    path = _save({"state_dict": net.state_dict(), "extra": _Opaque()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects.*trust=True.*--trust-checkpoint"):
        ls.load_checkpoint(path, _Net())
    w = ls.load_checkpoint(path, _Net(), trust=True)
    assert torch.equal(w["fc.bias"], net.fc.bias)


def test_missing_and_garbage_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(_save({"epoch": 1}, tmp_path / "empty.pt"))


def test_nonfinite_weights_are_reported(tmp_path):
    sd = _Net().state_dict()
    sd["fc.weight"][0, 0] = float("nan")
    sd["conv.bias"][1] = float("inf")
    with pytest.warns(UserWarning, match=r"NaN/Inf values in 2 tensor\(s\): conv.bias, fc.weight"):
        ls.load_checkpoint(_save(sd, tmp_path / "nan.pt"), _Net())


def test_save_weights_never_overwrites_without_force(tmp_path):
    net = _Net()
    path = tmp_path / "w.pt"
    ls.save_weights(net.state_dict(), path)
    with pytest.raises(FileExistsError, match="already exists"):
        ls.save_weights(net.state_dict(), path)
    ls.save_weights(_Net().state_dict(), path, force=True)
    assert not torch.equal(ls.load_checkpoint(path, _Net())["fc.weight"], net.fc.weight)


def test_pointset_shapes_and_errors():
    a, b = ls.Weights.from_module(_Net()), ls.Weights.from_module(_Net())
    ps = ls.PointSet.from_weights([a, b], [[0.25, 0.75], [2.0, -1.0]])
    t = ps.tensors()
    assert t["conv.weight"].shape == (2, 4, 3, 3, 3)
    torch.testing.assert_close(t["fc.weight"][0], 0.25 * a["fc.weight"] + 0.75 * b["fc.weight"])
    torch.testing.assert_close(t["fc.weight"][1], 2 * a["fc.weight"] - b["fc.weight"])
    assert torch.equal(t["bn.num_batches_tracked"][1], a["bn.num_batches_tracked"])
    assert ps.basis_tensor("fc.weight").shape == (2, 3, 8)
    g = ps.gram()
    torch.testing.assert_close(g[0, 1], (a.flatten().double() @ b.flatten().double()))
    with pytest.raises(ValueError, match=r"coeffs should have shape \[K, 2\]"):
        ls.PointSet.from_weights([a, b], [[1, 0, 0]])
    other = ls.Weights.from_module(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="different layout"):
        ls.PointSet.from_weights([a, other])


def test_pointset_flat_sparse_coefficients_match_the_dense_product():
    # OT swap paths: a large basis and two non-zeros per row take the sparse sum
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 5, "widths": [7], "num_classes": 3})
    layout = ls.Weights.from_module(model).layout
    J = 30
    basis = torch.randn(J, layout.size, dtype=torch.float64)
    C = np.zeros((40, J))
    for k in range(40):
        j = k % (J - 1)
        C[k, j], C[k, j + 1] = 1 - k / 40, k / 40
    C[5] = 0.0
    C[5, 7] = 1.0  # one-hot: copied bit for bit
    pts = ls.PointSet(basis, C, layout)
    dense = torch.as_tensor(C) @ basis
    torch.testing.assert_close(pts.flat(), dense, rtol=1e-12, atol=1e-12)
    assert torch.equal(pts.flat([5])[0], basis[7])
    # a dense coefficient matrix over the same basis takes the matrix product
    full = ls.PointSet(basis, np.random.default_rng(0).random((4, J)), layout)
    torch.testing.assert_close(full.flat(), torch.as_tensor(full.coeffs) @ basis)
    # one entry from its own basis columns equals that entry of the full points
    for name in ("1.weight", "3.bias"):
        torch.testing.assert_close(pts.entry(name), pts.tensors()[name], rtol=0, atol=0)
    with pytest.raises(KeyError):
        pts.entry("nope.weight")
