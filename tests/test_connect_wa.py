"""Tests of landscape.connect.adjust: Weight Adjustment (WA) paths and transitional networks."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

import landscape as ls
from landscape.connect import adjust as adjust_mod
from landscape.connect import (
    arc_path,
    layer_outputs,
    linear_chain,
    linear_path,
    multilayer_wa_path,
    ot_path,
    permute,
    transitional_network,
    wa_path,
    weight_adjustment,
)

T = np.linspace(0.0, 1.0, 5)


def _net(widths, seed, X=None):
    """A float64 ReLU MLP; with ``X``, its dead hidden units (never active on ``X``, common at
    initialisation on the [0, 1] digits) get a bias that makes them active on half of ``X``."""
    torch.manual_seed(seed)
    model = ls.build_model("mlp", {"widths": list(widths)}).to(torch.float64)
    w = ls.Weights.from_module(model)
    if X is not None:
        for k, name in enumerate(linear_chain(model)[:-1]):
            z = layer_outputs(w, model, X)[0][k]
            dead = z.amax(0) <= 0
            w[f"{name}.bias"][dead] -= z[:, dead].median(0).values
    return model, w


def _out(model, w, x):
    return functional_call(model, dict(w), (x,))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _rank(h):
    h = torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], 1)
    return int(torch.linalg.matrix_rank(h))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small batched LAPACK solves: one thread is ~10x faster than two on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def X():
    return ls.load_data("digits", "all").x.to(torch.float64)  # 1797 x 64


@pytest.fixture(scope="module")
def pair(X):
    """Two 64-32-10 networks; 1797 samples > 32 + 1 hidden features, none dead."""
    model, A = _net([32], 0, X)
    _, B = _net([32], 1, X)
    return model, A, B


@pytest.fixture(scope="module")
def deep(X):
    """Two 64-32-24-10 networks (three Linear layers)."""
    model, A = _net([32, 24], 2, X)
    _, B = _net([32, 24], 3, X)
    return model, A, B


# ---------------------------------------------------------------------------- solver
def test_weight_adjustment_recovers_a_layer_and_ridge_shrinks_it():
    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 40, 6, generator=g, dtype=torch.float64)
    W = torch.randn(2, 6, generator=g, dtype=torch.float64)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    W_fit, b_fit = weight_adjustment(H, H @ W.T + b)
    assert W_fit.shape == (3, 2, 6) and b_fit.shape == (3, 2)
    assert torch.allclose(W_fit, W.expand(3, 2, 6), atol=1e-12)
    assert torch.allclose(b_fit, b.expand(3, 2), atol=1e-12)
    W_nb, b_nb = weight_adjustment(H[0], H[0] @ W.T, bias=False)
    assert b_nb is None and torch.allclose(W_nb, W, atol=1e-12)
    # ridge: tiny lambda agrees with the pseudo-inverse, a large one shrinks W (bias unpenalised)
    Y = H[0] @ W.T + b + 0.1 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    W0, b0 = weight_adjustment(H[0], Y)
    Ws, _ = weight_adjustment(H[0], Y, ridge=1e-9)
    Wl, bl = weight_adjustment(H[0], Y, ridge=1e4)
    assert torch.allclose(Ws, W0, atol=1e-8)
    assert Wl.norm() < 0.05 * W0.norm()
    assert torch.allclose(bl, Y.mean(0), atol=0.05)  # with W ~ 0 the bias is the mean output
    with pytest.raises(ValueError, match="ridge"):
        weight_adjustment(H[0], Y, ridge=-1.0)
    with pytest.raises(ValueError, match="same N"):
        weight_adjustment(H[0], Y[:5])


# ---------------------------------------------------------------------------- two layers
@pytest.mark.parametrize("method", ["linear", "arc", "ot"])
def test_wa_reproduces_both_networks_when_features_have_full_rank(pair, X, method):
    model, A, B = pair
    for w in (A, B):  # the condition of the claim
        assert _rank(layer_outputs(w, model, X)[1][1]) == 33
    t, path = wa_path(A, B, model, X, T, method=method, swap_points=0)
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) >= 0)
    first, last = path.weights(0), path.weights(path.K - 1)
    # the WA solution itself (no snapping): logits and second-layer weights of both ends
    assert _rel(_out(model, first, X), _out(model, A, X)) < 1e-6
    assert _rel(_out(model, last, X), _out(model, B, X)) < 1e-6
    for end, w in ((first, A), (last, B)):
        assert torch.equal(end["1.weight"], w["1.weight"])  # the first-layer path is exact
        assert _rel(end["3.weight"], w["3.weight"]) < 1e-6
        assert _rel(end["3.bias"], w["3.bias"]) < 1e-6
    # and the ends are not simply copied: WA fitted them
    assert not torch.equal(first["3.weight"], A["3.weight"])
    # snapping gives the checkpoints bit for bit
    _, snapped = wa_path(A, B, model, X, T, method=method, swap_points=0, snap_ends=True)
    assert torch.equal(snapped.flat([0])[0], A.flatten()) and torch.equal(snapped.flat([-1])[0], B.flatten())


def test_wa_is_not_exact_with_more_hidden_units_than_samples(X):
    model, A = _net([64], 4, X)
    _, B = _net([64], 5, X)
    small, held_out = X[:40], X[40:]
    _, path = wa_path(A, B, model, small, [0.0, 1.0])
    assert _rank(layer_outputs(A, model, small)[1][1]) == 40 < 65
    end = path.weights(0)
    # an under-determined fit still interpolates the batch ...
    assert _rel(_out(model, end, small), _out(model, A, small)) < 1e-6
    # ... but it is not A: other weights, other outputs elsewhere
    assert _rel(end["3.weight"], A["3.weight"]) > 0.1
    assert _rel(_out(model, end, held_out), _out(model, A, held_out)) > 0.05
    # with all 1797 samples (> 65) the same networks are reproduced
    _, full = wa_path(A, B, model, X, [0.0, 1.0])
    assert _rel(full.weights(0)["3.weight"], A["3.weight"]) < 1e-6
    assert _rel(_out(model, full.weights(0), held_out), _out(model, A, held_out)) < 1e-6


def test_a_dead_unit_breaks_the_rank_and_its_outgoing_weights_are_not_recovered(X):
    model, A = _net([32], 1)  # unit(s) never active on the digits
    _, B = _net([32], 0)
    h = layer_outputs(A, model, X)[1][1]
    dead = h.amax(0) == 0
    assert dead.any() and _rank(h) < 33
    end = wa_path(A, B, model, X, [0.0])[1].weights(0)
    assert _rel(_out(model, end, X), _out(model, A, X)) < 1e-6  # on the batch: still exact
    assert torch.allclose(end["3.weight"][:, dead], torch.zeros(1, dtype=torch.float64), atol=1e-12)  # min-norm
    assert A["3.weight"][:, dead].abs().max() > 1e-3  # A's are not zero


@pytest.mark.parametrize("method", ["linear", "arc", "ot"])
def test_wa_outputs_track_the_interpolated_outputs_better_than_the_plain_path(pair, X, method):
    model, A, B = pair
    YA, YB = _out(model, A, X), _out(model, B, X)
    t = np.array([0.25, 0.5, 0.75])
    if method == "ot":
        plain = ot_path(A, B, model, t, neuron="bl").stage1  # the matching of OT + WA
        _, adjusted = wa_path(A, B, model, X, t, method="ot", swap_points=0, wa_form="bias")
        adjusted = adjusted.subset(range(3))  # stage 1 at the same t
    else:
        plain = linear_path(A, B, t) if method == "linear" else arc_path(A, B, model, t)
        _, adjusted = wa_path(A, B, model, X, t, method=method, wa_form="bias")
    for i, ti in enumerate(t):
        Yt = (1 - ti) * YA + ti * YB
        wa, un = adjusted.weights(i), plain.weights(i)
        assert torch.equal(wa["1.weight"], un["1.weight"])  # same first layer
        r_wa = (_out(model, wa, X) - Yt).norm()
        r_un = (_out(model, un, X) - Yt).norm()
        assert r_wa < 0.5 * r_un
        # least squares: no perturbation of the second layer does better
        w2 = wa["3.weight"] + 1e-3 * torch.randn_like(wa["3.weight"])
        assert (_out(model, ls.Weights({**wa, "3.weight": w2}, wa.layout), X) - Yt).norm() > r_wa


def test_wa_solves_t_in_chunks_like_one_by_one(pair, X, monkeypatch):
    model, A, B = pair
    _, together = wa_path(A, B, model, X, T, method="arc")
    monkeypatch.setattr(adjust_mod, "_CHUNK_ELEMENTS", 1)
    _, alone = wa_path(A, B, model, X, T, method="arc")
    assert torch.allclose(together.flat(), alone.flat(), rtol=0, atol=1e-10)


def test_wa_keeps_the_dtype_and_rejects_other_models(X):
    model, A = _net([16], 0)
    _, B = _net([16], 1)
    model32 = ls.build_model("mlp", {"widths": [16]})
    A32, B32 = A.to(dtype=torch.float32), B.to(dtype=torch.float32)
    _, path = wa_path(A32, B32, model32, X.float(), T)
    assert path.basis.dtype == torch.float32
    assert _rel(_out(model32, path.weights(0), X.float()), _out(model32, A32, X.float())) < 1e-5
    deep, Ad = _net([8, 8], 0)
    with pytest.raises(ValueError, match="multilayer_wa_path"):
        wa_path(Ad, Ad, deep, X, T)
    with pytest.raises(ValueError, match="method"):
        wa_path(A, B, model, X, T, method="bezier")


# ---------------------------------------------------------------------------- multi-layer
def test_transitional_network_layers_and_least_squares_fit(deep, X):
    model, A, B = deep
    names = linear_chain(model)  # layer k is names[k-1]
    assert transitional_network(A, B, model, 1, X) is A and transitional_network(A, B, model, 4, X) is B
    zA, _ = layer_outputs(A, model, X)
    _, hB = layer_outputs(B, model, X)
    for k in (2, 3):
        theta = transitional_network(A, B, model, k, X, wa_form="bias")
        for j, name in enumerate(names, 1):
            src = B if j < k else A if j > k else None
            for key in (f"{name}.weight", f"{name}.bias"):
                if src is None:
                    assert not torch.equal(theta[key], A[key]) and not torch.equal(theta[key], B[key])
                else:
                    assert torch.equal(theta[key], src[key])
        # layer k takes B's features below it; its output is the least-squares fit of A's
        z, h = layer_outputs(theta, model, X)
        assert torch.allclose(h[k - 1], hB[k - 1], rtol=0, atol=1e-12)
        Hk = torch.cat([hB[k - 1], torch.ones(len(X), 1, dtype=torch.float64)], 1)
        resid = z[k - 1] - zA[k - 1]
        assert (Hk.T @ resid).norm() < 1e-8 * Hk.norm() * zA[k - 1].norm()  # normal equations
        assert resid.norm() < (layer_outputs(B, model, X)[0][k - 1] - zA[k - 1]).norm()
    with pytest.raises(ValueError, match="k should be"):
        transitional_network(A, B, model, 5, X)


def test_transitional_network_reproduces_a_when_the_features_allow_it(deep, X):
    model, A, B = deep
    # (a) batch no larger than the features below: the fit interpolates A's layer-k output
    small = X[:20]
    for k in (2, 3):
        theta = transitional_network(A, B, model, k, small)
        zT, _ = layer_outputs(theta, model, small)
        zA, _ = layer_outputs(A, model, small)
        assert _rel(zT[k - 1], zA[k - 1]) < 1e-6
        assert _rel(zT[-1], zA[-1]) < 1e-6
        # ... on the batch only
        assert _rel(layer_outputs(theta, model, X[20:])[0][-1], layer_outputs(A, model, X[20:])[0][-1]) > 1e-3
    # (b) B a reordering of A: B's features span A's, so all 1797 samples are reproduced
    g = torch.Generator().manual_seed(0)
    Bp = permute(A, model, {"1": torch.randperm(32, generator=g), "3": torch.randperm(24, generator=g)})
    for k in (2, 3):
        theta = transitional_network(A, Bp, model, k, X)
        assert _rel(_out(model, theta, X), _out(model, A, X)) < 1e-6
        assert _rel(layer_outputs(theta, model, X)[0][k - 1], layer_outputs(A, model, X)[0][k - 1]) < 1e-6


@pytest.mark.parametrize("method", ["linear", "arc", "ot"])
def test_multilayer_path_runs_from_a_to_b_two_layers_at_a_time(deep, X, method):
    model, A, B = deep
    names = linear_chain(model)
    t, path, bounds = multilayer_wa_path(A, B, model, X, T, method, swap_points=0)
    n = len(names)
    assert np.allclose(bounds, np.arange(n + 1) / n)
    assert path.K == len(t) and t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    assert _rel(_out(model, path.weights(0), X), _out(model, A, X)) < 1e-6
    assert torch.equal(path.flat([-1])[0], B.flatten())
    thetas = [A] + [transitional_network(A, B, model, k, X) for k in (2, 3)] + [B]
    for s in range(n):  # step s + 1
        idx = np.nonzero((t >= bounds[s] - 1e-12) & (t <= bounds[s + 1] + 1e-12))[0]
        start = path.weights(int(idx[0]))
        changing = set(names[s : s + 2])
        for i in idx[1:]:
            w = path.weights(int(i))
            for key in A.layout.names():
                if key.split(".")[0] not in changing:
                    assert torch.equal(w[key], start[key]), (s, key)
        # the points at the step boundaries compute the transitional networks
        i_end = int(idx[-1])
        assert np.isclose(t[i_end], bounds[s + 1])
        assert _rel(_out(model, path.weights(i_end), X), _out(model, thetas[s + 1], X)) < 1e-6
        # and each step really moves both of its layers (one for the last step)
        moved = {k.split(".")[0] for k in A.layout.names() if not torch.equal(path.weights(i_end)[k], start[k])}
        assert moved == changing


def test_multilayer_wa_is_flatter_than_the_straight_line(deep, X):
    """The WA path keeps the logits close to A's (and then B's); the straight line does not."""
    model, A, B = deep
    YA, YB = _out(model, A, X), _out(model, B, X)
    t, path, _ = multilayer_wa_path(A, B, model, X, T, "linear")
    line = linear_path(A, B, t)
    dev_wa = max(min(_rel(_out(model, path.weights(i), X), Y) for Y in (YA, YB)) for i in range(path.K))
    dev_line = max(min(_rel(_out(model, line.weights(i), X), Y) for Y in (YA, YB)) for i in range(line.K))
    assert dev_wa < dev_line


def test_reordered_first_layers_reuse_the_solution_exactly():
    from landscape.connect.adjust import LayerStack, _wa_block, weight_adjustment

    torch.manual_seed(3)
    model = ls.build_model("mlp", {"in_features": 6, "widths": [5], "num_classes": 3})
    st = LayerStack(model)
    X = torch.randn(40, 6, dtype=torch.float64)
    W1 = torch.randn(4, 5, 6, dtype=torch.float64)
    b1 = torch.randn(4, 5, dtype=torch.float64)
    p = torch.tensor([3, 0, 4, 1, 2])
    W1[2], b1[2] = W1[0][p], b1[0][p]  # a reordering of point 0 at the same s
    W1[3], b1[3] = W1[0][p], b1[0][p]  # the same reordering at another s: solved anew
    Y0, Y1 = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
    s = np.array([0.5, 0.5, 0.5, 1.0])
    W2, b2 = _wa_block(st, 1, X, {"1.weight": W1, "1.bias": b1}, Y0, Y1, s, bias=True, ridge=0.0)
    for i in range(4):
        H = torch.relu(X @ W1[i].T + b1[i])
        Wd, bd = weight_adjustment(H, (1 - s[i]) * Y0 + s[i] * Y1)
        torch.testing.assert_close(W2[i], Wd, atol=1e-10, rtol=0)
        torch.testing.assert_close(b2[i], bd, atol=1e-10, rtol=0)
    assert torch.equal(W2[2], W2[0][:, p])  # taken over, not solved
    assert not torch.equal(W2[3], W2[0][:, p])


# ---------------------------------------------------------------------------- convnets
def _conv_net(seed, two_layers=False):
    torch.manual_seed(seed)
    if two_layers:  # conv + BN + pool + flatten + linear: one WA block through the flatten
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 3, padding=1),
            torch.nn.BatchNorm2d(6),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(6 * 16, 10),
        )
    else:
        model = ls.build_model("small_cnn", {"width": 4, "batch_norm": True})
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.1)
    return model.double()


def test_conv_wa_recovers_the_endpoint_classifier_through_batchnorm_and_flatten():
    X = ls.load_data("digits:image", "train").x[:400].double()  # 400 > 6 * 16 + 1 features
    model = _conv_net(0, two_layers=True)
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(_conv_net(1, two_layers=True))
    t, pts = ls.connect.wa_path(A, B, model, X, [0.0, 0.5, 1.0], method="linear", snap_ends=False, wa_form="bias")
    for i, end in ((0, A), (2, B)):
        # features use batch statistics on X, so the least squares meet the end's own layer
        torch.testing.assert_close(pts.point(i)["5.weight"], end["5.weight"], rtol=0, atol=1e-8)
        torch.testing.assert_close(pts.point(i)["5.bias"], end["5.bias"], rtol=0, atol=1e-8)
    # the first layer and its BatchNorm move along the straight line
    mid = pts.point(1)
    torch.testing.assert_close(mid["1.weight"], (A["1.weight"] + B["1.weight"]) / 2, rtol=0, atol=1e-12)


def test_conv_transitional_network_with_a_shared_lower_layer_is_the_upper_network():
    # B shares A's first conv and BatchNorm: the transitional conv over patches must find A's
    X = ls.load_data("digits:image", "train").x[:64].double()
    model = _conv_net(0)
    A = ls.Weights.from_module(model)
    other = ls.Weights.from_module(_conv_net(1))
    tensors = dict(other.tensors)
    for e in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        tensors[e] = A[e]
    B = ls.Weights(tensors, A.layout)
    T = ls.connect.transitional_network(A, B, model, 2, X)
    torch.testing.assert_close(T["3.weight"], A["3.weight"], rtol=0, atol=1e-8)
    assert torch.equal(T["8.weight"], A["8.weight"]) and torch.equal(T["0.weight"], B["0.weight"])


def test_conv_multilayer_wa_path_ends_at_both_networks_and_residual_networks_go_through_their_cuts():
    X = ls.load_data("digits:image", "train").x[:200].double()
    model = _conv_net(0)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(_conv_net(1))
    t, pts, bounds = ls.connect.multilayer_wa_path(A, B, model, X, [0.0, 1.0], method="arc", snap_ends=True)
    assert list(bounds) == [0.0, 1 / 3, 2 / 3, 1.0] and t[0] == 0.0 and t[-1] == 1.0
    for n in A.tensors:
        assert torch.equal(pts.point(0)[n], A[n]) and torch.equal(pts.point(pts.K - 1)[n], B[n])
    resnet = ls.build_model("resnet20", {"width": 2, "in_channels": 1})
    w = ls.Weights.from_module(resnet)
    # residual networks hand over at the cuts of their graph (tests/test_connect_residual_wa.py)
    _, _, bounds = ls.connect.multilayer_wa_path(w, w, resnet, X[:8].reshape(8, 1, 8, 8), [0.0, 1.0], wa_form="bias")
    assert len(bounds) == 12


# ---------------------------------------------------------------------------- the paper's WA
def _paper_w2(X, W1, b1, W2A, b1A, W1A):
    """W2(t) = Y [phi(W1(t) X)]^+ with Y = A's second-layer output without its bias, samples
    as columns (the paper's notation), by torch.linalg.pinv in float64."""
    Y = W2A @ torch.relu(W1A @ X.T + b1A[:, None])  # [o, N]
    return Y @ torch.linalg.pinv(torch.relu(W1 @ X.T + b1[:, None]))


@pytest.mark.parametrize("method", ["linear", "arc"])
def test_paper_wa_is_the_pinv_formula_in_two_phases(pair, X, method):
    model, A, B = pair
    x = X[:300]
    t = np.array([0.0, 0.3, 0.7, 1.0])
    tt, path = wa_path(A, B, model, x, t, method=method)  # wa_form="paper" is the default
    np.testing.assert_allclose(tt, np.concatenate([t / 2, 0.5 + t[1:] / 2]), rtol=0, atol=1e-15)
    first = arc_path(A, B, model, t) if method == "arc" else linear_path(A, B, t)
    W2A, b2A = A["3.weight"], A["3.bias"]
    for i in range(len(t)):  # phase 1: the first layer moves, the second is adjusted, b2 stays A's
        p, f = path.point(i), first.point(i)
        torch.testing.assert_close(p["1.weight"], f["1.weight"], rtol=0, atol=1e-14)
        want = _paper_w2(x, f["1.weight"], f["1.bias"], W2A, A["1.bias"], A["1.weight"])
        torch.testing.assert_close(p["3.weight"], want, rtol=1e-9, atol=1e-9)
        assert torch.equal(p["3.bias"], b2A)
    W2_1 = path.point(len(t) - 1)["3.weight"]
    for j, s in enumerate(t[1:]):  # phase 2: B's first layer, the second layer moves to B's
        p = path.point(len(t) + j)
        assert torch.equal(p["1.weight"], B["1.weight"]) and torch.equal(p["1.bias"], B["1.bias"])
        if method == "linear":
            w_want, b_want = (1 - s) * W2_1 + s * B["3.weight"], (1 - s) * b2A + s * B["3.bias"]
        else:  # the Arc around the mean row of the two matrices and the mean of the two biases
            c, sn = np.cos(np.pi * s / 2), np.sin(np.pi * s / 2)
            mu_w = torch.cat([W2_1, B["3.weight"]]).mean(0, keepdim=True)
            mu_b = (b2A + B["3.bias"]) / 2
            w_want = mu_w + c * (W2_1 - mu_w) + sn * (B["3.weight"] - mu_w)
            b_want = mu_b + c * (b2A - mu_b) + sn * (B["3.bias"] - mu_b)
        torch.testing.assert_close(p["3.weight"], w_want, rtol=0, atol=1e-12)
        torch.testing.assert_close(p["3.bias"], b_want, rtol=0, atol=1e-12)
    assert torch.equal(path.point(path.K - 1)["3.weight"], B["3.weight"])
    # the bias-column formulation is another object: one phase, a different second layer
    tb, other = wa_path(A, B, model, x, t, method=method, wa_form="bias")
    np.testing.assert_array_equal(tb, t)
    assert not torch.allclose(other.point(1)["3.weight"], path.point(1)["3.weight"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="wa_form should be one of"):
        wa_path(A, B, model, x, t, wa_form="ours")


def test_paper_transitional_networks_and_multilayer_steps_are_the_pinv_formula(deep, X):
    model, A, B = deep
    x = X[:400]
    zA, hA = layer_outputs(A, model, x)
    _, hB = layer_outputs(B, model, x)
    names = linear_chain(model)
    for k in (2, 3):  # W_k = (z^A_k - b^A_k)^T-side pinv of B's features, A's bias kept
        theta = transitional_network(A, B, model, k, x)
        n = names[k - 1]
        want = (zA[k - 1] - A[f"{n}.bias"]).T @ torch.linalg.pinv(hB[k - 1].T)
        torch.testing.assert_close(theta[f"{n}.weight"], want, rtol=1e-9, atol=1e-9)
        assert torch.equal(theta[f"{n}.bias"], A[f"{n}.bias"])
    # step 1 of the path: layer 1 on the straight line, layer 2 keeps A's output z^A_2
    t_step = np.array([0.0, 0.5, 1.0])
    t, pts, bounds = multilayer_wa_path(A, B, model, x, t_step, method="linear")
    np.testing.assert_allclose(bounds, [0, 1 / 3, 2 / 3, 1])
    mid = pts.point(1)  # t = 1/6
    assert t[1] == pytest.approx(1 / 6)
    W1 = 0.5 * (A["1.weight"] + B["1.weight"])
    b1 = 0.5 * (A["1.bias"] + B["1.bias"])
    torch.testing.assert_close(mid["1.weight"], W1, rtol=0, atol=1e-14)
    want = (zA[1] - A["3.bias"]).T @ torch.linalg.pinv(torch.relu(W1 @ x.T + b1[:, None]))
    torch.testing.assert_close(mid["3.weight"], want, rtol=1e-9, atol=1e-9)
    assert torch.equal(mid["3.bias"], A["3.bias"])
