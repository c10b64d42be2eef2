"""Sharpness measures against independent float64 references: the quadratic loss
L(w) = 1/2 w^T H w, whose worst case over the rho-ball at the minimum is rho^2 lambda_max / 2,
whose Gaussian average is sigma^2 tr(H) / 2 and whose sphere average is rho^2 tr(H) / (2n);
the rescaling invariance of adaptive sharpness; seeds; resuming."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import io as lio
from landscape import sharpness as S


def half_mse(out, y):
    """1/2 mean squared output: with a bias-free linear layer of one output and zero targets,
    the loss is exactly 1/2 w^T (X^T X / N) w."""
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


@pytest.fixture(scope="module")
def quadratic():
    """A model whose loss is 1/2 w^T H w, H = X^T X / N with a known spectrum (a gap at the top)."""
    n, N = 6, 240
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    scales = torch.tensor([3.0, 1.6, 1.2, 1.0, 0.7, 0.4], dtype=torch.float64)
    Z = torch.randn(N, n, generator=g, dtype=torch.float64)
    Z = Z - Z.mean(0)
    Z = Z @ torch.linalg.inv(torch.linalg.cholesky(Z.T @ Z / N)).T  # whitened: Z^T Z / N = I
    X = Z @ torch.diag(scales) @ Q.T
    y = torch.zeros(N, 1, dtype=torch.float64)
    model = nn.Linear(n, 1, bias=False).double()
    w = ls.Weights.from_module(model)
    w = ls.Weights({"weight": torch.zeros(1, n, dtype=torch.float64)}, w.layout)  # the minimum
    H = X.T @ X / N
    return model, w, (X, y), H


def test_worst_case_on_a_quadratic_is_rho_squared_lambda_max_over_two(quadratic):
    model, w, data, H = quadratic
    lam = torch.linalg.eigvalsh(H)
    for rho in (0.05, 0.3):
        s = S.worst_case_sharpness(
            model, w, data, rho, loss=half_mse, precision="fp64", init="random", steps=40, progress=False
        )
        assert s.value == pytest.approx(rho**2 * float(lam[-1]) / 2, rel=1e-4)
        assert s.norms[0] == pytest.approx(rho, rel=1e-9)  # the maximiser lies on the sphere
        assert s.base_loss == pytest.approx(0.0, abs=1e-15)


def test_m_sharpness_averages_each_batch_s_own_maximum(quadratic):
    model, w, (X, y), _ = quadratic
    rho, m = 0.2, 80
    s = S.worst_case_sharpness(
        model, w, (X, y), rho, m=m, loss=half_mse, precision="fp64", init="random", steps=60, progress=False
    )
    expected = []
    for start in range(0, X.shape[0], m):
        Xb = X[start : start + m]
        expected.append(rho**2 * float(torch.linalg.eigvalsh(Xb.T @ Xb / Xb.shape[0])[-1]) / 2)
    assert len(s.losses) == 3 and s.counts.tolist() == [80.0, 80.0, 80.0]
    np.testing.assert_allclose(s.increases, expected, rtol=1e-4)
    assert s.value == pytest.approx(np.mean(expected), rel=1e-4)
    # and the full-batch value is not the same number: each batch has its own maximiser
    full = S.worst_case_sharpness(
        model, w, (X, y), rho, loss=half_mse, precision="fp64", init="random", steps=60, progress=False
    )
    assert full.value < s.value


def test_average_case_on_a_quadratic_matches_the_trace(quadratic):
    model, w, data, H = quadratic
    n = H.shape[0]
    tr = float(torch.trace(H))
    sigma, rho, K = 0.1, 0.3, 400
    rep = S.compute_sharpness(
        model,
        w,
        data,
        [S.Measure("gaussian", sigma), S.Measure("sphere", rho), S.Measure("worst-case", rho)],
        samples=K,
        loss=half_mse,
        precision="fp64",
        init="random",
        steps=40,
        progress=False,
    )
    gauss, sphere, worst = rep.values
    # each perturbation's increase is exactly 1/2 delta^T H delta (float64 reference)
    for k in range(3):
        g = S._generator(0, k)
        z = torch.randn(n, generator=g, dtype=torch.float32).double()
        d = sigma * z
        assert gauss.increases[k] == pytest.approx(float(0.5 * d @ H @ d), rel=1e-10)
        d = rho * z / z.norm()
        assert sphere.increases[k] == pytest.approx(float(0.5 * d @ H @ d), rel=1e-10)
    # the means: within 4 standard errors of sigma^2 tr(H) / 2 and rho^2 tr(H) / (2n)
    sd_gauss = sigma**2 * math.sqrt(float(torch.trace(H @ H)) / 2)
    assert abs(gauss.increase - sigma**2 * tr / 2) < 4 * sd_gauss / math.sqrt(K)
    assert gauss.ci[0] < gauss.increase < gauss.ci[1]
    assert abs(sphere.increase - rho**2 * tr / (2 * n)) < 0.05 * rho**2 * tr / (2 * n)
    # worst case over the ball >= every point of the sphere, and so >= their mean
    assert worst.value >= sphere.increases.max() - 1e-12
    assert worst.value > sphere.increase
    np.testing.assert_allclose(sphere.norms, rho, rtol=1e-12)


def _mlp_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(96, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (96,), generator=g))
    return model, data


def _rescaled(w: ls.Weights, a: float) -> ls.Weights:
    t = dict(w.tensors)
    t["0.weight"], t["0.bias"], t["2.weight"] = a * t["0.weight"], a * t["0.bias"], t["2.weight"] / a
    return ls.Weights(t, w.layout)


def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_plain_sharpness_is_not():
    model, data = _mlp_and_data()
    w = ls.Weights.from_module(model)
    v = _rescaled(w, 4.0)
    opts = dict(precision="fp64", steps=15, samples=30, progress=False)
    measures = [
        S.Measure("worst-case", 0.5, adaptive=True),
        S.Measure("gaussian", 0.05, adaptive=True),
        S.Measure("worst-case", 0.5),
        S.Measure("gaussian", 0.05),
    ]
    a = S.compute_sharpness(model, w, data, measures, **opts)
    b = S.compute_sharpness(model, v, data, measures, **opts)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)  # the same function
    for x, y in zip(a.values[:2], b.values[:2]):
        assert x.value > 1e-4
        assert y.value == pytest.approx(x.value, rel=1e-8), x.measure.label
    for x, y in zip(a.values[2:], b.values[2:]):
        assert abs(y.value - x.value) > 0.1 * abs(x.value), x.measure.label


def test_seeds_reproduce_and_differ():
    model, data = _mlp_and_data()
    w = ls.Weights.from_module(model)
    measures = [S.Measure("sphere", 0.3), S.Measure("direction", 0.2), S.Measure("worst-case", 0.2)]
    opts = dict(samples=8, steps=5, init="random", progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = S.compute_sharpness(model, w, data, measures, seed=5, **opts)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not touched
    b = S.compute_sharpness(model, w, data, measures, seed=5, **opts)
    c = S.compute_sharpness(model, w, data, measures, seed=6, **opts)
    for x, y, z in zip(a.values, b.values, c.values):
        np.testing.assert_array_equal(x.losses, y.losses)
        assert not np.array_equal(x.losses, z.losses), x.measure.label


def test_keskar_is_the_relative_linf_box_worst_case():
    model, data = _mlp_and_data()
    w = ls.Weights.from_module(model)
    eps = 1e-3
    rep = S.compute_sharpness(model, w, data, [S.Measure("keskar", eps)], precision="fp64", steps=10, progress=False)
    v = rep.values[0]
    assert v.value == pytest.approx(100 * v.increase / (1 + v.base_loss), rel=1e-12)
    # the sign ascent from 0 reaches a corner of the box |delta_i| <= eps (|w_i| + 1)
    box = eps * (w.flatten(torch.float64).abs() + 1)
    assert v.norms[0] <= float(box.norm()) * (1 + 1e-12)
    assert v.norms[0] > 0.5 * float(box.norm())
    # first order: the increase is about eps * sum_i (|w_i| + 1) |g_i|
    loss, grad = ls.hessian.gradient(model, w, data, dtype=torch.float64)
    first = float((box * grad.abs()).sum())
    assert v.increase == pytest.approx(first, rel=0.1)


def test_a_file_resumes_without_recomputing_finished_cells(tmp_path, monkeypatch):
    model, data = _mlp_and_data()
    w = ls.Weights.from_module(model)
    measures = [S.Measure("worst-case", 0.2), S.Measure("gaussian", 0.05)]
    opts = dict(samples=12, m=32, steps=4, points_per_pass=4, progress=False)
    whole = S.compute_sharpness(model, w, data, measures, **opts)
    out = tmp_path / "s.h5"

    real_ascend, real_eval = S.ascend, S.evaluate_points
    calls = {"ascend": 0, "points": []}

    def ascend_then_die(*a, **k):
        calls["ascend"] += 1
        if calls["ascend"] == 2:
            raise KeyboardInterrupt
        return real_ascend(*a, **k)

    monkeypatch.setattr(S, "ascend", ascend_then_die)
    with pytest.raises(KeyboardInterrupt):
        S.compute_sharpness(model, w, data, measures, out=out, **opts)
    with lio.open_result(out) as rf:
        assert rf.done.sum() == 2  # L(w) and the first batch

    def counting_ascend(*a, **k):
        calls["ascend"] += 1
        return real_ascend(*a, **k)

    def eval_then_die(model_, points, *a, on_chunk=None, **k):
        calls["points"].append(points.K)

        def write_once(idx, vals):
            on_chunk(idx, vals)
            raise KeyboardInterrupt

        return real_eval(model_, points, *a, on_chunk=write_once, **k)

    calls["ascend"] = 0
    monkeypatch.setattr(S, "ascend", counting_ascend)
    monkeypatch.setattr(S, "evaluate_points", eval_then_die)
    with pytest.raises(KeyboardInterrupt):
        S.compute_sharpness(model, w, data, measures, out=out, resume=True, **opts)
    assert calls["ascend"] == 2 and calls["points"] == [12]  # the two batches left, all perturbations

    def counting_eval(model_, points, *a, **k):
        calls["points"].append(points.K)
        return real_eval(model_, points, *a, **k)

    monkeypatch.setattr(S, "evaluate_points", counting_eval)
    calls["ascend"], calls["points"] = 0, []
    rep = S.compute_sharpness(model, w, data, measures, out=out, resume=True, **opts)
    assert calls["ascend"] == 0 and calls["points"] == [8]  # only the perturbations not written
    assert rep.computed == 8
    for x, y in zip(rep.values, whole.values):
        np.testing.assert_allclose(x.losses, y.losses, rtol=1e-6)
    again = S.compute_sharpness(model, w, data, measures, out=out, resume=True, **opts)
    assert again.computed == 0 and calls["points"] == [8]
    read = S.read_sharpness(out)
    assert [v.value for v in read.values] == [v.value for v in rep.values]
    assert lio.check_kind(out).name == "sharpness"
    with pytest.raises(lio.ResultFileError, match="cannot resume"):
        S.compute_sharpness(model, w, data, measures, out=out, resume=True, **{**opts, "seed": 1})
    with pytest.raises(lio.ResultExistsError):
        S.compute_sharpness(model, w, data, measures, out=out, **opts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.Measure("worst", 0.1), "sharpness kind 'worst' is unknown"),
        (lambda: S.Measure("gaussian", -1.0), "radius should be a positive number, got -1.0"),
        (lambda: S.Measure("worst-case", 0.1, norm="l1"), "norm should be 'l2' or 'linf'"),
        (lambda: S.Measure("direction", 0.1, adaptive=True), "adaptive=True does not apply"),
    ],
)
def test_bad_measures_say_what_arrived(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_settings_say_what_arrived():
    model, data = _mlp_and_data()
    w = ls.Weights.from_module(model)
    q = [S.Measure("gaussian", 0.1)]
    with pytest.raises(ValueError, match="samples should be a positive integer, got 0"):
        S.compute_sharpness(model, w, data, q, samples=0, progress=False)
    with pytest.raises(ValueError, match="init should be 'zero' or 'random'"):
        S.compute_sharpness(model, w, data, q, init="gauss", progress=False)
    with pytest.raises(ValueError, match="measures asked for twice"):
        S.compute_sharpness(model, w, data, q + q, progress=False)
    with pytest.raises(ValueError, match="precision should be one of"):
        S.compute_sharpness(model, w, data, q, precision="bf16", progress=False)
