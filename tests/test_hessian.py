"""Tests of landscape.hessian against dense Hessians formed independently.

The oracle is ``torch.autograd.functional.hessian`` of the mean cross-entropy as a function
of the flattened selected parameters (written here with ``functional_call``, models in eval
mode and float64), and its ``torch.linalg.eigvalsh``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape import hessian as H
from landscape.plot import plot_density

F64 = torch.float64
# torch's forward-mode AD scripts its decompositions on first use (torch/_decomp/decompositions_for_jvp.py)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ---------------------------------------------------------------------------- problems
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: one thread is fastest (no OpenMP barriers per op) and keeps
    the timings steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    ).double()
    with torch.no_grad():  # running statistics unlike a fresh layer's, so that using them shows
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.2, 0.2)
    return model.eval()


def _data(shape, classes: int, seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


def dense_hessian(model: nn.Module, point, data, names=None) -> torch.Tensor:
    """The Hessian of the mean cross-entropy over ``names`` (default: all parameters)."""
    model = model.eval()
    point = {k: v.detach().clone() for k, v in point.items()}
    names = names or [n for n, _ in model.named_parameters()]
    x, y = data
    shapes = [point[n].shape for n in names]
    sizes = [math.prod(s) for s in shapes]

    def loss(flat):
        tensors = dict(point)
        for name, shape, part in zip(names, shapes, torch.split(flat, sizes)):
            tensors[name] = part.view(shape)
        return F.cross_entropy(functional_call(model, tensors, (x,)), y)

    flat0 = torch.cat([point[n].reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat0, vectorize=True)


class Problem:
    def __init__(self, model, data):
        self.model, self.data = model, data
        self.weights = ls.Weights.from_module(model)
        self.H = dense_hessian(model, self.weights, data)
        self.eig = torch.linalg.eigvalsh(self.H)
        self.n = self.H.shape[0]

    def op(self, **kw):
        return H.HVP(self.model, self.weights, self.data, dtype=F64, device="cpu", **kw)


@pytest.fixture(scope="module")
def mlp():
    return Problem(_mlp(0), _data((4,), 3, 1))


@pytest.fixture(scope="module")
def bn():
    return Problem(_bn_net(2), _data((1, 4, 4), 3, 3))


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(4)
    model = ls.models.mlp(64, (4,), 10).double()
    train = ls.load_data("digits", "train", max_samples=96)
    return Problem(model, (train.x.double(), train.y))


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------- products
@pytest.mark.parametrize("name", ["mlp", "bn", "digits"])
@pytest.mark.parametrize("method", ["forward-over-reverse", "double-backward"])
def test_hvp_equals_dense_hessian(name, method, request):
    p = request.getfixturevalue(name)
    op = p.op(method=method)
    assert op.n == p.n
    V = H.random_vectors(3, p.n, seed=5)
    assert rel(op(V), V @ p.H) < 1e-12  # several vectors in one pass
    assert rel(op(V[1]), p.H @ V[1]) < 1e-12
    assert rel(op.matmul(V.T), p.H @ V.T) < 1e-12
    assert op.count == 3 + 1 + 3 and op.method == method


def test_batches_accumulate_to_the_dataset_mean(bn):
    V = H.random_vectors(2, bn.n, seed=6)
    full = bn.op(batch_size=64)(V)
    for bs in (10, 1):  # uneven last batch; one sample per batch
        assert rel(bn.op(batch_size=bs)(V), full) < 1e-12


def test_hvp_against_central_differences_of_the_gradient(mlp):
    op = mlp.op()
    value, _ = op.gradient()
    with torch.no_grad():
        assert abs(value - float(F.cross_entropy(mlp.model(mlp.data[0]), mlp.data[1]))) < 1e-14
    v = H.random_vectors(1, mlp.n, seed=7)[0]
    eps = 1e-4
    flat = mlp.weights.flatten(F64)
    grads = []
    for sign in (1, -1):
        w = ls.Weights(mlp.weights.unflatten(flat + sign * eps * v), mlp.weights.layout)
        grads.append(H.gradient(mlp.model, w, mlp.data, dtype=F64, device="cpu")[1])
    fd = (grads[0] - grads[1]) / (2 * eps)
    assert rel(op(v), fd) < 1e-7  # O(eps^2) truncation


def test_gradient_matches_autograd(bn):
    model, (x, y) = bn.model, bn.data
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    model.zero_grad()
    _, g = H.gradient(model, bn.weights, bn.data, dtype=F64, device="cpu", batch_size=7)
    assert rel(g, expected) < 1e-12


def test_parameter_selection_is_the_sub_block(mlp):
    names = ["2.weight", "0.bias"]  # any order: vectors follow the layout
    op = mlp.op(params=names)
    assert op.names == ["0.bias", "2.weight"] and op.n == 6 + 18
    idx = torch.nonzero(op.mask[mlp.weights.layout.parameter_mask()]).flatten()
    V = H.random_vectors(2, op.n, seed=8)
    assert rel(op(V), V @ mlp.H[idx][:, idx]) < 1e-12
    # the selection's Hessian taken directly
    assert rel(dense_hessian(mlp.model, mlp.weights, mlp.data, op.names), mlp.H[idx][:, idx]) < 1e-12


def test_layer_selections_give_the_diagonal_blocks(bn):
    groups = H.layer_selections(bn.model)
    assert list(groups) == ["0", "1", "4"]
    pmask = bn.weights.layout.parameter_mask()
    for names in groups.values():
        op = bn.op(params=names, method="double-backward")
        idx = torch.nonzero(op.mask[pmask]).flatten()
        E = torch.eye(op.n, dtype=F64)
        assert rel(op(E), bn.H[idx][:, idx]) < 1e-12


def test_unknown_parameters_are_refused(bn):
    with pytest.raises(ValueError, match="running_mean"):
        bn.op(params=["1.running_mean"])


def test_point_set_rows_and_batched_products(bn):
    others = [ls.Weights.from_module(_bn_net(s)) for s in (10, 11)]
    points = [bn.weights, *others]
    ps = ls.PointSet.from_weights(points)
    V = H.random_vectors(3, bn.n, seed=9)
    single = torch.stack([H.HVP(bn.model, ps, bn.data, index=k, dtype=F64, device="cpu")(V[k]) for k in range(3)])
    assert rel(single[0], bn.H @ V[0]) < 1e-12
    for method in ("forward-over-reverse", "double-backward"):
        op = H.BatchedHVP(bn.model, ps, bn.data, dtype=F64, device="cpu", method=method, points_per_pass=2)
        assert op.K == 3 and op.vectorized == (method != "double-backward")
        assert rel(op(V), single) < 1e-12
        assert rel(op(V[[2, 0]], indices=[2, 0]), single[[2, 0]]) < 1e-12
        assert op.count == 5 and op.vectorized == (method != "double-backward")  # vmap over points held


def test_auto_falls_back_to_double_backward_with_a_warning(monkeypatch):
    import landscape.hessian.hvp as hvp_module

    assert H.HVP(_mlp(0), ls.Weights.from_module(_mlp(0)), _data((4,), 3, 1)).method == "double-backward"  # CPU
    monkeypatch.setattr(hvp_module, "_AUTO_ON_CPU", "auto")  # what auto does on a GPU

    class NoForwardAD(torch.autograd.Function):  # old-style: no setup_context, no jvp
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.b(NoForwardAD.apply(self.a(x)))

    torch.manual_seed(12)
    model = Net().double()
    data = _data((4,), 3, 13)
    w = ls.Weights.from_module(model)
    same = nn.Sequential(model.a, nn.Tanh(), model.b)  # the same function, with forward-mode AD
    Hd = dense_hessian(same, ls.Weights.from_module(same), data)
    op = H.HVP(model, w, data, dtype=F64, device="cpu")
    V = H.random_vectors(2, op.n, seed=14)
    with pytest.warns(RuntimeWarning, match="double-backward"):
        out = op(V)
    assert op.method == "double-backward"
    assert rel(out, V @ Hd) < 1e-12
    with pytest.raises(RuntimeError):
        H.HVP(model, w, data, dtype=F64, device="cpu", method="forward-over-reverse")(V)
    # several points: vmap over points fails first, then each point falls back
    batched = H.BatchedHVP(model, [w, w], data, dtype=F64, device="cpu")
    with pytest.warns(RuntimeWarning) as caught:
        out = batched(V)
    assert ["vmap over points" in str(c.message) for c in caught] == [True, False]  # then per point
    assert not batched.vectorized and batched.method == "double-backward"
    assert rel(out, V @ Hd) < 1e-12


def test_to_scipy_round_trips(mlp):
    A = mlp.op().to_scipy()
    v = np.linspace(-1, 1, mlp.n)
    assert A.shape == (mlp.n, mlp.n)
    np.testing.assert_allclose(A @ v, mlp.H.numpy() @ v, rtol=1e-12, atol=1e-14)
    X = np.stack([v, v**2], 1)
    np.testing.assert_allclose(A.matmat(X), mlp.H.numpy() @ X, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- eigenvalues
def test_power_iteration_top_k_by_magnitude(mlp):
    expected = mlp.eig[torch.argsort(mlp.eig.abs(), descending=True)][:3]
    res = H.power_iteration(mlp.op(), k=3, tol=1e-8, max_iter=3000, seed=0)
    assert res.converged.all()
    np.testing.assert_allclose(res.eigenvalues, expected.numpy(), rtol=1e-6)
    assert (res.residuals < 1e-6 * np.abs(res.eigenvalues)).all()
    for lam, v in zip(res.eigenvalues, res.eigenvectors):
        assert float(torch.linalg.vector_norm(mlp.H @ v - lam * v)) < 1e-6 * abs(lam)
    again = H.power_iteration(mlp.op(), k=3, tol=1e-8, max_iter=3000, seed=0)
    assert np.array_equal(res.eigenvalues, again.eigenvalues) and torch.equal(res.eigenvectors, again.eigenvectors)
    assert res.hvps == int(res.iterations.sum())


@pytest.mark.parametrize("name", ["mlp", "bn", "digits"])
def test_lanczos_extremes_match_dense_eigenvalues(name, request):
    p = request.getfixturevalue(name)
    op = p.op()
    res = H.lanczos(op, tol=1e-9, max_iter=p.n, seed=1, vectors=True)
    lo, hi = float(p.eig[0]), float(p.eig[-1])
    assert abs(res.lambda_max - hi) <= 1e-6 * abs(hi)
    assert abs(res.lambda_min - lo) <= 1e-6 * abs(lo)
    assert res.converged and res.hvps == res.steps == op.count
    assert res.steps < p.n and (res.residuals <= 1e-9 * np.abs([res.lambda_max, res.lambda_min])).all()
    # the Ritz residual estimates are the true residuals of the Ritz vectors
    for lam, x, est in zip((res.lambda_max, res.lambda_min), res.vectors, res.residuals):
        true = float(torch.linalg.vector_norm(p.H @ x - lam * x))
        assert true <= est + 1e-10 * abs(lam)
    np.testing.assert_allclose(res.ritz_weights.sum(), 1.0, rtol=1e-12)
    again = H.lanczos(p.op(), tol=1e-9, max_iter=p.n, seed=1)
    assert np.array_equal(res.ritz_values, again.ritz_values)


def test_extreme_eigenvalues_summary(digits):
    ev = H.extreme_eigenvalues(digits.op(), tol=1e-3, seed=0)
    hi = float(digits.eig[-1])
    assert ev.converged and ev.hvps < digits.n
    assert abs(ev.lambda_max - hi) <= 1e-3 * abs(hi)
    assert ev.ratio == pytest.approx(abs(ev.lambda_min / ev.lambda_max))
    assert (ev.residuals <= 1e-3 * np.abs([ev.lambda_max, ev.lambda_min])).all()


def test_lanczos_on_a_known_spectrum_stops_at_the_tolerance():
    lam = torch.cat([torch.linspace(-0.5, 1.0, 200, dtype=F64), torch.tensor([5.0], dtype=F64)])
    Q, _ = torch.linalg.qr(torch.randn(201, 201, generator=torch.Generator().manual_seed(0), dtype=F64))
    A = Q @ torch.diag(lam) @ Q.T
    res = H.lanczos(A, tol=1e-6, max_iter=200, seed=3)
    assert res.converged and res.steps < 200
    assert (res.residuals <= 1e-6 * np.abs([res.lambda_max, res.lambda_min])).all()
    assert abs(res.lambda_max - 5.0) < 1e-9 and abs(res.lambda_min + 0.5) < 1e-5


def test_batched_lanczos_equals_per_point_lanczos(bn):
    ps = ls.PointSet.from_weights([bn.weights] + [ls.Weights.from_module(_bn_net(s)) for s in (20, 21)])
    kw = dict(tol=1e-6, max_iter=60, seed=4)
    ops = [H.HVP(bn.model, ps, bn.data, index=k, dtype=F64, device="cpu") for k in range(3)]
    single = [H.lanczos(o, **kw) for o in ops]
    batched_op = H.BatchedHVP(bn.model, ps, bn.data, dtype=F64, device="cpu")
    for runs in (H.lanczos_batched(batched_op, **kw), H.lanczos_batched(ops, **kw)):
        for a, b in zip(runs, single):
            assert a.steps == b.steps and a.converged == b.converged
            np.testing.assert_allclose(a.ritz_values, b.ritz_values, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose([a.lambda_max, a.lambda_min], [b.lambda_max, b.lambda_min], rtol=1e-9)
    assert batched_op.count == sum(r.steps for r in single)
    assert abs(single[0].lambda_max - float(bn.eig[-1])) <= 1e-6 * abs(float(bn.eig[-1]))
    ev = H.extreme_eigenvalues(batched_op, **kw)
    assert [e.lambda_max for e in ev] == pytest.approx([r.lambda_max for r in single], rel=1e-9)


def test_lanczos_step_reference_keeps_the_bases_orthonormal():
    g = torch.Generator().manual_seed(0)
    m, S, n = 3, 6, 20
    A = torch.randn(m, n, n, generator=g, dtype=F64)
    A = A + A.transpose(1, 2)
    Q = torch.zeros(m, S + 1, n, dtype=F64)
    Q[:, 0] = torch.nn.functional.normalize(torch.randn(m, n, generator=g, dtype=F64), dim=-1)
    beta = torch.zeros(m, dtype=F64)
    alphas, betas = [], []
    for j in range(S):
        w = torch.einsum("mij,mj->mi", A, Q[:, j])
        a, beta, Q[:, j + 1] = H.lanczos_step_reference(Q, w, j, beta)
        alphas.append(a)
        betas.append(beta)
    G = Q @ Q.transpose(1, 2)
    assert float((G - torch.eye(S + 1, dtype=F64)).abs().max()) < 1e-12
    # A Q_S = Q_S T_S + beta_S q_{S+1} e_S^T: the recurrence holds row by row
    T = torch.diag_embed(torch.stack(alphas, 1)) + torch.diag_embed(torch.stack(betas[:-1], 1), 1)
    T = T + torch.diag_embed(torch.stack(betas[:-1], 1), -1)
    lhs = A @ Q[:, :S].transpose(1, 2)
    rhs = Q[:, :S].transpose(1, 2) @ T
    rhs[:, :, -1] += betas[-1][:, None] * Q[:, S]
    assert float((lhs - rhs).abs().max()) < 1e-10


# ---------------------------------------------------------------------------- trace
def test_hutchinson_within_three_standard_errors(digits):
    tr = float(torch.trace(digits.H))
    est = H.hutchinson(digits.op(), samples=60, seed=0, vectors_per_call=20)
    assert est.hvps == 60 and est.samples.shape == (60,)
    assert est.stderr > 0 and abs(est.estimate - tr) <= 3 * est.stderr
    again = H.hutchinson(digits.op(), samples=60, seed=0, vectors_per_call=7)
    assert again.estimate == pytest.approx(est.estimate, rel=1e-12)


def test_exact_trace_with_the_full_basis(bn):
    exact = H.exact_trace(bn.op(), vectors_per_call=50)
    assert exact.stderr == 0 and exact.hvps == bn.n
    assert abs(exact.estimate - float(torch.trace(bn.H))) < 1e-12 * float(bn.H.abs().sum())
    np.testing.assert_allclose(exact.samples, torch.diagonal(bn.H).numpy(), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------- density
def test_slq_moments_are_exact_with_all_unit_vectors(mlp):
    n = mlp.n
    sd = H.slq(mlp.op(), steps=4, starts=torch.eye(n, dtype=F64))
    m0, m1, m2, m3 = sd.moments((0, 1, 2, 3))
    ev = mlp.eig.numpy()
    np.testing.assert_allclose(sd.weights.sum(1), 1.0, rtol=1e-12)
    # Gauss quadrature with s = 4 nodes integrates degree <= 7 exactly; the mean over e_i is tr/n
    assert m0 == pytest.approx(1.0, rel=1e-12)
    assert m1 == pytest.approx(ev.sum() / n, rel=1e-9)
    assert m2 == pytest.approx((ev**2).sum() / n, rel=1e-9)
    assert m3 == pytest.approx((ev**3).sum() / n, rel=1e-9)


def test_slq_moments_with_random_probes(digits):
    n = digits.n
    ev = digits.eig.numpy()
    sd = H.slq(digits.op(), probes=24, steps=12, seed=0)
    assert sd.nodes.shape == (24, 12) and sd.hvps == 24 * 12
    np.testing.assert_allclose(sd.weights.sum(1), 1.0, rtol=1e-10)
    # each probe's moments are Rademacher quadratic forms q^T H^p q (exact for p <= 23): their
    # mean is an unbiased estimate of tr(H^p)/n, off by a few standard errors at most
    for p, exact in ((1, ev.sum() / n), (2, (ev**2).sum() / n)):
        assert abs(sd.moment(p) - exact) <= 3 * sd.moment_stderr(p)
    # the extreme nodes are the extreme eigenvalues once 12 steps resolve them
    assert sd.nodes.max() == pytest.approx(ev.max(), rel=1e-6)
    grid, dens = sd.density(sigma=0.01 * (ev.max() - ev.min()), num=4000)
    mass = float(np.sum((dens[1:] + dens[:-1]) * np.diff(grid)) / 2)
    assert mass == pytest.approx(1.0, abs=1e-6)
    mean = float(np.sum(((grid * dens)[1:] + (grid * dens)[:-1]) * np.diff(grid)) / 2)
    assert mean == pytest.approx(sd.moment(1), abs=1e-6 * abs(ev).max())


def test_plot_density_returns_a_figure(digits):
    from matplotlib.figure import Figure

    sd = H.slq(digits.op(), probes=2, steps=8, seed=1)
    fig = plot_density(sd)
    assert isinstance(fig, Figure) and fig.axes[0].get_yscale() == "log"
    fig2 = plot_density(sd, ax=fig.axes[0], log=False)
    assert fig2 is fig


def test_lanczos_tolerance_relative_to_the_spectrum():
    # lambda_min near 0: relative to itself it needs (nearly) the whole space, relative to the
    # spectral radius both ends stop at the same absolute accuracy
    ev = torch.cat([torch.tensor([-1e-3]), torch.linspace(0.01, 3.0, 199)]).double()
    g = torch.Generator().manual_seed(0)
    Qm, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=F64))
    A = H.MatrixOperator(Qm @ torch.diag(ev) @ Qm.T)
    own = H.lanczos(A, tol=1e-3, max_iter=200)
    spec = H.lanczos(A, tol=1e-3, max_iter=200, relative_to="spectrum")
    assert spec.converged and spec.steps < own.steps
    assert abs(spec.lambda_max - 3.0) <= 1e-3 * 3.0 and abs(spec.lambda_min + 1e-3) <= 1e-3 * 3.0
    assert max(spec.residuals) <= 1e-3 * 3.0 + 1e-12
    with pytest.raises(ValueError, match="relative_to"):
        H.lanczos(A, relative_to="radius")


# ---------------------------------------------------------------------------- kept gradient graphs
@pytest.mark.parametrize("name", ["mlp", "bn", "digits"])
def test_kept_graphs_give_the_dense_hessian_and_read_the_data_once(name, request):
    """PyHessian's scheme: the gradient's graph of each batch is kept after the first product;
    later products are one backward pass through it, bitwise the products of a fresh pass."""
    p = request.getfixturevalue(name)
    kept = p.op(method="double-backward", reuse_graph=True, batch_size=24)
    fresh = p.op(method="double-backward", reuse_graph=False, batch_size=24)
    V = H.random_vectors(3, p.n, seed=6)
    for _ in range(3):
        a, b = kept(V), fresh(V)
        assert torch.equal(a, b)
        assert rel(a, V @ p.H) < 1e-12
        assert rel(kept(V[0]), p.H @ V[0]) < 1e-12
    assert kept.passes == 1 and fresh.passes == 3
    assert kept.count == fresh.count + 3
    kept.release_graph()
    assert torch.equal(kept(V), fresh(V)) and kept.passes == 2


def test_graphs_are_kept_by_default_on_cpu_only_when_they_fit(mlp, monkeypatch):
    V = H.random_vectors(2, mlp.n, seed=7)
    op = mlp.op()  # auto: double-backward on CPUs, graphs kept (a tiny model)
    op(V), op(V)
    assert op.passes == 1
    monkeypatch.setattr(H.hvp, "_GRAPH_CPU_BUDGET", 10)
    op = mlp.op()
    op(V), op(V)
    assert op.passes == 2
    op = mlp.op(reuse_graph=True)  # asked for: kept whatever the estimate
    op(V), op(V)
    assert op.passes == 1


def test_streamed_data_and_forward_mode_never_keep_graphs(mlp):
    x, y = mlp.data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    V = H.random_vectors(1, mlp.n, seed=8)
    op = H.HVP(mlp.model, mlp.weights, loader, dtype=F64, device="cpu", reuse_graph=True)
    a, b = op(V), op(V)
    assert op.passes == 2 and rel(b, V @ mlp.H) < 1e-12 and torch.equal(a, b)
    op = mlp.op(method="forward-over-reverse", reuse_graph=True)
    op(V), op(V)
    assert op.passes == 2


def test_reuse_graph_takes_three_values(mlp):
    with pytest.raises(ValueError, match=r"reuse_graph should be 'auto', True or False, got 'yes'"):
        mlp.op(reuse_graph="yes")
