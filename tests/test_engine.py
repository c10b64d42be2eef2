"""The batched engine against an independent float64 per-point loop."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

import landscape as ls
from landscape import bn as bnlib
from landscape.batches import call_model
from landscape.evaluate import _per_point_apply, linear_stack


def _convnet():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def _with_running_stats(model, shape, seed):
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape, generator=g) * 1.5 + 0.5)
    return model.eval()


def _plane(models, coeffs):
    return ls.PointSet.from_weights([ls.Weights.from_module(m) for m in models], coeffs)


COEFFS3 = [[1, 0, 0], [0, 0, 1], [1, 0.4, -0.3], [1, -0.6, 0.8], [0.2, 0.5, 0.3]]


def oracle(model, points, x, y, *, bn="running", bn_x=None, bn_batch=16, metric=None):
    """float64 per-point loop: load each point into a copy and evaluate."""
    rows = []
    bn_x = x if bn_x is None else bn_x
    for k in range(points.K):
        m = copy.deepcopy(model).double()
        m.load_state_dict(
            {n: t.double() if t.is_floating_point() else t for n, t in points.point(k, dtype=torch.float64).items()}
        )
        if bn == "recompute-batches":  # torch: every batch weighted equally
            update_bn([(bn_x.double()[i : i + bn_batch],) for i in range(0, len(bn_x), bn_batch)], m)
        elif bn == "recompute":  # the repositories' update_bn: momentum b / (n + b)
            for mod in m.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
            m.train()
            with torch.no_grad():
                for i in range(0, len(bn_x), bn_batch):
                    xb = bn_x.double()[i : i + bn_batch]
                    for mod in m.modules():
                        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                            mod.momentum = len(xb) / (i + len(xb))
                    m(xb)
        elif bn == "recompute-exact":
            for mod in m.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            with torch.no_grad():
                m(bn_x.double())
        m.eval()
        with torch.no_grad():
            out = m(x.double())
        if metric is not None:
            rows.append([float(metric(out, y))])
        else:
            rows.append([F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()])
    return np.array(rows)


def _check(res, ref, rtol):
    np.testing.assert_allclose(res["loss"], ref[:, 0], rtol=rtol, atol=0)
    np.testing.assert_allclose(res["acc"], ref[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("precision,rtol", [("fp64", 1e-9), ("fp32", 1e-5)])
def test_mlp_matches_float64_loop(precision, rtol):
    torch.manual_seed(0)
    models = [ls.build_model("mlp", {"in_features": 20, "widths": [32], "num_classes": 4}) for _ in range(3)]
    pts = _plane(models, COEFFS3)
    x, y = torch.randn(70, 20), torch.randint(0, 4, (70,))
    res = ls.evaluate(models[0], pts, (x, y), precision=precision, batch_size=32, progress=False)
    assert res.path == "fused"
    _check(res, oracle(models[0], pts, x, y), rtol)


def test_auto_leaves_large_bases_to_the_loop():
    # the fused kernel's cost grows with the basis size J (every point mixes J products):
    # many explicit points (OT swaps, WA paths) run faster in the loop, a plane stays fused
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [32], "num_classes": 10})
    x, y = torch.randn(50, 64), torch.randint(0, 10, (50,))
    many = [ls.Weights.from_module(ls.build_model("mlp", {"in_features": 64, "widths": [32]})) for _ in range(40)]
    pts = ls.PointSet.explicit(many)
    res = ls.evaluate(model, pts, (x, y), precision="fp64", progress=False)
    assert res.path == "loop"
    fused = ls.evaluate(model, pts, (x, y), precision="fp64", path="fused", progress=False)
    np.testing.assert_allclose(res["loss"], fused["loss"], rtol=1e-9)
    assert ls.evaluate(model, ls.PointSet.explicit(many[:3]), (x, y), progress=False).path == "fused"


@pytest.mark.parametrize("precision,rtol", [("fp64", 1e-9), ("fp32", 1e-5)])
def test_deep_mlp_fused_layers(precision, rtol):
    torch.manual_seed(1)
    models = [
        ls.build_model("mlp", {"in_features": 12, "widths": [16, 8], "num_classes": 3, "activation": "tanh"})
        for _ in range(3)
    ]
    pts = _plane(models, COEFFS3)
    x, y = torch.randn(40, 12), torch.randint(0, 3, (40,))
    res = ls.evaluate(models[0], pts, (x, y), precision=precision, path="fused", progress=False)
    assert res.path == "fused"
    _check(res, oracle(models[0], pts, x, y), rtol)
    # deeper stacks run their per-point layers as fast in the loop, which auto picks on CPU
    assert ls.evaluate(models[0], pts, (x, y), precision=precision, progress=False).path == "loop"


@pytest.mark.parametrize("bn", ["running", "recompute", "recompute-batches", "recompute-exact"])
@pytest.mark.parametrize("path", ["loop", "vmap"])
@pytest.mark.parametrize("precision,rtol", [("fp64", 1e-9), ("fp32", 1e-5)])
def test_convnet_batchnorm_modes(bn, path, precision, rtol):
    torch.manual_seed(2)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    pts = _plane(models, COEFFS3)
    x, y = torch.randn(45, 3, 8, 8), torch.randint(0, 5, (45,))
    bx = torch.randn(50, 3, 8, 8) * 1.3 + 0.2
    res = ls.evaluate(
        models[0],
        pts,
        (x, y),
        bn=bn,
        bn_data=(bx, torch.zeros(50, dtype=torch.long)),
        path=path,
        precision=precision,
        batch_size=20,
        bn_batch_size=16,
        progress=False,
    )
    assert res.path == path
    _check(res, oracle(models[0], pts, x, y, bn=bn, bn_x=bx), rtol)


@pytest.mark.parametrize("precision,rtol", [("fp64", 1e-9), ("fp32", 1e-5)])
def test_resnet20_cifar_shaped(precision, rtol):
    torch.manual_seed(3)
    models = [_with_running_stats(ls.build_model("resnet20"), (3, 32, 32), s) for s in range(2)]
    pts = _plane(models, [[1, 0], [0.3, 0.7], [0, 1]])
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    res = ls.evaluate(models[0], pts, (x, y), precision=precision, path="vmap", progress=False)
    _check(res, oracle(models[0], pts, x, y), rtol)
    res = ls.evaluate(
        models[0], pts, (x, y), precision=precision, bn="recompute", bn_batch_size=4, path="loop", progress=False
    )
    _check(res, oracle(models[0], pts, x, y, bn="recompute", bn_batch=4), rtol)


def test_recompute_equals_update_bn_buffers():
    torch.manual_seed(4)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    pts = _plane(models, COEFFS3).to(dtype=torch.float64)
    work = copy.deepcopy(models[0]).double()
    bx = torch.randn(37, 3, 8, 8, dtype=torch.float64)
    batches = [bx[i : i + 10] for i in range(0, 37, 10)]
    for vectorized in (True, False):
        apply = _per_point_apply(vectorized)
        tensors = bnlib.recompute_bn(
            lambda t, b: apply(lambda p, bb: call_model(work, p, bb), t, b),  # noqa: B023
            work,
            pts.tensors(),
            batches,
            weighting="batches",  # torch's update_bn weights the batches equally
        )
        for k in range(pts.K):
            m = copy.deepcopy(models[0]).double()
            m.load_state_dict(pts.point(k))
            update_bn([(b,) for b in batches], m)
            for name, buf in m.named_buffers():
                torch.testing.assert_close(tensors[name][k], buf, rtol=1e-12, atol=1e-12)
    assert all(m.momentum == 0.1 for m in work.modules() if isinstance(m, nn.BatchNorm2d))
    assert not work.training


def test_recompute_exact_equals_one_big_batch():
    torch.manual_seed(5)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(2)]
    pts = _plane(models, [[0.5, 0.5], [1.5, -0.5]]).to(dtype=torch.float64)
    work = copy.deepcopy(models[0]).double().eval()
    bx = torch.randn(41, 3, 8, 8, dtype=torch.float64)
    tensors = bnlib.recompute_bn_exact(
        _per_point_apply(True), work, pts.tensors(), lambda: iter([bx[i : i + 8] for i in range(0, 41, 8)])
    )
    for k in range(pts.K):
        m = copy.deepcopy(models[0]).double()
        m.load_state_dict(pts.point(k))
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None
        m.train()
        with torch.no_grad():
            m(bx)
        for name, buf in m.named_buffers():
            torch.testing.assert_close(tensors[name][k], buf, rtol=1e-10, atol=1e-12)


def test_engine_does_not_touch_the_model():
    torch.manual_seed(6)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    before = copy.deepcopy(models[0].state_dict())
    x, y = torch.randn(20, 3, 8, 8), torch.randint(0, 5, (20,))
    ls.evaluate(models[0], _plane(models, COEFFS3), (x, y), bn="recompute", path="vmap", progress=False)
    after = models[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not models[0].training
    assert all(m.momentum == 0.1 for m in models[0].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_custom_metric_and_l2_regularized_loss():
    torch.manual_seed(7)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    pts = _plane(models, COEFFS3)
    x = torch.randn(30, 3, 8, 8)
    target = torch.randn(30, 5)
    res = ls.evaluate(models[0], pts, (x, target), [nn.MSELoss()], precision="fp64", path="vmap", progress=False)
    ref = oracle(models[0], pts, x, target, metric=lambda o, t: F.mse_loss(o, t.double()))
    np.testing.assert_allclose(res["MSELoss"], ref[:, 0], rtol=1e-10)

    y = torch.randint(0, 5, (30,))
    wd = 1e-2
    res = ls.evaluate(models[0], pts, (x, y), ["loss", ls.metrics.l2_regularized(wd)], precision="fp64", progress=False)
    base = oracle(models[0], pts, x, y)[:, 0]
    for k in range(pts.K):
        w = pts.point(k, dtype=torch.float64)
        sq = sum(float(w[n].pow(2).sum()) for n, _ in models[0].named_parameters())
        assert res["loss+l2"][k] == pytest.approx(base[k] + 0.5 * wd * sq, rel=1e-10)
        assert res["loss+l2"][k] > res["loss"][k]


def test_onehot_rows_reproduce_basis_bit_for_bit():
    torch.manual_seed(8)
    models = [_convnet() for _ in range(3)]
    w = [ls.Weights.from_module(m) for m in models]
    with torch.no_grad():
        w[0].tensors["0.weight"][0, 0, 0, 0] = -0.0  # a signed zero survives too
    pts = ls.PointSet.from_weights(w, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    for k, j in enumerate([1, 0, 2]):
        for name, t in pts.point(k).items():
            assert torch.equal(t, w[j][name])
    assert torch.signbit(pts.point(1)["0.weight"][0, 0, 0, 0])
    # and the evaluation there equals the checkpoint's own
    x, y = torch.randn(10, 3, 8, 8), torch.randint(0, 5, (10,))
    res = ls.evaluate(models[0], pts, (x, y), path="loop", progress=False)
    direct = ls.evaluate(models[0], [w[1], w[0], w[2]], (x, y), path="loop", progress=False)
    assert np.array_equal(res["loss"], direct["loss"])


def test_memory_budget_too_small_is_a_clear_error():
    torch.manual_seed(9)
    models = [_convnet() for _ in range(2)]
    x, y = torch.randn(10, 3, 8, 8), torch.randint(0, 5, (10,))
    with pytest.raises(ls.MemoryBudgetError, match="too small for one point"):
        ls.evaluate(models[0], _plane(models, [[1, 0]]), (x, y), max_memory=1000, progress=False)


def test_budget_limits_points_per_pass():
    torch.manual_seed(10)
    models = [_convnet() for _ in range(2)]
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,))
    pts = _plane(models, [[1 - t, t] for t in np.linspace(0, 1, 16)])
    big = ls.evaluate(models[0], pts, (x, y), path="vmap", progress=False)
    small = ls.evaluate(models[0], pts, (x, y), path="vmap", max_memory=400_000, progress=False)
    assert small.points_per_pass < big.points_per_pass
    np.testing.assert_allclose(small["loss"], big["loss"], rtol=1e-5)


class _NeedsItem(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        scale = float(self.lin.weight.abs().max())  # .item(): vmap cannot trace this
        return self.lin(x) / scale


def test_vmap_failure_falls_back_to_loop_with_warning():
    torch.manual_seed(11)
    models = [_NeedsItem() for _ in range(2)]
    pts = _plane(models, [[1, 0], [0.5, 0.5], [0, 1]])
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    with pytest.warns(UserWarning, match="falling back to the per-point path"):
        res = ls.evaluate(models[0], pts, (x, y), path="vmap", precision="fp64", progress=False)
    assert res.path == "loop"
    _check(res, oracle(models[0], pts, x, y), 1e-9)


def test_linear_stack_detection():
    assert linear_stack(ls.build_model("mlp", {"widths": [8, 8]})) == ([("1", 1), ("3", 1), ("5", 0)], True)
    assert linear_stack(_convnet()) is None
    assert linear_stack(nn.Sequential(nn.ReLU(), nn.Linear(2, 2))) is None
    assert linear_stack(_NeedsItem()) is None


def test_bad_arguments():
    m = ls.build_model("mlp", {"in_features": 4, "widths": [3]})
    w = ls.Weights.from_module(m)
    data = (torch.randn(5, 4), torch.randint(0, 10, (5,)))
    with pytest.raises(ValueError, match="bn should be one of"):
        ls.evaluate(m, w, data, bn="fancy", progress=False)
    with pytest.raises(ValueError, match="precision should be one of"):
        ls.evaluate(m, w, data, precision="fp16", progress=False)
    with pytest.raises(ValueError, match="unknown metric 'los'"):
        ls.evaluate(m, w, data, ["los"], progress=False)
    with pytest.raises(ValueError, match="points do not match the model"):
        ls.evaluate(ls.build_model("mlp", {"in_features": 4, "widths": [3, 3]}), w, data, progress=False)
    with pytest.raises(ValueError, match="4 inputs but 5 targets"):
        ls.evaluate(m, w, (torch.randn(4, 4), torch.zeros(5, dtype=torch.long)), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ls.evaluate(m, w, data, progress=False)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_bf16_error_within_twice_pytorchs_own(path):
    """bf16 is judged like flash-attention: its error against the float64 oracle is at most
    twice (plus a hair) the error of PyTorch's own bf16 autocast forward at the same points."""
    torch.manual_seed(12)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    pts = _plane(models, COEFFS3)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,))
    ref = oracle(models[0], pts, x, y)[:, 0]
    res = ls.evaluate(models[0], pts, (x, y), precision="bf16", path=path, progress=False)
    own = []
    for k in range(pts.K):
        m = copy.deepcopy(models[0])
        m.load_state_dict(pts.point(k))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            own.append(F.cross_entropy(m(x).float(), y).item())
    err_ours = np.abs(res["loss"] - ref) / ref
    err_torch = np.abs(np.array(own) - ref) / ref
    assert err_ours.max() > 0  # bf16 really ran
    assert err_ours.max() <= 2 * err_torch.max() + 1e-4


def test_tf32_on_cpu_equals_fp32():
    torch.manual_seed(13)
    models = [_with_running_stats(_convnet(), (3, 8, 8), s) for s in range(3)]
    pts = _plane(models, COEFFS3)
    x, y = torch.randn(30, 3, 8, 8), torch.randint(0, 5, (30,))
    a = ls.evaluate(models[0], pts, (x, y), precision="tf32", path="loop", progress=False)
    b = ls.evaluate(models[0], pts, (x, y), precision="fp32", path="loop", progress=False)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
