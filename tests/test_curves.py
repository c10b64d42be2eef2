"""Curves: coefficient formulas, exact endpoints, gradients, fitting, profiles, planes."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape import curves as C
from landscape.directions import _param_vector


def test_bernstein_coefficients_sum_to_one_and_match_the_quadratic_formula():
    t = np.linspace(0, 1, 17)
    for n in range(0, 6):
        c = C.bezier_coefficients(t, n)
        assert c.shape == (17, n + 2)
        np.testing.assert_allclose(c.sum(1), 1.0, rtol=0, atol=1e-14)
        assert (c >= 0).all()
    q = C.bezier_coefficients(t, 1)  # (1-t)^2 w1 + 2t(1-t) theta + t^2 w2
    np.testing.assert_allclose(q, np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], 1), rtol=0, atol=1e-15)
    c3 = C.bezier_coefficients([0.3], 3)[0]
    np.testing.assert_allclose(c3, [math.comb(4, j) * 0.3**j * 0.7 ** (4 - j) for j in range(5)], rtol=1e-14)


def test_polychain_matches_the_seed_formula():
    t = np.linspace(0, 1, 21)
    c = C.polychain_coefficients(t, 1)
    # phi(t) = 2(t theta + (0.5 - t) w1) on [0, 0.5]; 2((t - 0.5) w2 + (1 - t) theta) on [0.5, 1]
    lo = t <= 0.5
    np.testing.assert_allclose(c[lo], np.stack([2 * (0.5 - t[lo]), 2 * t[lo], 0 * t[lo]], 1), atol=1e-15)
    np.testing.assert_allclose(c[~lo], np.stack([0 * t[~lo], 2 * (1 - t[~lo]), 2 * (t[~lo] - 0.5)], 1), atol=1e-15)
    c3 = C.polychain_coefficients([0.0, 0.25, 0.5, 0.75, 1.0], 3)
    np.testing.assert_array_equal(c3, np.eye(5))
    np.testing.assert_allclose(C.polychain_coefficients(t, 3).sum(1), 1.0, atol=1e-15)


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_derivative_coefficients_match_finite_differences(kind, n):
    f = C.bezier_coefficients if kind == "bezier" else C.polychain_coefficients
    d = C.bezier_derivative_coefficients if kind == "bezier" else C.polychain_derivative_coefficients
    t = np.array([0.11, 0.37, 0.62, 0.93])  # away from polychain bends
    h = 1e-6
    np.testing.assert_allclose(d(t, n), (f(t + h, n) - f(t - h, n)) / (2 * h), rtol=1e-6, atol=1e-6)


def _bn_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def _endpoints(factory, seed=0):
    out = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        m = factory()
        m.train()
        with torch.no_grad():
            m(torch.randn(32, *((1, 8, 8) if isinstance(m[0], nn.Conv2d) else (64,))))
        out.append(m.eval())
    return out


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("with_bn", [False, True])
def test_endpoints_are_the_checkpoints_bit_for_bit(kind, with_bn):
    factory = _bn_model if with_bn else (lambda: ls.build_model("mlp", {"widths": [16]}))
    ma, mb = _endpoints(factory)
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    curve = C.Curve(a, b, n_bends=3, kind=kind)
    with torch.no_grad():
        curve.bends.add_(0.1 * torch.randn_like(curve.bends))  # bends off the line
    pts = curve.points([0.0, 1.0])
    for k, w in enumerate((a, b)):
        assert all(torch.equal(pts.point(k)[n], w[n]) for n in w)
    data = ls.load_data("digits:image" if with_bn else "digits", "test", max_samples=200)
    bn = "recompute" if with_bn else "running"
    along = ls.evaluate(ma, pts, data, bn=bn, path="loop", progress=False)
    direct = ls.evaluate(ma, [a, b], data, bn=bn, path="loop", progress=False)
    np.testing.assert_allclose(along["loss"], direct["loss"], rtol=1e-6)
    np.testing.assert_array_equal(along["acc"], direct["acc"])


@pytest.mark.parametrize("fair", [False, True])
@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_curve_loss_gradient_matches_finite_differences(fair, kind):
    torch.manual_seed(3)
    ma, mb = (nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double() for _ in range(2))
    curve = C.Curve(ls.Weights.from_module(ma), ls.Weights.from_module(mb), n_bends=2, kind=kind)
    with torch.no_grad():
        curve.bends.add_(0.3 * torch.randn_like(curve.bends))
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    t = torch.tensor([0.2, 0.55, 0.8], dtype=torch.float64)
    model = copy.deepcopy(ma).train()

    def loss():
        return C.curve_loss(model, curve, x, y, t, fair=fair)

    grad = torch.autograd.grad(loss(), curve.bends)[0]
    rng = np.random.default_rng(0)
    for _ in range(8):
        j, p = int(rng.integers(0, 2)), int(rng.integers(0, curve.bends.shape[1]))
        h = 1e-6
        with torch.no_grad():
            curve.bends[j, p] += h
            up = float(loss())
            curve.bends[j, p] -= 2 * h
            down = float(loss())
            curve.bends[j, p] += h
        assert float(grad[j, p]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_fair_weights_come_from_the_gram_matrix():
    torch.manual_seed(4)
    ma, mb = (nn.Linear(6, 3) for _ in range(2))
    curve = C.Curve(ls.Weights.from_module(ma), ls.Weights.from_module(mb), n_bends=2)
    with torch.no_grad():
        curve.bends.add_(torch.randn_like(curve.bends))
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    h = 1e-6
    P = lambda tt: torch.as_tensor(curve.coefficients(np.array([tt]))) @ curve.basis(torch.float64).detach()  # noqa: E731
    for i, tt in enumerate(t.tolist()):
        numeric = float(((P(tt + h) - P(tt - h)) / (2 * h)).norm())
        assert float(curve.speed(t)[i].detach()) == pytest.approx(numeric, rel=1e-6)


def _digits_pair(seed=0, width=32, epochs=8):
    from landscape.demo import train_classifier

    train = ls.load_data("digits", "train")
    models = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        m = ls.build_model("mlp", {"widths": [width]})
        models.append(train_classifier(m, train, epochs=epochs, seed=s))
    return models, train


def test_fit_lowers_the_barrier_and_resume_equals_one_run(tmp_path):
    (ma, mb), train = _digits_pair()
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    kw = dict(epochs=4, lr=0.05, seed=5, progress=False)
    one = C.Curve(a, b, n_bends=1)
    C.fit_curve(ma, one, train, **kw)
    prof = C.evaluate_curve(ma, one, {"train": train}, points=21, progress=False)
    assert prof.barriers["curve"]["train"] < prof.barriers["line"]["train"]
    # interrupted after 2 of 4 epochs, then resumed: the same bends as one uninterrupted run
    ck = tmp_path / "curve.pt"

    def interrupt(epoch, history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.fit_curve(ma, C.Curve(a, b, n_bends=1), train, **kw, checkpoint=ck, on_epoch=interrupt)
    saved, state = C.load_curve(ck, ma)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    resumed = C.Curve(a, b, n_bends=1)
    res = C.fit_curve(ma, resumed, train, **kw, checkpoint=ck, resume=True)
    assert res.resumed_from == 2 and len(res.history) == 4
    torch.testing.assert_close(resumed.bends.detach(), one.bends.detach(), rtol=1e-5, atol=1e-7)
    with pytest.raises(FileExistsError, match="already exists"):
        C.fit_curve(ma, C.Curve(a, b, n_bends=1), train, **kw, checkpoint=ck)
    # the user's model was not touched by training
    assert all(torch.equal(ma.state_dict()[k], a[k]) for k in a)


def test_profile_file_rows_and_barriers(tmp_path):
    (ma, mb), train = _digits_pair(seed=2, epochs=3)
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    curve = C.Curve(a, b, n_bends=1)
    with torch.no_grad():
        curve.bends.add_(0.05 * torch.randn_like(curve.bends))
    test = ls.load_data("digits", "test")
    out = tmp_path / "p.h5"
    prof = C.evaluate_curve(ma, curve, {"train": train, "test": test}, points=11, out=out, progress=False)
    line = ls.compute_surface(ma, ls.directions.line_through(a, b), prof.t, splits={"test": test}, progress=False)
    np.testing.assert_allclose(prof.line("test_loss"), line["test_loss"], rtol=1e-6)
    h, where = C.barrier(prof.line("train_loss"), prof.t)
    with ls.open_result(out) as f:
        assert f.kind == "curve" and f.shape == (2, 11)
        assert f.attrs["barrier-line-train"] == pytest.approx(h) and f.attrs["barrier-t-line-train"] == where
        np.testing.assert_array_equal(f.read_array("t"), prof.t)
    # a finished profile resumes (the barriers it gained at the end are not a different run)
    again = C.evaluate_curve(ma, curve, {"train": train, "test": test}, points=11, out=out, resume=True, progress=False)
    np.testing.assert_array_equal(again.curve("test_loss"), prof.curve("test_loss"))
    with pytest.raises(ls.io.ResultFileError, match="cannot resume"):  # a different curve is refused
        C.evaluate_curve(ma, curve, {"train": train}, points=11, out=out, resume=True, progress=False)


def test_curve_plane_holds_a_one_bend_bezier_curve():
    torch.manual_seed(6)
    ma, mb = (ls.build_model("mlp", {"widths": [8]}) for _ in range(2))
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    curve = C.Curve(a, b, n_bends=1)
    with torch.no_grad():
        curve.bends.add_(0.2 * torch.randn_like(curve.bends))
    plane = C.curve_plane(curve, samples=11)
    traj, A = plane.arrays["trajectory"], plane.anchors
    np.testing.assert_allclose(traj[0], A[0], atol=1e-6)
    np.testing.assert_allclose(traj[-1], A[1], atol=1e-5)
    # the curve lies in the plane: the plane's point at the projected coordinates is the curve's
    t = np.linspace(0, 1, 11)
    on_plane = plane.points(traj[:, 0], traj[:, 1])
    on_curve = curve.points(t)
    for k in (2, 5, 8):
        torch.testing.assert_close(
            _param_vector(on_plane.weights(k)), _param_vector(on_curve.weights(k)), rtol=1e-4, atol=1e-5
        )
    assert plane.attrs["trajectory-label"].startswith("Bezier curve")


def test_bad_curve_arguments():
    a = ls.Weights.from_module(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="kind should be one of"):
        C.Curve(a, a, kind="spline")
    with pytest.raises(ValueError, match="init has 2 weights for 1 bends"):
        C.Curve(a, a, n_bends=1, init=[a, a])
    with pytest.raises(ValueError, match="nothing to train"):
        C.fit_curve(nn.Linear(2, 2), C.Curve(a, a, n_bends=0), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))
    assert C.learning_rate_factor("garipov", 0.2) == 1.0
    assert C.learning_rate_factor("garipov", 0.7) == pytest.approx(1 - 0.2 / 0.4 * 0.99)
    assert C.learning_rate_factor("garipov", 0.95) == 0.01
    _ = F  # noqa: F841


def test_cli_curve_fit_eval_plane_export(tmp_path, capsys, monkeypatch):
    from landscape.cli import main

    (ma, mb), _ = _digits_pair(seed=7, width=16, epochs=2)
    paths = [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    torch.save(ma.state_dict(), paths[0])
    torch.save(mb.state_dict(), paths[1])
    common = ["--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits", "--no-progress"]
    curve_file = str(tmp_path / "c.pt")
    fit = ["curve", "fit", *common, "--ckpt", paths[0], "--ckpt", paths[1], "--epochs", "2", "--out", curve_file]
    assert main(fit) == 0
    assert main(fit) == 2  # exists: neither --resume nor --force
    assert "already exists" in capsys.readouterr().err
    assert main(fit + ["--resume"]) == 0
    assert "resumed from 2" in capsys.readouterr().out
    assert (
        main(["curve", "eval", *common, "--curve", curve_file, "--points", "7", "--out", str(tmp_path / "e.h5")]) == 0
    )
    out = capsys.readouterr().out
    assert "line  train loss barrier" in out and "curve train loss barrier" in out
    with ls.open_result(tmp_path / "e.h5") as f:
        assert f.kind == "curve" and f.attrs["bn"] == "recompute" and f.done.all()
    # the engine options reach the profile: --path and --points-per-pass are not dropped
    seen = {}
    real = C.evaluate_curve

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(C, "evaluate_curve", spy)
    ev = ["curve", "eval", *common, "--curve", curve_file, "--points", "3", "--out", str(tmp_path / "e2.h5")]
    assert main(ev + ["--path", "loop", "--points-per-pass", "2"]) == 0
    assert seen["path"] == "loop" and seen["points_per_pass"] == 2
    assert (
        main(
            [
                "curve",
                "plane",
                *common,
                "--curve",
                curve_file,
                "--x",
                "-2:20:5",
                "--y",
                "-5:5:3",
                "--out",
                str(tmp_path / "p.h5"),
            ]
        )
        == 0
    )
    with ls.open_result(tmp_path / "p.h5") as f:
        assert f.attrs["surface-type"] == "curve-plane" and f.read_array("trajectory").shape[1] == 2
    assert (
        main(
            [
                "curve",
                "export",
                "--model",
                "mlp",
                "--model-kwargs",
                '{"widths": [16]}',
                "--curve",
                curve_file,
                "--t",
                "1.0",
                "--out",
                str(tmp_path / "end.pt"),
            ]
        )
        == 0
    )
    end = ls.load_checkpoint(tmp_path / "end.pt", ls.build_model("mlp", {"widths": [16]}))
    assert all(torch.equal(end[k], v) for k, v in mb.state_dict().items())


@pytest.mark.parametrize("t_per_batch", [1, 3])
def test_fit_with_batchnorm_leaves_the_endpoints_alone(t_per_batch):
    ma, mb = _endpoints(_bn_model)
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    before = {k: v.clone() for k, v in a.items()}
    data = ls.load_data("digits:image", "train", max_samples=256)
    curve = C.Curve(a, b, n_bends=1)
    start_bends = curve.bends.detach().clone()
    res = C.fit_curve(ma, curve, data, epochs=1, batch_size=64, t_per_batch=t_per_batch, progress=False)
    assert len(res.history) == 1 and np.isfinite(res.history[0]["loss"])
    assert not torch.equal(curve.bends.detach(), start_bends)
    assert all(torch.equal(a[k], before[k]) for k in before)  # num_batches_tracked included
