"""Tests of landscape.connect.structure: one traced structure per model, its groups and MLP view,
and the Path results of the OT connection."""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.connect import OTPath, Path, linear_chain, ot_path, permute, transposition_path
from landscape.connect.graph import trace_groups
from landscape.connect.structure import UnsupportedModelError, structure, traced


class _OwnForward(nn.Module):
    """A plain chain written as its own forward (not an nn.Sequential)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x) + x)


def test_one_structure_per_model_on_its_one_trace_and_a_new_one_after_a_change():
    model = ls.build_model("mlp", {"widths": [8, 6]})
    s = structure(model)
    assert structure(model) is s and s.graph is traced(model)
    assert [g.name for g in s.groups] == s.chain.hidden == ["1", "3"]
    model[3] = nn.Linear(8, 7)  # a new hidden width: a new trace and structure
    model[5] = nn.Linear(7, 10)
    s2 = structure(model)
    assert s2 is not s and s2.graph is traced(model)
    assert [(g.name, g.size) for g in s2.groups] == [("1", 8), ("3", 7)]


def test_the_chain_is_read_from_the_trace_whatever_writes_the_forward():
    s = structure(_OwnForward())
    assert s.chain.names == ["fc1", "fc2"] and [n for n, _ in s.chain.modules] == ["fc1", "act", "fc2"]
    assert [(g.name, g.size) for g in s.groups] == [("fc1", 5)]
    with pytest.raises(ValueError, match="model is a _Skip whose forward has call_function 'add'"):
        linear_chain(_Skip())
    assert structure(_Skip()).chain is None


def test_an_mlp_with_batchnorm_has_no_chain_but_groups_with_the_batchnorm_channels():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    s = structure(model)
    assert s.chain is None and s.chain_error.startswith("module '1' is a BatchNorm1d")
    assert [p.name for p in s.groups[0].parts] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "3.weight",
    ]


def test_a_prelu_with_one_parameter_passes_the_channels_and_permuting_keeps_the_function():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.PReLU(), nn.Linear(5, 3)).double()
    assert [(g.name, g.size) for g in trace_groups(model)] == [("1", 5)]
    w = ls.Weights.from_module(model)
    v = permute(w, model, {"1": torch.tensor([4, 2, 0, 1, 3])})
    x = torch.randn(6, 8, dtype=torch.float64)
    f = lambda w: torch.func.functional_call(model, dict(w), (x,))
    assert not torch.equal(v["1.weight"], w["1.weight"])
    torch.testing.assert_close(f(v), f(w), rtol=0, atol=1e-12)
    with pytest.raises(UnsupportedModelError, match="module PReLU"):
        trace_groups(nn.Sequential(nn.Linear(8, 5), nn.PReLU(5), nn.Linear(5, 3)))


def test_an_unknown_group_is_named_with_the_models_groups():
    model = ls.build_model("small_cnn", {"width": 4})
    w = ls.Weights.from_module(model)
    with pytest.raises(ValueError, match=r"layer 'fc' is not a hidden layer of this model; .*\['0', '3'\]"):
        permute(w, model, {"fc": torch.arange(4)})


def test_ot_path_is_one_path_of_two_stages_with_the_former_attributes():
    torch.manual_seed(1)
    model = ls.build_model("mlp", {"widths": [6]}).double()
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [6]}).double())
    path = ot_path(A, B, model, [0.0, 0.5, 1.0], swap_points=1)
    assert isinstance(path, Path) and OTPath is Path and path.method == "ot"
    K1, K2 = path.stage1.K, path.stage2.K
    assert path.K == K1 + K2 - 1 and path.labels[1] == "swaps of two neurons"
    assert path.stage.tolist() == [1] * K1 + [2] * (K2 - 1)
    assert np.all(path.t[:K1] <= 0.5) and np.all(path.t[K1:] > 0.5) and path.t[-1] == 1.0
    for k in range(K1):  # the joined points are the stages' points, bit for bit
        assert torch.equal(path.weights(k).flatten(), path.stage1.weights(k).flatten())
    for k in range(1, K2):
        assert torch.equal(path.weights(K1 - 1 + k).flatten(), path.stage2.weights(k).flatten())
    t, joined = path.joined()
    assert np.array_equal(t, path.t) and joined.K == path.K
    assert torch.equal(path.weights(path.K - 1).flatten(), B.flatten())


def test_transposition_path_unpacks_as_before_and_keeps_its_swaps():
    model = ls.build_model("mlp", {"widths": [5]})
    B = ls.Weights.from_module(model)
    path = transposition_path(B, model, {"1": torch.tensor([1, 0, 2, 4, 3])}, swap_points=0)
    points, t, swaps = path
    assert swaps == path.swaps == [("1", 0, 1), ("1", 3, 4)]
    assert t.tolist() == [0.0, 0.5, 1.0] and points.K == 3 and path.method == "transpositions"
