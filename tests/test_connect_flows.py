"""Tests of landscape.connect.flows: neuron groups, RealNVP/IAF flows, Flow and Bijection paths."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import landscape as ls
import landscape.demo
from landscape.connect import arc_path, concatenate_paths, neuron_matrix
from landscape.connect.flows import (
    FLOW_KINDS,
    IAF,
    NeuronGroup,
    RealNVP,
    align_pool,
    aligned_flow_path,
    fit_bijection,
    fit_flow,
    fit_flows_for,
    flow_groups,
    flow_path,
    flow_path_tensors,
    ledoit_wolf,
    load_connection_model,
    mlp_groups,
    save_connection_model,
)
from landscape.connect.graph import Part, trace_groups
from landscape.connect.result import Path


def _mlp(widths, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return ls.build_model("mlp", {"in_features": 64, "widths": list(widths)}).to(dtype)


def _flow(kind, dim, **kw):
    if kind == "realnvp":
        return RealNVP(dim, n_couplings=kw.pop("depth", 4), hidden=kw.pop("hidden", 8), **kw)
    return IAF(dim, n_layers=kw.pop("depth", 2), hidden=kw.pop("hidden", 8), **kw)


def _perturb(flow, seed, scale=0.3):
    """Random non-identity parameters and a non-trivial standardisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
        flow.mean.copy_(torch.randn(flow.dim, generator=g, dtype=torch.float64))
        flow.std.copy_(0.5 + torch.rand(flow.dim, generator=g, dtype=torch.float64))
    return flow


class _ConvBN(nn.Sequential):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.next = nn.Conv2d(4, 3, 3)


_CONV_GROUP = NeuronGroup("c", [("c.weight", 0), ("c.bias", 0), ("bn.weight", 0), ("bn.bias", 0), ("next.weight", 1)])


# ---------------------------------------------------------------------------- neuron groups
def test_group_matrix_of_a_two_layer_mlp_is_the_neuron_matrix_and_assign_inverts_it():
    model = _mlp([32])
    w = ls.Weights.from_module(model)
    (g,) = mlp_groups(model)
    assert g == NeuronGroup("1", [("1.bias", 0), ("1.weight", 0), ("3.weight", 1)])
    M = g.matrix(w)
    assert torch.equal(M, neuron_matrix(w, model, "1"))
    assert (g.n(w), g.dim(w), g.sizes(w)) == (32, 75, [1, 64, 10])
    back = g.assign(w, M)
    assert list(back) == list(w) and all(torch.equal(back[k], w[k]) for k in w)
    assert back["3.bias"] is w["3.bias"]  # entries outside the group are passed through


def test_group_of_a_conv_filter_with_batchnorm_gathers_and_scatters_4d_tensors():
    torch.manual_seed(0)
    model = _ConvBN()
    w = ls.Weights.from_module(model)
    M = _CONV_GROUP.matrix(w)
    assert M.shape == (4, 18 + 1 + 1 + 1 + 27)
    i = 2
    row = torch.cat(
        [
            w["c.weight"][i].reshape(-1),
            w["c.bias"][i : i + 1],
            w["bn.weight"][i : i + 1],
            w["bn.bias"][i : i + 1],
            w["next.weight"][:, i].reshape(-1),
        ]
    )
    assert torch.equal(M[i], row)
    # scatter a changed matrix and read it back; a leading batch dimension is kept
    new = _CONV_GROUP.assign(w, 2 * M)
    assert torch.equal(new["next.weight"], 2 * w["next.weight"]) and torch.equal(new["bn.bias"], 2 * w["bn.bias"])
    assert torch.equal(_CONV_GROUP.matrix(new), 2 * M)
    pieces = _CONV_GROUP.pieces(torch.stack([M, -M, 3 * M]), w)
    assert pieces["next.weight"].shape == (3, 3, 4, 3, 3)
    assert torch.equal(pieces["next.weight"][1], -w["next.weight"])
    assert torch.equal(pieces["c.weight"][2], 3 * w["c.weight"])


def test_group_errors_name_what_arrived():
    w = ls.Weights.from_module(_mlp([8]))
    with pytest.raises(ValueError, match="'3.weight' has 10 neurons along axis 0 but '1.weight' has 8"):
        NeuronGroup("g", [("1.weight", 0), ("3.weight", 0)]).n(w)
    with pytest.raises(ValueError, match="no entry 'nope'"):
        NeuronGroup("g", [("nope", 0)]).matrix(w)
    with pytest.raises(ValueError, match="axis 2 of entry '1.weight' is out of range"):
        NeuronGroup("g", [("1.weight", 2)]).matrix(w)
    with pytest.raises(ValueError, match=r"M should have shape \[\.\.\., 8, 75\], got \[8, 74\]"):
        mlp_groups(_mlp([8]))[0].assign(w, torch.zeros(8, 74))
    with pytest.raises(ValueError, match="a part should be"):
        NeuronGroup("g", [("1.weight",)])
    with pytest.raises(ValueError, match="has no parts"):
        NeuronGroup("g", [])


def test_flow_groups_are_views_of_the_traced_groups_in_the_flows_column_order():
    one = _mlp([8])
    ((g,), (traced,)) = mlp_groups(one), trace_groups(one)
    assert g.group.name == traced.name == "1"
    assert [(p.name, p.axis) for p in traced.parts] == [("1.weight", 0), ("1.bias", 0), ("3.weight", 1)]
    assert g.parts == [("1.bias", 0), ("1.weight", 0), ("3.weight", 1)]  # the paper's (b, l, c): bias first
    deep = mlp_groups(_mlp([8, 4]))
    assert [(x.name, x.group is not None) for x in deep] == [("1", True), ("3", True), ("5", False)]
    assert deep[1].parts == [("3.weight", 0), ("3.bias", 0)] and deep[2].parts == [("5.weight", 0), ("5.bias", 0)]
    model, _ = _cnn(0)
    groups, traced = flow_groups(model), trace_groups(model)
    assert [x.name for x in groups] == [x.name for x in traced] == ["0", "3"]
    params = {n for n, _ in model.named_parameters()}
    for x, tg in zip(groups, traced):  # the written parameters: filter, bias, BatchNorm weight and bias
        assert x.parts == [(p.name, p.axis) for p in tg.parts if p.role == "out" and p.name in params]
        assert any(p.name.endswith("running_var") for p in tg.parts) and not any("running" in n for n, _ in x.parts)
    assert NeuronGroup.from_group(traced[0]) == NeuronGroup("0", [(p.name, p.axis) for p in traced[0].parts])
    fc = next(p for p in traced[1].parts if p.block > 1)  # the classifier reads flattened channels
    with pytest.raises(ValueError, match="holds blocks of 16 entries per neuron"):
        NeuronGroup.from_group(traced[1], [fc])
    with pytest.raises(ValueError, match="is not one of group '3'"):
        NeuronGroup.from_group(traced[1], [Part("x.weight", 0)])


def test_mlp_groups_of_a_deeper_mlp_cover_every_parameter_once():
    model = _mlp([16, 8])
    groups = mlp_groups(model)
    assert [g.name for g in groups] == ["1", "3", "5"]
    covered = [e for g in groups for e in g.entries()]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    w = ls.Weights.from_module(model)
    assert [g.dim(w) for g in groups] == [65, 17, 9]
    # one hidden layer: the output bias is in no group
    assert "3.bias" not in mlp_groups(_mlp([16]))[0].entries()


# ---------------------------------------------------------------------------- flows
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_untrained_flow_is_the_identity(kind):
    flow = _flow(kind, 5)
    x = torch.randn(7, 5)
    z, logdet = flow(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(7))
    assert torch.equal(flow.inverse(x), x)
    # seeded construction that leaves the global random state alone
    state = torch.random.get_rng_state()
    again, other = _flow(kind, 5), _flow(kind, 5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    p0, p1, p2 = (torch.cat([p.reshape(-1) for p in f.parameters()]) for f in (flow, again, other))
    assert torch.equal(p0, p1) and not torch.equal(p0, p2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [1, 3, 6])
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_flow_inverts_and_its_logdet_is_the_jacobian_logdet(kind, dim, dtype):
    flow = _perturb(_flow(kind, dim, hidden=16, seed=dim).to(dtype), seed=dim)
    x = 2 * torch.randn(64, dim, generator=torch.Generator().manual_seed(dim), dtype=dtype)
    z, logdet = flow(x)
    assert (z - x).abs().max() > 0.1  # not the identity any more
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(flow.inverse(z), x, rtol=tol, atol=tol)
    for k in range(2):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[k])
        sign, logabs = torch.linalg.slogdet(J)
        assert sign != 0
        torch.testing.assert_close(logdet[k], logabs, rtol=0, atol=50 * tol)
    base = -0.5 * z.pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), base + logdet)


def test_iaf_layer_is_autoregressive_latent_to_data():
    """One IAF layer's data vector x_i depends on z_1..z_i only: a lower triangular Jacobian."""
    flow = _perturb(IAF(5, n_layers=1, hidden=16).double(), seed=1)
    J = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None])[0], torch.randn(5, dtype=torch.float64))
    assert torch.equal(torch.triu(J, 1), torch.zeros(5, 5))
    assert (torch.tril(J, -1).abs() > 1e-8).sum() >= 5  # and really depends on earlier variables


def test_flow_input_errors():
    with pytest.raises(ValueError, match=r"RealNVP.forward takes a tensor \[N, 3\], got \[4, 2\]"):
        RealNVP(3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"IAF.inverse takes a tensor \[N, 3\], got \[3\]"):
        IAF(3).inverse(torch.zeros(3))
    with pytest.raises(ValueError, match="takes torch.float32 tensors .the flow's dtype., got torch.float64"):
        RealNVP(3)(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim should be an int >= 1, got 0"):
        RealNVP(0)
    with pytest.raises(ValueError, match=r"samples should be a tensor \[N >= 2, 3\]"):
        fit_flow(RealNVP(3), torch.zeros(10, 4))


@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_fit_flow_learns_a_correlated_gaussian(kind):
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5])
    L = torch.tensor([[1.5, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.4, 0.2]])
    x = mu + torch.randn(1024, 3, generator=g) @ L.T
    true_nll = -torch.distributions.MultivariateNormal(mu, scale_tril=L).log_prob(x).mean().item()
    flow = _flow(kind, 3)
    history = fit_flow(flow, x, epochs=60, lr=2e-2, batch_size=1024)
    assert len(history) == 60 and history[-1] < history[0] - 1.0
    torch.testing.assert_close(flow.mean, x.mean(0))
    torch.testing.assert_close(flow.std, x.std(0))
    with torch.no_grad():
        nll = -flow.log_prob(x).mean().item()
        z, _ = flow(x)
    assert abs(nll - true_nll) < 0.1 * 3, (nll, true_nll)
    assert z.mean(0).abs().max() < 0.1
    assert (torch.cov(z.T) - torch.eye(3)).abs().max() < 0.15


# ---------------------------------------------------------------------------- flow paths
def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


_BN_GROUP = NeuronGroup("h", [("0.weight", 0), ("0.bias", 0), ("1.weight", 0), ("1.bias", 0), ("3.weight", 1)])


def _two_points(model, dtype=torch.float32):
    a = ls.Weights.from_module(model).to(dtype=dtype)
    g = torch.Generator().manual_seed(1)
    tensors = {
        k: (v + torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v + 4)
        for k, v in a.items()
    }
    return a, ls.Weights(tensors, a.layout)


def test_flow_path_with_identity_flows_is_the_unit_circle_arc_and_exact_at_the_ends():
    model = _bn_model()
    A, B = _two_points(model)
    flows = {"h": RealNVP(_BN_GROUP.dim(A), hidden=8)}  # untrained, mean 0, std 1: nu = id
    t = [0.0, 0.3, 0.5, 1.0]
    path = flow_path(A, B, [_BN_GROUP], flows, t)
    assert path.K == 4 and path.names[1] == "t=0.3"
    for name in A:  # bit for bit at the ends; non-float entries (num_batches_tracked) are A's everywhere
        assert torch.equal(path.point(0)[name], A[name])
        assert torch.equal(path.point(3)[name], B[name] if A[name].is_floating_point() else A[name])
    for k in (1, 2):
        c, s = math.cos(math.pi * t[k] / 2), math.sin(math.pi * t[k] / 2)
        p = path.point(k)
        for name in _BN_GROUP.entries():
            torch.testing.assert_close(p[name], c * A[name] + s * B[name], rtol=1e-6, atol=1e-6)
        for name in ("1.running_mean", "1.running_var", "3.bias"):  # in no group: the straight line
            torch.testing.assert_close(p[name], (1 - t[k]) * A[name] + t[k] * B[name], rtol=1e-6, atol=1e-6)
        assert torch.equal(p["1.num_batches_tracked"], A["1.num_batches_tracked"])


def test_flow_path_with_standardising_flows_is_the_arc_path():
    """nu(x) = (x - mu) / sigma gives psi = mu + cos (A - mu) + sin (B - mu): the Arc."""
    model = _mlp([12], dtype=torch.float64)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_mlp([12], seed=1, dtype=torch.float64))
    (g,) = mlp_groups(model)
    flow = RealNVP(g.dim(A), n_couplings=2, hidden=4).double()
    with torch.no_grad():
        flow.mean.copy_(torch.cat([g.matrix(A), g.matrix(B)]).mean(0))
        flow.std.copy_(0.5 + torch.rand(g.dim(A), dtype=torch.float64))
    t = [0.0, 0.25, 0.7, 1.0]
    ours, arc = flow_path(A, B, [g], {"1": flow}, t), arc_path(A, B, model, t)
    for k in range(4):
        for name in g.entries():
            torch.testing.assert_close(ours.point(k)[name], arc.point(k)[name], rtol=0, atol=1e-12)


def test_flow_path_tensors_is_the_path_point_and_differentiable():
    model = _bn_model()
    A, B = _two_points(model)
    flows = {"h": _perturb(RealNVP(_BN_GROUP.dim(A), hidden=8), seed=3)}
    tensors = flow_path_tensors(A, B, [_BN_GROUP], flows, 0.3)
    point = flow_path(A, B, [_BN_GROUP], flows, [0.3]).point(0)
    assert list(tensors) == list(A)
    for name in A:
        torch.testing.assert_close(tensors[name], point[name], rtol=1e-6, atol=1e-6)
    # not the arc: the flow matters
    assert not torch.allclose(
        tensors["0.weight"],
        math.cos(0.15 * math.pi) * A["0.weight"] + math.sin(0.15 * math.pi) * B["0.weight"],
        atol=1e-3,
    )
    sum(v.square().sum() for k, v in tensors.items() if k in _BN_GROUP.entries()).backward()
    grads = [p.grad for p in flows["h"].parameters()]
    assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0


def test_flow_path_validation():
    model = _bn_model()
    A, B = _two_points(model)
    flows = {"h": RealNVP(_BN_GROUP.dim(A), hidden=4)}
    with pytest.raises(ValueError, match=r"t should lie in \[0, 1\], got \[1.5\]"):
        flow_path(A, B, [_BN_GROUP], flows, [0.0, 1.5])
    with pytest.raises(ValueError, match=r"t should be in \[0, 1\], got -0.1"):
        flow_path_tensors(A, B, [_BN_GROUP], flows, -0.1)
    with pytest.raises(ValueError, match=r"no flow for group 'h'; flows has \['x'\]"):
        flow_path(A, B, [_BN_GROUP], {"x": flows["h"]}, [0.5])
    with pytest.raises(ValueError, match="the flow of group 'h' has dim 5 but the group's neurons have D = 10"):
        flow_path(A, B, [_BN_GROUP], {"h": RealNVP(5)}, [0.5])
    other = ls.Weights.from_module(_mlp([8]))
    with pytest.raises(ValueError, match="A and B have different entries"):
        flow_path(A, other, [_BN_GROUP], flows, [0.5])
    overlap = NeuronGroup("o", [("3.weight", 0)])
    with pytest.raises(ValueError, match="entry '3.weight' is in group 'h' and in group 'o'"):
        flow_path(A, B, [_BN_GROUP, overlap], {**flows, "o": RealNVP(6)}, [0.5])


# ---------------------------------------------------------------------------- on digits
@pytest.fixture(scope="module")
def digits():
    return ls.load_data("digits", "train")


@pytest.fixture(scope="module")
def trained(digits):
    """Three quickly trained two-layer MLPs (widths [16]) and their shared architecture."""
    weights = []
    for seed in range(3):
        model = _mlp([16], seed=seed)
        landscape.demo.train_classifier(model, digits, epochs=3, lr=0.2, batch_size=128, seed=seed)
        weights.append(ls.Weights.from_module(model))
    return model, weights


@pytest.fixture(scope="module")
def flows(trained):
    """Flows fitted to the pooled hidden neurons of the three MLPs (the Flow connection)."""
    model, weights = trained
    return fit_flows_for(model, weights, mlp_groups(model), "realnvp", hidden=16, epochs=30, lr=1e-2, batch_size=64)


def test_flow_path_evaluates_and_matches_the_endpoints(trained, flows, digits):
    model, weights = trained
    (g,) = mlp_groups(model)
    assert list(flows) == ["1"] and flows["1"].dim == g.dim(weights[0]) == 75
    pooled = torch.cat([g.matrix(w) for w in weights])
    torch.testing.assert_close(flows["1"].mean, pooled.mean(0))
    A, B = weights[0], weights[1]
    path = flow_path(A, B, mlp_groups(model), flows, [0.0, 0.5, 1.0])
    assert isinstance(path, Path) and (path.method, path.stages, path.t.tolist()) == ("flow", [1], [0.0, 0.5, 1.0])
    res = ls.evaluate(model, path, digits, progress=False)
    ends = ls.evaluate(model, [A, B], digits, progress=False)
    for metric in ("loss", "acc"):
        np.testing.assert_allclose(res[metric][[0, 2]], ends[metric], rtol=1e-6)
    assert np.isfinite(res["loss"][1])


def _mean_midpoint_loss(model, weights, groups, flows, data):
    losses = []
    with torch.no_grad():
        for a, b in ((0, 1), (0, 2), (1, 2)):
            tensors = flow_path_tensors(weights[a], weights[b], groups, flows, 0.5)
            losses.append(F.cross_entropy(functional_call(model, tensors, (data.x,)), data.y).item())
    return float(np.mean(losses))


def test_fit_bijection_lowers_the_loss_in_the_middle_of_the_paths(trained, flows, digits):
    model, weights = trained
    groups = mlp_groups(model)
    flows = copy.deepcopy(flows)
    before = _mean_midpoint_loss(model, weights, groups, flows, digits)
    model.train()
    history = fit_bijection(model, weights, groups, flows, digits, epochs=3, lr=1e-3, batch_size=256, seed=0)
    assert model.training  # the mode is restored
    model.eval()
    after = _mean_midpoint_loss(model, weights, groups, flows, digits)
    assert len(history) == 3 and history[-1] < history[0]
    assert after < before - 0.2, (before, after)
    with pytest.raises(ValueError, match="weights should be a list of at least 2 Weights, got 1 items"):
        fit_bijection(model, weights[:1], groups, flows, digits)


# ---------------------------------------------------------------------------- saving
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_connection_model_round_trip(tmp_path, kind):
    model = _mlp([8])
    w = ls.Weights.from_module(model)
    groups = mlp_groups(model)
    flows = {g.name: _perturb(_flow(kind, g.dim(w), seed=2), seed=2) for g in groups}
    meta = {"model": "mlp", "widths": [8], "epochs": 3, "lr": 1e-3, "note": None}
    path = tmp_path / "conn.pt"
    save_connection_model(path, flows, groups, kind=kind, meta=meta)
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == kind
    flows2, groups2, meta2 = load_connection_model(path)
    assert groups2 == groups and meta2 == meta and type(flows2["1"]) is type(flows["1"])
    x = groups[0].matrix(w)
    z1, ld1 = flows["1"](x)
    z2, ld2 = flows2["1"](x)
    assert torch.equal(z1, z2) and torch.equal(ld1, ld2)
    with pytest.raises(FileExistsError, match="already exists"):
        save_connection_model(path, flows, groups, kind=kind, meta=meta)
    save_connection_model(path, flows, groups, kind=kind, meta={"v": 2}, force=True)
    assert load_connection_model(path)[2] == {"v": 2}
    other = "iaf" if kind == "realnvp" else "realnvp"
    with pytest.raises(ValueError, match=f"kind='{other}' expects"):
        save_connection_model(tmp_path / "b.pt", flows, groups, kind=other, meta={})
    with pytest.raises(ValueError, match=r"meta\['f'\] is a builtin_function_or_method; expected tensors"):
        save_connection_model(tmp_path / "c.pt", flows, groups, kind=kind, meta={"f": print})


# ---------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_flow_path_on_cuda_matches_cpu(kind):
    model = _bn_model()
    A, B = _two_points(model)
    flows = {"h": _perturb(_flow(kind, _BN_GROUP.dim(A)), seed=5)}
    cpu = flow_path(A, B, [_BN_GROUP], flows, [0.0, 0.4, 1.0])
    Ag, Bg = A.to("cuda"), B.to("cuda")
    gpu = flow_path(Ag, Bg, [_BN_GROUP], {"h": flows["h"].to("cuda")}, [0.0, 0.4, 1.0])
    assert gpu.basis.device.type == "cuda"
    torch.testing.assert_close(gpu.basis.cpu(), cpu.basis, rtol=1e-5, atol=1e-5)
    assert torch.equal(gpu.basis[0], Ag.flatten()) and torch.equal(gpu.basis[2], Bg.flatten())
    tensors = flow_path_tensors(Ag, Bg, [_BN_GROUP], {"h": flows["h"]}, 0.4)
    assert all(v.device.type == "cuda" for v in tensors.values())


# ---------------------------------------------------------------------------- Gaussian base
def _correlated(n, seed=0, dim=6):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return 3.0 + torch.randn(n, dim, generator=g, dtype=torch.float64) @ L.T


def test_ledoit_wolf_matches_scikit_learn_and_is_positive_definite_below_full_rank():
    sk = pytest.importorskip("sklearn.covariance")
    for n in (40, 5):  # 5 samples in 6 dimensions: the sample covariance is singular
        x = _correlated(n, seed=n)
        cov, rho = ledoit_wolf(x)
        cov_sk, rho_sk = sk.ledoit_wolf(x.numpy())
        np.testing.assert_allclose(cov.numpy(), cov_sk, rtol=1e-10, atol=1e-12)
        assert rho == pytest.approx(rho_sk, rel=1e-10) and 0 < rho <= 1
        assert float(torch.linalg.eigvalsh(cov).min()) > 0
    with pytest.raises(ValueError, match=r"x should be a floating-point tensor \[N >= 2, D\], got \[1, 3\]"):
        ledoit_wolf(torch.zeros(1, 3))


@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_gaussian_base_is_the_shrunk_gaussian_inverts_and_its_logdet_is_the_jacobian(kind):
    x = _correlated(30)
    flow = _flow(kind, 6, hidden=8).double()
    assert fit_flow(flow, x, epochs=0, base="gaussian") == []
    assert not torch.equal(flow.chol, torch.eye(6)) and torch.equal(flow.chol, torch.tril(flow.chol))
    # untrained layers: the flow is the Gaussian with the Ledoit-Wolf correlation (an independent density)
    std = x.std(0)
    corr, _ = ledoit_wolf((x - x.mean(0)) / std)
    corr = corr / corr.diagonal().sqrt().outer(corr.diagonal().sqrt())
    normal = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=std.outer(std) * corr)
    torch.testing.assert_close(flow.log_prob(x), normal.log_prob(x), rtol=1e-10, atol=1e-10)
    u, _ = flow.base(x)
    torch.testing.assert_close(flow.base_inverse(u), x, rtol=0, atol=1e-10)
    # with trained-looking layers on top: still a bijection with the exact log-determinant
    chol, mean, sd = flow.chol.clone(), flow.mean.clone(), flow.std.clone()
    _perturb(flow, seed=4)
    with torch.no_grad():
        flow.chol.copy_(chol), flow.mean.copy_(mean), flow.std.copy_(sd)
    z, logdet = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)
    for k in range(2):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[k])
        torch.testing.assert_close(logdet[k], torch.linalg.slogdet(J)[1], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"base should be one of \['diagonal', 'gaussian'\], got 'full'"):
        fit_flow(flow, x, epochs=0, base="full")


def test_fit_flow_with_holdout_ends_no_worse_than_the_base_on_the_held_out_vectors():
    x = _correlated(200, seed=1).float()
    train, held = x[:12], x[12:]  # 12 vectors: the flow overfits them
    base_only = RealNVP(6, n_couplings=2, hidden=16)
    fit_flow(base_only, train, epochs=0, base="gaussian")
    overfit, stopped = RealNVP(6, n_couplings=2, hidden=16), RealNVP(6, n_couplings=2, hidden=16)
    fit_flow(overfit, train, epochs=60, lr=3e-2, batch_size=12, base="gaussian")
    fit_flow(stopped, train, epochs=60, lr=3e-2, batch_size=12, base="gaussian", holdout=held)
    with torch.no_grad():
        nll = {
            k: float(-f.log_prob(held).mean())
            for k, f in (("base", base_only), ("overfit", overfit), ("stop", stopped))
        }
    assert nll["overfit"] > nll["base"] + 10.0, nll  # without early stopping the held-out NLL grows
    assert nll["stop"] <= nll["base"] + 1e-5, nll
    with pytest.raises(ValueError, match=r"holdout should be a tensor \[M >= 1, 6\]"):
        fit_flow(stopped, train, holdout=held[:, :3])


# ---------------------------------------------------------------------------- aligned pools and paths
def _cnn(seed, dtype=torch.float64):
    torch.manual_seed(seed)
    model = ls.build_model("small_cnn", {"width": 3, "batch_norm": True}).to(dtype)
    w = ls.Weights.from_module(model)
    g = torch.Generator().manual_seed(seed)
    tensors = {  # non-trivial BatchNorm parameters and statistics
        k: (v.abs() + 0.5 if "running_var" in k else v + 0.1 * torch.randn(v.shape, generator=g, dtype=dtype))
        if v.is_floating_point()
        else v
        for k, v in w.items()
    }
    return model, ls.Weights(tensors, w.layout)


def _outputs(model, w, x):
    model.eval()
    return functional_call(model, dict(w), (x,))


def test_align_pool_recovers_permuted_copies_and_keeps_every_function():
    model, ref = _cnn(0)
    gen = torch.Generator().manual_seed(0)
    copies = [
        ls.connect.permute(ref, model, {"0": torch.randperm(3, generator=gen), "3": torch.randperm(6, generator=gen)})
        for _ in range(3)
    ]
    others = [_cnn(s)[1] for s in (1, 2)]
    pool = [ref, *copies, *others]
    aligned, template = align_pool(model, pool)
    for w in aligned[:4]:  # every permuted copy lines up with the reference, bit for bit
        for k in ref:
            assert torch.equal(w[k], ref[k]), k
    x = torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64)
    for w, v in zip(pool, aligned):
        torch.testing.assert_close(_outputs(model, v, x), _outputs(model, w, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        template["3.weight"], torch.stack([w["3.weight"] for w in aligned]).mean(0), rtol=0, atol=1e-15
    )
    with pytest.raises(ValueError, match=r"reference should index weights \(0..5\), got 6"):
        align_pool(model, pool, reference=6)


def test_aligned_flow_path_ends_at_a_and_b_and_is_the_template_frame_path_reordered():
    model, A = _cnn(3)
    _, B = _cnn(4)
    pool = [_cnn(s)[1] for s in (5, 6, 7)]
    aligned, template = align_pool(model, pool)
    # reorder the template's first layer so that A's frame and the template's surely differ
    template = ls.connect.permute(template, model, {"0": ls.connect.match_neurons(A, template, model)["0"].roll(1)})
    groups = flow_groups(model)
    flows = fit_flows_for(
        model, aligned, groups, "realnvp", hidden=8, n_couplings=2, dtype=torch.float64, epochs=0, base="gaussian"
    )
    flows = {k: _perturb(f, seed=1, scale=0.1) for k, f in flows.items()}  # a non-linear flow
    t = [0.0, 0.4, 1.0]
    path = aligned_flow_path(A, B, model, groups, flows, dict(template), t)
    Bp = ls.connect.permute(B, model, path.permutations)
    # one Path of both stages, joined as OT's are: stage 1 on [0, 1/2], stage 2 on [1/2, 1]
    assert isinstance(path, Path) and path.method == "flow" and path.stages == [1, 2]
    t_joined, joined = concatenate_paths([path.stage1, path.stage2], [path.t1, path.t2])
    np.testing.assert_array_equal(path.t, t_joined)
    assert path.K == path.stage1.K + path.stage2.K - 1 and path.t[path.stage1.K - 1] == 0.5
    assert path.stage.tolist() == [1] * path.stage1.K + [2] * (path.stage2.K - 1)
    assert torch.equal(path.coeffs, joined.coeffs) and 2 * len(path.swaps) == path.stage2.K - 1  # a point inside each
    assert path.t1.tolist() == t and path.t2[0] == 0.0 and path.t2[-1] == 1.0
    for k in A:
        assert torch.equal(path.point(0)[k], A[k]) and torch.equal(path.point(path.K - 1)[k], B[k]), k
    last = path.stage2.K - 1
    for k in A:  # the ends, bit for bit, and the joint between the stages
        assert torch.equal(path.stage1.point(0)[k], A[k]), k
        assert torch.equal(path.stage1.point(2)[k], Bp[k]) or not A[k].is_floating_point(), k
        assert torch.equal(path.stage2.point(0)[k], Bp[k]) or not A[k].is_floating_point(), k
        assert torch.equal(path.stage2.point(last)[k], B[k]), k
    # oracle: the flow path between A and B' reordered to the template, computed there
    sigma = ls.connect.match_neurons(template, A, model)
    assert not torch.equal(sigma["0"], torch.arange(3))
    As, Bs = (ls.connect.permute(w, model, sigma) for w in (A, Bp))
    there = flow_path(As, Bs, groups, flows, [0.4]).point(0)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mid = ls.Weights(path.stage1.point(1), A.layout)
    torch.testing.assert_close(
        _outputs(model, mid, x), _outputs(model, ls.Weights(there, A.layout), x), rtol=0, atol=1e-10
    )
    unaligned = flow_path(A, Bp, groups, flows, [0.4]).point(0)  # the frame matters for a non-linear flow
    assert not torch.allclose(mid.flatten(), ls.Weights(unaligned, A.layout).flatten(), atol=1e-6)


def test_connection_model_keeps_the_template_and_reads_format_version_1(tmp_path):
    model = _mlp([8])
    w = ls.Weights.from_module(model)
    groups = mlp_groups(model)
    x = _correlated(40, dim=groups[0].dim(w)).float()
    flow = _perturb(RealNVP(groups[0].dim(w), n_couplings=2, hidden=8), seed=1)
    fit_flow(flow, x, epochs=0, base="gaussian")
    path = tmp_path / "aligned.pt"
    save_connection_model(path, {"1": flow}, groups, kind="realnvp", meta={"a": 1}, template=w)
    flows2, _, meta2 = load_connection_model(path)
    assert list(meta2) == ["a", "template"] and list(meta2["template"]) == list(w)
    assert all(torch.equal(meta2["template"][k], w[k]) for k in w)
    assert torch.equal(flows2["1"](x)[0], flow(x)[0])
    with pytest.raises(ValueError, match='meta has a key "template"'):
        save_connection_model(tmp_path / "b.pt", {"1": flow}, groups, kind="realnvp", meta={"template": 1})
    # a version-1 file (no chol buffer, no template) loads as the flow it held
    with torch.no_grad():
        flow.chol.copy_(torch.eye(flow.dim))
    raw = torch.load(path, weights_only=True)
    raw["version"] = 1
    del raw["template"]
    del raw["flows"]["1"]["state_dict"]["chol"]
    torch.save(raw, tmp_path / "v1.pt")
    flows1, _, meta1 = load_connection_model(tmp_path / "v1.pt")
    assert meta1 == {"a": 1} and torch.equal(flows1["1"].chol, torch.eye(flow.dim))
    assert torch.equal(flows1["1"](x)[0], flow(x)[0])
    raw["version"] = 3
    torch.save(raw, tmp_path / "v3.pt")
    with pytest.raises(ValueError, match="has format version 3; expected 1 to 2"):
        load_connection_model(tmp_path / "v3.pt")


def test_a_connection_model_file_written_in_format_version_2_loads_and_saving_writes_that_format(tmp_path):
    """The file layout is written out here, not by save_connection_model: files saved before the
    flows became a package (or by any later code) keep loading as long as this test passes."""
    model = _mlp([8])
    w = ls.Weights.from_module(model)
    flow = _perturb(RealNVP(75, n_couplings=2, hidden=4, seed=3), seed=2)
    parts = [["1.bias", 0], ["1.weight", 0], ["3.weight", 1]]
    state = {
        "format": "landscape.connect.flows",
        "version": 2,
        "kind": "realnvp",
        "groups": [{"name": "1", "parts": parts}],
        "flows": {
            "1": {
                "config": {"dim": 75, "n_couplings": 2, "hidden": 4, "seed": 3},
                "dtype": "float32",
                "state_dict": {k: v.clone() for k, v in flow.state_dict().items()},
            }
        },
        "meta": {"note": "by hand"},
        "template": None,
    }
    torch.save(state, tmp_path / "v2.pt")
    flows, groups, meta = load_connection_model(tmp_path / "v2.pt")
    assert groups == mlp_groups(model) and meta == {"note": "by hand"}
    x = groups[0].matrix(w)
    assert type(flows["1"]) is RealNVP and torch.equal(flows["1"](x)[0], flow(x)[0])
    save_connection_model(tmp_path / "again.pt", {"1": flow}, mlp_groups(model), kind="realnvp", meta=meta)
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert list(again) == list(state) and again["groups"] == state["groups"]
    assert {k: again[k] for k in ("format", "version", "kind", "meta", "template")} == {
        k: state[k] for k in ("format", "version", "kind", "meta", "template")
    }
    saved = again["flows"]["1"]
    assert (saved["config"], saved["dtype"]) == (state["flows"]["1"]["config"], "float32")
    sd = state["flows"]["1"]["state_dict"]
    assert list(saved["state_dict"]) == list(sd) and all(torch.equal(saved["state_dict"][k], sd[k]) for k in sd)


def test_compare_connections_runs_an_aligned_connection_model_in_two_stages_ending_with_ots_swaps(digits):
    from landscape.connect import compare_connections

    model = _mlp([6])
    data = (digits.x[:120], digits.y[:120])
    nets = []
    for seed in range(4):
        w = ls.Weights.from_module(_mlp([6], seed=seed))
        nets.append(w)
    A, B, pool = nets[0], nets[1], nets[2:]
    aligned, template = align_pool(model, pool)
    groups = flow_groups(model)
    flows = fit_flows_for(model, aligned, groups, epochs=0, base="gaussian")
    rep = compare_connections(
        model,
        A,
        B,
        {"train": data},
        methods=("ot",),
        connection_models={"Flow": (flows, groups, template), "Plain": (flows, groups)},
        points=3,
        progress=False,
    )
    assert sorted(set(rep.stage["Flow"].tolist())) == [1, 2] and rep.stage["Plain"].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(rep.t["Flow"], rep.t["ot"])
    # stage 2 is OT's stage 2 (the same swaps from B' to B): the same accuracies
    np.testing.assert_array_equal(
        rep.acc["Flow"]["train"][rep.stage["Flow"] == 2], rep.acc["ot"]["train"][rep.stage["ot"] == 2]
    )
    ends = rep.endpoints["train"]
    assert rep.acc["Flow"]["train"][0] == ends["A_acc"] and rep.acc["Flow"]["train"][-1] == ends["B_acc"]
