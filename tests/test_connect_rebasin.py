"""Tests of landscape.connect.rebasin: Git Re-Basin's weight matching and activation matching.

Oracles: permutations planted with permute_groups (matching must undo them exactly), a brute
force over every permutation of one small layer, NumPy's corrcoef on activations computed by
hand, and the loss of A itself along the line to its permuted copy.
"""

import itertools

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.connect import METHODS, compare_connections, registry
from landscape.connect.graph import permute_groups, trace_groups
from landscape.connect.rebasin import (
    activation_matching,
    aligned_path,
    channel_correlation,
    weight_matching,
)
from landscape.connect.structure import BATCHNORMS
from landscape.demo import train_classifier

# (model spec, kwargs, input shape of one sample)
MODELS = {
    "mlp": ("mlp", {"widths": [24, 12]}, (64,)),
    "small_cnn": ("small_cnn", {"width": 4}, (1, 8, 8)),
    "resnet20": ("resnet20", {"width": 4, "in_channels": 1}, (1, 8, 8)),
}


def _model(key: str, seed: int = 0) -> torch.nn.Module:
    spec, kwargs, _ = MODELS[key]
    torch.manual_seed(seed)
    model = ls.build_model(spec, kwargs)
    for m in model.modules():  # BatchNorm away from its init, so every channel is distinct
        if isinstance(m, BATCHNORMS):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.5)
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _planted(key: str, seed: int = 0):
    model = _model(key, seed)
    A = ls.Weights.from_module(model)
    groups = trace_groups(model)
    g = torch.Generator().manual_seed(100 + seed)
    planted = {grp.name: torch.randperm(grp.size, generator=g) for grp in groups}
    assert all(not torch.equal(p, torch.arange(len(p))) for p in planted.values())
    return model, A, permute_groups(A, groups, planted), groups, planted


def _inputs(key: str, n: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *MODELS[key][2], generator=torch.Generator().manual_seed(seed))


def _assert_undone(A, B, groups, planted, perms):
    """``perms`` undo ``planted``: they are its inverse, and permuting B by them gives A bit for bit."""
    assert set(perms) == set(planted)
    for name, p in planted.items():
        assert torch.equal(perms[name], torch.argsort(p)), name
    back = permute_groups(B, groups, perms)
    for k in A.layout.names():
        assert torch.equal(back[k], A[k]), k


# ---------------------------------------------------------------------------- planted permutations
@pytest.mark.parametrize("key", list(MODELS))
def test_weight_matching_recovers_planted_permutations(key):
    _, A, B, groups, planted = _planted(key)
    model = _model(key)
    _assert_undone(A, B, groups, planted, weight_matching(A, B, model))


@pytest.mark.parametrize("key", list(MODELS))
def test_activation_matching_recovers_planted_permutations(key):
    model, A, B, groups, planted = _planted(key)
    _assert_undone(A, B, groups, planted, activation_matching(A, B, model, _inputs(key)))


@pytest.mark.parametrize("key", ["small_cnn", "resnet20"])
def test_the_line_to_the_matched_copy_has_constant_loss(key):
    model, A, B, groups, planted = _planted(key)
    x = _inputs(key, 128)
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(2))
    data = (x, y)
    t = np.linspace(0.0, 1.0, 5)
    loss_a = ls.evaluate(model, A, data, ("loss",), precision="fp64", progress=False)["loss"][0]
    for method, perms in (
        ("weight-matching", weight_matching(A, B, model)),
        ("activation-matching", activation_matching(A, B, model, x)),
    ):
        path = aligned_path(A, B, model, perms, t, method=method)
        loss = ls.evaluate(model, path, data, ("loss",), precision="fp64", progress=False)["loss"]
        np.testing.assert_allclose(loss, loss_a, rtol=1e-6, atol=0)
    # without matching the line to the permuted copy leaves A's loss in the middle
    plain = ls.connect.linear_path(A, B, t)
    loss = ls.evaluate(model, plain, data, ("loss",), precision="fp64", progress=False)["loss"]
    assert abs(loss[2] - loss_a) > 1e-3 * abs(loss_a)


# ---------------------------------------------------------------------------- the objective
def test_weight_matching_of_one_layer_is_the_best_of_every_permutation():
    """With one hidden layer the objective is linear in its permutation: the first sweep finds
    the best of all 6! permutations (a brute force over them, in float64)."""
    model = ls.build_model("mlp", {"widths": [6]})
    A = ls.Weights.from_module(model)
    torch.manual_seed(5)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [6]}))
    a = [A[k].double() for k in ("1.weight", "1.bias", "3.weight")]
    b = [B[k].double() for k in ("1.weight", "1.bias", "3.weight")]

    def objective(p):
        p = torch.tensor(p)
        return float((a[0] * b[0][p]).sum() + (a[1] * b[1][p]).sum() + (a[2] * b[2][:, p]).sum())

    best = max(itertools.permutations(range(6)), key=objective)
    perms = weight_matching(A, B, model)
    assert perms["1"].tolist() == list(best)
    assert objective(best) > objective(range(6))


def test_weight_matching_raises_the_objective_and_the_seed_reproduces_it():
    model = _model("resnet20", 0)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_model("resnet20", 1))
    groups = trace_groups(model)

    def inner(w):  # the objective: <A, P(B)> over every tensor of a group, each counted once
        names = {p.name for g in groups for p in g.parts}
        return sum(float((A[k].double() * w[k].double()).sum()) for k in names)

    first = weight_matching(A, B, model, seed=3)
    again = weight_matching(A, B, model, seed=3)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert inner(permute_groups(B, groups, first)) > inner(B)
    one = weight_matching(A, B, model, seed=3, max_iter=1)
    assert inner(permute_groups(B, groups, first)) >= inner(permute_groups(B, groups, one)) - 1e-9


def test_channel_correlation_is_pearson_over_pooled_samples():
    """On a one-hidden-layer MLP the group's activations are the Linear output and its ReLU:
    the correlation pools both as samples (NumPy's corrcoef on the stacked rows)."""
    model = ls.build_model("mlp", {"widths": [5]})
    A = ls.Weights.from_module(model)
    torch.manual_seed(3)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [5]}))
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(4))

    def samples(w):  # the network's float32 activations, correlated in float64
        pre = torch.nn.functional.linear(x, w["1.weight"], w["1.bias"]).double()
        return np.concatenate([pre.numpy(), pre.clamp_min(0).numpy()])

    want = np.corrcoef(samples(A).T, samples(B).T)[:5, 5:]
    got = channel_correlation(A, B, model, x)["1"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # batches=1 reads the first BATCH_SIZE samples alone
    one = channel_correlation(A, B, model, x, batches=1)["1"].numpy()
    assert not np.allclose(one, want, rtol=1e-6, atol=1e-8)


def test_activation_matching_takes_any_data_and_keeps_the_models_mode():
    model, A, B, groups, planted = _planted("small_cnn")
    x = _inputs("small_cnn", 96)
    y = torch.zeros(96, dtype=torch.long)
    model.train()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=40)
    for data in (x, (x, y), loader):
        _assert_undone(A, B, groups, planted, activation_matching(A, B, model, data))
    A64, B64 = A.to(dtype=torch.float64), B.to(dtype=torch.float64)  # float32 inputs follow the weights
    _assert_undone(A64, B64, groups, planted, activation_matching(A64, B64, model, x))
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------------------------- trained networks
@pytest.fixture(scope="module")
def digits():
    return {"train": ls.load_data("digits", "train"), "test": ls.load_data("digits", "test")}


@pytest.fixture(scope="module")
def trained_pair(digits):
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = ls.build_model("mlp", {"widths": [64, 64]})
        train_classifier(net, digits["train"], epochs=4, seed=seed)
        nets.append(net)
    return nets[0], ls.Weights.from_module(nets[0]), ls.Weights.from_module(nets[1])


def _barrier(loss):
    return float(
        np.max(loss - ((1 - np.linspace(0, 1, len(loss))) * loss[0] + np.linspace(0, 1, len(loss)) * loss[-1]))
    )


def test_matching_lowers_the_barrier_between_independently_trained_mlps(trained_pair, digits):
    model, A, B = trained_pair
    t = np.linspace(0.0, 1.0, 11)
    data = digits["train"]
    ev = dict(metrics=("loss",), precision="fp64", progress=False)
    plain = _barrier(ls.evaluate(model, ls.connect.linear_path(A, B, t), data, **ev)["loss"])
    assert plain > 0.05  # the two networks are not linearly connected as they are
    for method, perms in (
        ("weight-matching", weight_matching(A, B, model)),
        ("activation-matching", activation_matching(A, B, model, data)),
    ):
        path = aligned_path(A, B, model, perms, t, method=method)
        loss = ls.evaluate(model, path, data, **ev)["loss"]
        assert _barrier(loss) < 0.5 * plain, method


def test_compare_connections_writes_the_rebasin_rows(trained_pair, digits, tmp_path):
    model, A, B = trained_pair
    methods = ("weight-matching", "activation-matching")
    out = tmp_path / "c.h5"
    rep = compare_connections(model, A, B, digits, methods=methods, points=5, out=out)
    assert rep.methods == list(methods) and rep.skipped == {}
    assert rep.labels["weight-matching"] == "Weight matching"
    assert rep.labels["activation-matching"] == "Activation matching"
    for m in methods:
        for s in ("train", "test"):
            e = rep.endpoints[s]
            assert rep.acc[m][s][0] == pytest.approx(e["A_acc"], abs=1e-12)
            assert rep.acc[m][s][-1] == pytest.approx(e["B_acc"], abs=1e-12)  # B' computes B's function
            assert rep.loss[m][s][-1] == pytest.approx(e["B_loss"], rel=1e-5)
    back = ls.connect.ConnectionReport.load(out)
    assert back.labels == rep.labels and set(back.methods) == set(methods)
    assert all(len(rep.t[m]) == 5 and rep.worst_acc(m, "test") > 0.5 for m in methods)


def test_the_registry_holds_both_methods_after_the_papers_six():
    assert METHODS == ("linear", "arc", "linear+wa", "arc+wa", "ot", "ot+wa")
    assert registry.names()[6:8] == ("weight-matching", "activation-matching")
    assert registry.get("weight-matching").needs_data is False
    assert registry.get("activation-matching").needs_data is True
    assert registry.label("weight-matching") == "Weight matching"
    assert registry.label("activation-matching") == "Activation matching"


def test_the_registered_methods_return_an_aligned_line():
    model, A, B, groups, planted = _planted("mlp")
    t = [0.0, 0.5, 1.0]
    x = _inputs("mlp")
    for name, data in (("weight-matching", None), ("activation-matching", x)):
        path = registry.get(name)(A, B, model, data, t=t, wa_form="paper", neuron="blc")
        assert path.method == name and path.stages == [1] and path.K == 3
        _assert_undone(A, B, groups, planted, path.permutations)
        for k in A.layout.names():
            assert torch.equal(path.point(2)[k], A[k]), (name, k)  # the aligned copy of B is A


# ---------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_clear_error():
    model, A, B, groups, _ = _planted("mlp")
    other = ls.Weights.from_module(ls.build_model("mlp", {"widths": [24, 13]}))
    with pytest.raises(ValueError, match="shape"):
        weight_matching(A, other, model)
    wide = ls.build_model("mlp", {"widths": [25, 12]})
    with pytest.raises(ValueError, match="shape"):
        weight_matching(A, B, wide)
    with pytest.raises(ValueError, match="max_iter"):
        weight_matching(A, B, model, max_iter=0)
    with pytest.raises(ValueError, match="batches"):
        activation_matching(A, B, model, _inputs("mlp"), batches=0)
    with pytest.raises(ValueError, match="needs data"):
        registry.get("activation-matching")(A, B, model, None, t=[0.0, 1.0])
    with pytest.raises(ValueError, match="no data"):
        activation_matching(A, B, model, torch.zeros(0, 64))
