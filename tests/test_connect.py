"""Tests of landscape.connect: neuron view, permutations, Linear/Arc paths, OT matching."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape.connect import (
    arc_coefficients,
    arc_path,
    assignment,
    compose_permutations,
    hidden_layers,
    identity_permutations,
    invert_permutation,
    linear_chain,
    linear_path,
    match_neurons,
    neuron_matrix,
    neuron_mean,
    ot_path,
    permute,
    transposition_path,
)


def _model(widths, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return ls.build_model("mlp", {"widths": list(widths), **kw}).to(dtype)


def _out(model, w, x):
    return functional_call(model, dict(w), (x,))


def _random_perms(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        layer: torch.randperm(model.get_submodule(layer).out_features, generator=g) for layer in hidden_layers(model)
    }


@pytest.fixture(scope="module")
def digits():
    return ls.load_data("digits", "test")


# ---------------------------------------------------------------------------- neuron view
def test_linear_chain_names_layers_by_module_name():
    assert linear_chain(_model([32, 16])) == ["1", "3", "5"]
    assert hidden_layers(_model([32, 16])) == ["1", "3"]
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.GELU()), nn.Linear(3, 2))
    assert linear_chain(nested) == ["1.0", "2"]


@pytest.mark.parametrize(
    "model, match",
    [
        (nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)), "module '1' is a BatchNorm1d"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2)), "module '2' is a Flatten"),
        (nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), "Linear '1' takes 5 inputs"),
        (nn.Conv2d(1, 2, 3), "model is a Conv2d"),
        (nn.Sequential(nn.ReLU()), "model has no Linear layer"),
    ],
)
def test_linear_chain_rejects_other_models(model, match):
    with pytest.raises(ValueError, match=match):
        linear_chain(model)


def test_neuron_matrix_rows_are_bias_incoming_outgoing():
    model = _model([6, 5])
    w = ls.Weights.from_module(model)
    theta = neuron_matrix(w, model, "3")
    assert theta.shape == (5, 1 + 6 + 10)
    i = 2
    assert torch.equal(theta[i], torch.cat([w["3.bias"][i : i + 1], w["3.weight"][i], w["5.weight"][:, i]]))
    assert neuron_matrix(w, model, "1", outgoing=False).shape == (6, 1 + 64)
    with pytest.raises(ValueError, match="layer '5' is not a hidden layer"):
        neuron_matrix(w, model, "5")


@pytest.mark.parametrize("widths", [[12], [12, 9]])
def test_permute_leaves_the_function_unchanged(widths):
    model = _model(widths)
    w = ls.Weights.from_module(model)
    perms = _random_perms(model, 1)
    v = permute(w, model, perms)
    x = torch.randn(7, 64, dtype=torch.float64)
    assert not torch.equal(v["1.weight"], w["1.weight"])  # the weights did move
    torch.testing.assert_close(_out(model, v, x), _out(model, w, x), rtol=0, atol=1e-12)
    # neurons move with the permutation: incoming parts of the first layer, outgoing of the last
    first, last = hidden_layers(model)[0], hidden_layers(model)[-1]
    assert torch.equal(
        neuron_matrix(v, model, first, outgoing=False), neuron_matrix(w, model, first, outgoing=False)[perms[first]]
    )
    assert torch.equal(
        neuron_matrix(v, model, last, incoming=False), neuron_matrix(w, model, last, incoming=False)[perms[last]]
    )
    # the input is untouched, and the inverse permutation restores it bit for bit
    back = permute(v, model, invert_permutation(perms))
    assert all(torch.equal(back[k], w[k]) for k in w)


def test_compose_permutations_matches_applying_twice():
    model = _model([10, 8])
    w = ls.Weights.from_module(model)
    p, q = _random_perms(model, 2), _random_perms(model, 3)
    twice = permute(permute(w, model, p), model, q)
    once = permute(w, model, compose_permutations(p, q))
    assert all(torch.equal(twice[k], once[k]) for k in w)
    ident = permute(w, model, identity_permutations(model))
    assert all(torch.equal(ident[k], w[k]) for k in w)


def test_permute_rejects_bad_permutations():
    model = _model([5])
    w = ls.Weights.from_module(model)
    with pytest.raises(ValueError, match=r"layer '1' should be an integer tensor \[5\]"):
        permute(w, model, {"1": torch.arange(4)})
    with pytest.raises(ValueError, match="not a permutation of 0..4"):
        permute(w, model, {"1": torch.tensor([0, 0, 1, 2, 3])})
    with pytest.raises(ValueError, match="has shape"):
        permute(ls.Weights.from_module(_model([6])), model, {})


# ---------------------------------------------------------------------------- Linear and Arc
def test_arc_coefficients_are_exact_at_the_ends_and_sum_to_one():
    C = arc_coefficients([0.0, 0.3, 0.5, 1.0, 2.0])
    assert C[0].tolist() == [0.0, 1.0, 0.0]
    assert C[3].tolist() == [0.0, 0.0, 1.0]  # cos(pi/2) = 6e-17 snapped to 0
    assert C[4].tolist() == [2.0, -1.0, 0.0]
    np.testing.assert_allclose(C.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(C[2], [1 - np.sqrt(2), np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-15)


def _gaussian_two_layer(n, m, L, seed):
    """A 2-input, 1-output MLP with n hidden neurons drawn iid from N(m, L L^T) (dims b, l1, l2, c)."""
    model = ls.build_model("mlp", {"widths": [n], "in_features": 2, "num_classes": 1}).double()
    g = torch.Generator().manual_seed(seed)
    theta = m + torch.randn(n, 4, generator=g, dtype=torch.float64) @ L.T
    t = ls.Weights.from_module(model).tensors
    t.update({"1.bias": theta[:, 0].clone(), "1.weight": theta[:, 1:3].clone(), "3.weight": theta[:, 3:].T.clone()})
    return model, ls.Weights(t, ls.Weights.from_module(model).layout)


def test_arc_preserves_mean_and_covariance_of_gaussian_neurons_while_linear_shrinks_it():
    n = 4000
    m = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    L = torch.tensor(
        [[1.0, 0, 0, 0], [0.5, 0.8, 0, 0], [-0.3, 0.2, 1.2, 0], [0.1, -0.4, 0.3, 0.6]], dtype=torch.float64
    )
    S = L @ L.T
    model, A = _gaussian_two_layer(n, m, L, seed=0)
    _, B = _gaussian_two_layer(n, m, L, seed=1)
    se_mean = torch.sqrt(torch.diag(S) / n)
    se_cov = torch.sqrt((torch.outer(torch.diag(S), torch.diag(S)) + S**2) / n)

    def moments(points, k):
        theta = neuron_matrix(points.weights(k), model, "1")
        return theta.mean(0), torch.cov(theta.T)

    ts = [0.3, 0.5, 0.7]
    arc = arc_path(A, B, model, ts)
    for k in range(len(ts)):
        mean, cov = moments(arc, k)
        assert ((mean - m).abs() < 5 * se_mean).all(), (ts[k], mean, m)
        assert ((cov - S).abs() < 5 * se_cov).all(), (ts[k], cov, S)
    line = linear_path(A, B, [0.5])
    mean, cov = moments(line, 0)
    assert ((mean - m).abs() < 5 * se_mean).all()
    assert ((cov - 0.5 * S).abs() < 5 * se_cov).all()  # (1-t)^2 + t^2 = 1/2 of the covariance
    assert (torch.diag(cov) < 0.6 * torch.diag(S)).all()


def test_neuron_mean_pools_hidden_neurons_and_averages_the_rest():
    model = _model([7])
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(_model([7], seed=1))
    mu = neuron_mean(A, B, model)
    theta = torch.cat([neuron_matrix(A, model, "1"), neuron_matrix(B, model, "1")])
    mu_theta = neuron_matrix(mu, model, "1")
    torch.testing.assert_close(mu_theta, theta.mean(0).expand(7, -1), rtol=0, atol=1e-14)
    torch.testing.assert_close(mu["3.bias"], 0.5 * (A["3.bias"] + B["3.bias"]), rtol=0, atol=0)


# ---------------------------------------------------------------------------- OT matching
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emd_and_linear_sum_assignment_agree(seed):
    C = torch.rand(40, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p_emd, p_lsa = assignment(C, "emd"), assignment(C, "lsa")
    assert torch.equal(p_emd, p_lsa)  # continuous random costs: the optimum is unique
    best = C[torch.arange(40), p_emd].sum()
    assert best < C.diagonal().sum()  # and better than the identity
    with pytest.raises(ValueError, match="square matrix"):
        assignment(torch.zeros(3, 4))


def _blc_cost(A, B, layer, nxt, prev_perm=None, next_perm=None, outgoing=True):
    """C[i, j] = |b^A_i - b^B_j|^2 + |l^A_i - l^B_j P|^2 (+ |c^A_i - P c^B_j|^2), float64 loops."""
    WA, WB = A[f"{layer}.weight"].double(), B[f"{layer}.weight"].double()
    bA, bB = A[f"{layer}.bias"].double(), B[f"{layer}.bias"].double()
    VA, VB = A[f"{nxt}.weight"].double(), B[f"{nxt}.weight"].double()
    if prev_perm is not None:
        WB = WB[:, prev_perm]
    if next_perm is not None:
        VB = VB[next_perm]
    n = WA.shape[0]
    C = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            c = float((bA[i] - bB[j]) ** 2) + sum(float((WA[i, q] - WB[j, q]) ** 2) for q in range(WA.shape[1]))
            if outgoing:
                c += sum(float((VA[r, i] - VB[r, j]) ** 2) for r in range(VA.shape[0]))
            C[i, j] = c
    return C


def test_default_neuron_is_the_papers_blc_and_differs_from_incoming_only():
    from scipy.optimize import linear_sum_assignment

    model = _model([12], in_features=6, num_classes=4)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_model([12], seed=1, in_features=6, num_classes=4))
    C_blc, C_bl = _blc_cost(A, B, "1", "3"), _blc_cost(A, B, "1", "3", outgoing=False)
    # the cost matrix of the neurons (b, l, c) is the formula
    cost = ls.connect.matching.sq_dist(neuron_matrix(A, model, "1"), neuron_matrix(B, model, "1"))
    np.testing.assert_allclose(cost.numpy(), C_blc, rtol=1e-12, atol=1e-12)

    def optimum(C):
        rows, cols = linear_sum_assignment(C)
        return torch.as_tensor(cols[np.argsort(rows)])

    blc, bl = match_neurons(A, B, model)["1"], match_neurons(A, B, model, neuron="bl")["1"]
    assert torch.equal(blc, optimum(C_blc)) and torch.equal(bl, optimum(C_bl))
    assert not torch.equal(blc, bl)  # the outgoing weights change the matching ...
    total = lambda C, p: C[np.arange(12), p.numpy()].sum()  # noqa: E731
    assert total(C_blc, blc) < total(C_blc, bl) - 1e-9  # ... to the optimum of the paper's cost
    assert torch.equal(ot_path(A, B, model, [0.0, 1.0]).permutations["1"], blc)
    with pytest.raises(ValueError, match="neuron should be one of"):
        match_neurons(A, B, model, neuron="c")


def test_blc_matches_the_transport_plan_of_the_authors_code():
    """The authors' code (distribution-based-connectivity, PointFinderTransportation) stacks
    [W1 row, b1, W2 column] per neuron, takes ot.dist (squared Euclidean) divided by its
    maximum and reads the bijection off ot.emd's plan with argmax; redone here with POT."""
    ot = pytest.importorskip("ot")
    model = _model([32], in_features=10, num_classes=5)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_model([32], seed=3, in_features=10, num_classes=5))

    def samples(w):
        return np.hstack([w["1.weight"].numpy(), w["1.bias"].numpy()[:, None], w["3.weight"].T.numpy()])

    M = ot.dist(samples(A), samples(B))
    M /= M.max()
    a = np.ones(32) / 32
    plan = ot.emd(a, a, M)
    theirs = torch.as_tensor(np.argmax(plan, axis=-1))
    assert torch.equal(match_neurons(A, B, model)["1"], theirs)
    assert not torch.equal(match_neurons(A, B, model, neuron="bl")["1"], theirs)


def test_blc_on_deeper_networks_ends_at_a_fixed_point_of_the_full_cost():
    from scipy.optimize import linear_sum_assignment

    model = _model([10, 8], in_features=5, num_classes=3)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_model([10, 8], seed=2, in_features=5, num_classes=3))
    perms = match_neurons(A, B, model)
    # every layer's matching is the optimum of its (b, l, c) cost, B's incoming columns and
    # outgoing rows in the order of the neighbouring layers' final matchings
    for layer, nxt, prev in (("1", "3", None), ("3", "5", "1")):
        C = _blc_cost(A, B, layer, nxt, perms.get(prev), perms.get(nxt))
        rows, cols = linear_sum_assignment(C)
        assert torch.equal(perms[layer], torch.as_tensor(cols[np.argsort(rows)]))
    # and a planted permutation of A is recovered exactly
    planted = _random_perms(model, 7)
    found = match_neurons(A, permute(A, model, planted), model)
    for layer in hidden_layers(model):
        assert torch.equal(found[layer], invert_permutation(planted[layer]))


def test_match_neurons_solvers_agree_on_noisy_copies():
    model = _model([20, 12])
    A = ls.Weights.from_module(model)
    B = permute(A, model, _random_perms(model, 4))
    g = torch.Generator().manual_seed(5)
    B = ls.Weights(
        {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in B.items()}, B.layout
    )
    found = [match_neurons(A, B, model, solver=s, neuron=o) for s in ("emd", "lsa") for o in ("bl", "blc")]
    for layer in hidden_layers(model):
        assert torch.equal(found[0][layer], found[1][layer])
        assert torch.equal(found[2][layer], found[3][layer])


@pytest.mark.parametrize("widths", [[24], [24, 16]])
@pytest.mark.parametrize("neuron", ["bl", "blc"])
def test_ot_recovers_planted_permutation_and_stage1_has_constant_loss(widths, neuron, digits):
    model = _model(widths, dtype=torch.float32)
    A = ls.Weights.from_module(model)
    planted = _random_perms(model, 6)
    B = permute(A, model, planted)  # B computes A's function with neurons reordered
    path = ot_path(A, B, model, np.linspace(0, 1, 5), neuron=neuron)
    for layer in hidden_layers(model):
        # permute(B, found) == A  <=>  found = planted^-1
        assert torch.equal(path.permutations[layer], invert_permutation(planted[layer]))
    loss1 = ls.evaluate(model, path.stage1, digits, ("loss",), precision="fp64", progress=False)["loss"]
    assert np.ptp(loss1) < 1e-6
    # stage 2: every state between two swaps is a reordering of B (same loss); n - cycles swaps
    n_cycles = sum(len(_cycles(p)) for p in planted.values())
    assert len(path.swaps) == sum(widths) - n_cycles
    states = np.flatnonzero(np.isin(path.t2 * len(path.swaps), np.arange(len(path.swaps) + 1)))
    assert len(states) == len(path.swaps) + 1
    loss2 = ls.evaluate(model, path.stage2.subset(states), digits, ("loss",), precision="fp64", progress=False)["loss"]
    np.testing.assert_allclose(loss2, loss1[0], rtol=0, atol=1e-6)


def _cycles(p):
    seen, cycles = set(), []
    for s in range(len(p)):
        if s not in seen:
            c, j = [], s
            while j not in seen:
                seen.add(j)
                c.append(j)
                j = int(p[j])
            cycles.append(c)
    return cycles


def test_swap_moves_only_two_neurons():
    model = _model([9, 6])
    B = ls.Weights.from_module(model)
    points, t, swaps = transposition_path(B, model, _random_perms(model, 7), swap_points=3)
    assert len(t) == points.K == 4 * len(swaps) + 1
    assert np.all(np.diff(t) > 0) and t[0] == 0.0 and t[-1] == 1.0
    layer, i, j = swaps[0]
    mid = points.weights(2)  # s = 1/2 inside the first swap
    start = points.weights(0)
    changed = (mid[f"{layer}.weight"] != start[f"{layer}.weight"]).any(1).nonzero().flatten().tolist()
    assert changed == sorted([i, j])
    torch.testing.assert_close(mid[f"{layer}.weight"][i], mid[f"{layer}.weight"][j], rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------- exact endpoints
def test_every_path_starts_and_ends_at_its_checkpoints_bit_for_bit():
    model = _model([16, 8], dtype=torch.float32)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_model([16, 8], seed=1, dtype=torch.float32))
    ts = [0.0, 0.25, 0.5, 1.0]

    def same(point, w):
        return all(torch.equal(point[k], w[k]) for k in w)

    for path in (linear_path(A, B, ts), arc_path(A, B, model, ts)):
        assert same(path.point(0), A) and same(path.point(3), B)
        assert not same(path.point(2), A)
    ot = ot_path(A, B, model, ts)
    assert len(ot.swaps) > 0
    Bp = permute(B, model, ot.permutations)
    assert same(ot.stage1.point(0), A) and same(ot.stage1.point(ot.stage1.K - 1), Bp)
    assert same(ot.stage2.point(0), Bp) and same(ot.stage2.point(ot.stage2.K - 1), B)
    t, joined = ot.joined()
    assert joined.K == ot.stage1.K + ot.stage2.K - 1
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    assert t[ot.stage1.K - 1] == 0.5
    assert same(joined.point(0), A) and same(joined.point(joined.K - 1), B)


def test_paths_reject_mismatched_weights():
    model = _model([8])
    A = ls.Weights.from_module(model)
    other = ls.Weights.from_module(_model([8, 4]))
    with pytest.raises(ValueError, match="different layouts"):
        linear_path(A, other, [0.5])
    with pytest.raises(TypeError, match="should be a landscape Weights, got dict"):
        arc_path(A, dict(A), model, [0.5])
