"""Curve training and evaluation as dnn-mode-connectivity (Garipov et al.) defines them.

The reference definitions (timgaripov/dnn-mode-connectivity): ``train.py``'s
``learning_rate_schedule`` applied at epochs 1..E, ``curves.l2_regularizer`` (wd/2 times
the squared norm of the curve's point at the sampled t, parameters only), ``--fix_start``
and ``--fix_end``, and ``eval_curve.py``'s length and integrated statistics.
"""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import curves as C


def _linear_pair(seed=0, d_in=5, d_out=3):
    torch.manual_seed(seed)
    ma, mb = nn.Linear(d_in, d_out).double(), nn.Linear(d_in, d_out).double()
    return ma, ls.Weights.from_module(ma), ls.Weights.from_module(mb)


def _zero_loss(out, y):
    return out.sum() * 0.0


def _data(n, d_in=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("lr_update", ["epoch", "batch"])
def test_learning_rate_per_epoch_follows_the_schedule_formula(lr_update):
    # With a zero loss, no momentum and weight decay on the bends only, every step scales
    # the bend by (1 - lr_k * wd): the product over the steps shows which lr each step ran at.
    model, a, b = _linear_pair()
    curve = C.Curve(a, b, n_bends=1)
    theta0 = curve.bends.detach().clone()
    lr, wd, epochs, n, bs = 0.5, 0.1, 10, 10, 4  # 3 steps per epoch
    res = C.fit_curve(
        model, curve, _data(n), epochs=epochs, batch_size=bs, lr=lr, momentum=0.0, weight_decay=wd,
        weight_decay_on="bends", lr_update=lr_update, loss=_zero_loss, device="cpu", progress=False,
    )  # fmt: skip

    def f(p):  # dnn-mode-connectivity's learning_rate_schedule, written out
        return 1.0 if p <= 0.5 else (1.0 - (p - 0.5) / 0.4 * 0.99 if p <= 0.9 else 0.01)

    steps = 3
    if lr_update == "epoch":
        lrs = [[lr * f(e / epochs)] * steps for e in range(1, epochs + 1)]
    else:
        lrs = [[lr * f((e - 1 + i / steps) / epochs) for i in range(steps)] for e in range(1, epochs + 1)]
    np.testing.assert_allclose([h["lr"] for h in res.history], [row[-1] for row in lrs], rtol=1e-15)
    scale = np.prod([1 - x * wd for row in lrs for x in row])
    torch.testing.assert_close(curve.bends.detach(), theta0 * scale, rtol=1e-12, atol=1e-14)
    if lr_update == "epoch":  # the first epoch already runs at f(1/E), the last at f(1)
        assert res.history[0]["lr"] == lr and res.history[-1]["lr"] == pytest.approx(lr * 0.01)


def test_bad_lr_update_is_refused():
    model, a, b = _linear_pair()
    with pytest.raises(ValueError, match="lr_update should be one of"):
        C.fit_curve(model, C.Curve(a, b), _data(8), epochs=1, lr_update="step", device="cpu", progress=False)


def _bn_pair(seed=0):
    torch.manual_seed(seed)
    out = []
    for _ in range(2):
        m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
        with torch.no_grad():
            m.train()(torch.randn(16, 4, dtype=torch.float64))  # running statistics away from 0 / 1
            m[1].weight.add_(torch.rand(6, dtype=torch.float64))
        out.append(m.eval())
    return out[0], ls.Weights.from_module(out[0]), ls.Weights.from_module(out[1])


def test_weight_decay_on_the_point_is_dnn_mode_connectivitys_l2_regularizer():
    # 0.5 * wd * sum over the network's parameters of ||w(t)||^2 (Linear and BatchNorm weights
    # and biases; running_mean, running_var, num_batches_tracked are buffers, left out)
    model, a, b = _bn_pair()
    curve = C.Curve(a, b, n_bends=1)
    with torch.no_grad():
        curve.bends.add_(0.5)
    theta = ls.Weights(a.unflatten(curve.bends[0].detach()), a.layout)
    params = [n for n, _ in model.named_parameters()]
    assert len(params) == 6 and len(dict(model.named_buffers())) == 3
    wd, t = 0.3, torch.tensor([0.2, 0.7], dtype=torch.float64)

    def phi(tt, name):  # the quadratic Bezier written out
        return (1 - tt) ** 2 * a[name] + 2 * tt * (1 - tt) * theta[name] + tt**2 * b[name]

    expected = 0.5 * wd * np.mean([sum(float(phi(tt, n).pow(2).sum()) for n in params) for tt in t.tolist()])
    value = C.curve_weight_decay(curve, t, wd)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
    # gradient w.r.t. the bend: wd * mean_t 2t(1-t) phi(t) on parameters, 0 on buffers
    grad = torch.autograd.grad(value, curve.bends)[0][0]
    g = a.unflatten(grad)
    for n in a.layout.names():
        if not a.layout[n].flat:
            continue
        want = wd * sum(2 * tt * (1 - tt) * phi(tt, n) for tt in t.tolist()) / len(t) if n in params else 0 * a[n]
        torch.testing.assert_close(g[n], want, rtol=1e-12, atol=1e-15)
    # ours: 0.5 * wd * ||theta||^2 over the parameters, whatever t
    bends = C.curve_weight_decay(curve, t, wd, on="bends")
    assert float(bends.detach()) == pytest.approx(
        0.5 * wd * sum(float(theta[n].pow(2).sum()) for n in params), rel=1e-12
    )
    with pytest.raises(ValueError, match="weight_decay_on should be one of"):
        C.curve_weight_decay(curve, t, wd, on="ends")


@pytest.mark.parametrize("on", ["point", "bends"])
def test_fit_decays_the_point_by_default_and_the_bends_on_request(on):
    # one SGD step, no momentum, zero loss, one t: the step is -lr * grad of the penalty alone
    model, a, b = _linear_pair(seed=1)
    curve = C.Curve(a, b, n_bends=1)
    theta0 = curve.bends.detach().clone()
    lr, wd = 0.1, 0.5
    C.fit_curve(
        model, curve, _data(6), epochs=1, batch_size=8, lr=lr, momentum=0.0, weight_decay=wd,
        weight_decay_on=on, schedule="constant", loss=_zero_loss, device="cpu", progress=False,
    )  # fmt: skip
    step = (curve.bends.detach() - theta0)[0] / (-lr * wd)
    A, B, T = a.flatten(), b.flatten(), theta0[0]
    if on == "bends":
        torch.testing.assert_close(step, T, rtol=1e-12, atol=1e-15)
        return
    # the step is 2t(1-t) phi(t) for the t that was drawn: find it on a fine grid, then check
    ts = np.linspace(1e-4, 1 - 1e-4, 20001)

    def form(tt):
        return 2 * tt * (1 - tt) * ((1 - tt) ** 2 * A + 2 * tt * (1 - tt) * T + tt**2 * B)

    best = min(ts, key=lambda tt: float((form(tt) - step).norm()))
    assert float((form(best) - step).norm()) < 1e-3 * float(step.norm())
    assert float((step - T).norm()) > 0.1 * float(T.norm())  # not the bends' decay


@pytest.mark.parametrize("fix_start,fix_end", [(True, True), (False, True), (True, False), (False, False)])
def test_gradient_reaches_an_endpoint_only_when_it_is_not_fixed(fix_start, fix_end, tmp_path):
    model, a, b = _bn_pair(seed=2)
    a.sha256, b.sha256 = "a" * 64, "b" * 64  # as if loaded from files
    x, y = _data(24, d_in=4)
    curve = C.Curve(a, b, n_bends=1)
    curve.release_endpoints(start=not fix_start, end=not fix_end)
    assert len(curve.trainable()) == 1 + (not fix_start) + (not fix_end)
    # the endpoint's gradient is the chain rule through c_0(t) = (1-t)^2: d/dA = (1-t)^2 dL/dphi,
    # and the bend's is 2t(1-t) dL/dphi, so grad_A = grad_theta * (1-t) / (2t) at one t
    t = torch.tensor([0.3], dtype=torch.float64)
    loss = C.curve_loss(model.train(), curve, x, y, t)
    grads = torch.autograd.grad(loss, curve.trainable())
    ratio = {"start": (1 - 0.3) / (2 * 0.3), "end": 0.3 / (2 * (1 - 0.3))}
    for name, g in zip([n for n in ("start", "end") if n in curve.free_ends], grads[1:]):
        torch.testing.assert_close(g, grads[0][0] * ratio[name], rtol=1e-10, atol=1e-14)
        assert float(g.abs().max()) > 0
    # training moves exactly the endpoints that are not fixed, never their running statistics
    curve = C.Curve(a, b, n_bends=1)
    ck = tmp_path / "c.pt"
    C.fit_curve(
        model, curve, (x, y), epochs=2, batch_size=8, lr=0.1, fix_start=fix_start, fix_end=fix_end,
        checkpoint=ck, device="cpu", progress=False,
    )  # fmt: skip
    assert curve.free_ends == {}
    for name, fixed, w in (("start", fix_start, a), ("end", fix_end, b)):
        now = getattr(curve, name)
        for n in w:
            moved = not torch.equal(now[n], w[n])
            assert moved == (not fixed and n in dict(model.named_parameters())), (name, n)
        assert (now.sha256 is None) == (not fixed)
    _, state = C.load_curve(ck, model)
    assert state["trained_ends"] == [n for n, f in (("start", fix_start), ("end", fix_end)) if not f]
    assert torch.equal(state["start"]["0.weight"], curve.start["0.weight"])
    assert (state["start_sha256"], state["end_sha256"]) == ("a" * 64, "b" * 64)  # where they came from


def test_resume_continues_trained_endpoints_exactly(tmp_path):
    model, a, b = _bn_pair(seed=3)
    data = _data(24, d_in=4)
    kw = dict(epochs=4, batch_size=8, lr=0.1, fix_start=False, seed=1, device="cpu", progress=False)
    one = C.Curve(a, b, n_bends=1)
    C.fit_curve(model, one, data, **kw)
    ck = tmp_path / "c.pt"

    def interrupt(epoch, history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.fit_curve(model, C.Curve(a, b, n_bends=1), data, **kw, checkpoint=ck, on_epoch=interrupt)
    resumed = C.Curve(a, b, n_bends=1)
    C.fit_curve(model, resumed, data, **kw, checkpoint=ck, resume=True)
    torch.testing.assert_close(resumed.start.flatten(), one.start.flatten(), rtol=0, atol=0)
    torch.testing.assert_close(resumed.bends.detach(), one.bends.detach(), rtol=0, atol=0)
    with pytest.raises(ls.io.ResultFileError, match="fix_start"):
        C.fit_curve(model, C.Curve(a, b, n_bends=1), data, **{**kw, "fix_start": True}, checkpoint=ck, resume=True)


def test_cli_fit_options_reach_the_fit(tmp_path, capsys):
    from landscape.cli import main

    model = ls.build_model("mlp", {"widths": [8]})
    paths = []
    for s in (0, 1):
        torch.manual_seed(s)
        paths.append(str(tmp_path / f"{s}.pt"))
        torch.save(ls.build_model("mlp", {"widths": [8]}).state_dict(), paths[-1])
    common = ["curve", "fit", "--model", "mlp", "--model-kwargs", '{"widths": [8]}', "--data", "digits"]
    common += ["--ckpt", paths[0], "--ckpt", paths[1], "--epochs", "1", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "d.pt")]) == 0
    _, state = C.load_curve(tmp_path / "d.pt", model)
    s = state["settings"]
    assert (s["weight_decay_on"], s["lr_update"], s["fix_start"], s["fix_end"]) == ("point", "epoch", True, True)
    assert state["trained_ends"] == []
    opts = ["--wd-on", "bends", "--lr-update", "batch", "--no-fix-end"]
    assert main([*common, *opts, "--out", str(tmp_path / "o.pt")]) == 0
    _, state = C.load_curve(tmp_path / "o.pt", model)
    s = state["settings"]
    assert (s["weight_decay_on"], s["lr_update"], s["fix_start"], s["fix_end"]) == ("bends", "batch", True, False)
    assert state["trained_ends"] == ["end"]
    end = ls.load_checkpoint(paths[1], model)
    assert not torch.equal(state["end"]["1.weight"], end["1.weight"])  # the end was trained
    assert torch.equal(state["start"]["1.weight"], ls.load_checkpoint(paths[0], model)["1.weight"])
    capsys.readouterr()
    ev = ["curve", "eval", "--model", "mlp", "--model-kwargs", '{"widths": [8]}', "--data", "digits"]
    ev += ["--curve", str(tmp_path / "o.pt"), "--points", "5", "--no-progress", "--out", str(tmp_path / "e.h5")]
    assert main(ev) == 0
    out = capsys.readouterr().out
    assert "length over the 5 points: curve" in out and "curve test_err" in out and "line  train_loss" in out
    assert main([*common, "--wd-on", "theta", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--wd-on" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_evaluate_curve_reports_length_and_integrated_statistics(kind, tmp_path):
    model, a, b = _bn_pair(seed=4)
    curve = C.Curve(a, b, n_bends=3, kind=kind)
    with torch.no_grad():
        curve.bends.add_(0.4 * torch.randn(curve.bends.shape, generator=torch.Generator().manual_seed(0)).double())
    x, y = _data(40, d_in=4, seed=5)
    splits = {"train": (x, y), "test": (x[:20], y[:20])}
    prof = C.evaluate_curve(model, curve, splits, points=13, out=tmp_path / "p.h5", progress=False)
    t = np.linspace(0, 1, 13)
    # oracle: the points' parameters written out in float64, buffers left out
    params = [n for n, _ in model.named_parameters()]
    ctrl = curve.control_points()

    def vec(w):
        return torch.cat([w[n].reshape(-1) for n in params]).double().numpy()

    W = np.stack([vec(w) for w in ctrl])
    phi = np.asarray(curve.coefficients(t)) @ W
    dl = np.r_[0.0, np.linalg.norm(np.diff(phi, axis=0), axis=1)]
    np.testing.assert_allclose(prof.segment_lengths[0], dl, rtol=1e-9, atol=1e-12)
    line = np.linalg.norm(W[-1] - W[0])
    np.testing.assert_allclose(prof.segment_lengths[1], np.r_[0.0, np.full(12, line / 12)], rtol=1e-9)
    assert prof.lengths["line"] == pytest.approx(line, rel=1e-9)
    if kind == "polychain":  # bends at t = 1/4, 1/2, 3/4 are on the grid: the exact length
        exact = sum(np.linalg.norm(W[j + 1] - W[j]) for j in range(4))
        assert prof.lengths["curve"] == pytest.approx(exact, rel=1e-9)
    else:  # the chord sum is below the arc length (mean speed on a fine grid)
        fine = float(curve.speed(torch.linspace(0, 1, 20001, dtype=torch.float64)).mean().detach())
        assert prof.lengths["curve"] < fine
    with ls.open_result(tmp_path / "p.h5") as f:
        np.testing.assert_array_equal(f.read_array("segment-length"), prof.segment_lengths)
    # DMC's statistics: int is the trapezoid over arc length divided by the length
    for r, row in enumerate(("curve", "line")):
        s_cum = np.cumsum(prof.segment_lengths[r])
        for name in ("train_loss", "test_loss", "train_acc"):
            v = prof.metrics[name][r]
            st = prof.stats[row][name]
            assert st["int"] == pytest.approx(np.trapezoid(v, s_cum) / s_cum[-1], rel=1e-12)
            assert st["int_t"] == pytest.approx(np.trapezoid(v, t), rel=1e-12)
            assert (st["min"], st["max"], st["start"], st["end"]) == (v.min(), v.max(), v[0], v[-1])
            assert st["avg"] == pytest.approx(v.mean(), rel=1e-12)
        err = prof.stats[row]["test_err"]
        assert err["max"] == pytest.approx(1 - prof.metrics["test_acc"][r].min(), abs=1e-15)
    if kind == "bezier":  # along a curve whose speed varies, the two integrals differ
        v = prof.metrics["train_loss"][0]
        assert prof.stats["curve"]["train_loss"]["int"] != pytest.approx(np.trapezoid(v, t), rel=1e-6)


def test_path_statistics_of_planted_values():
    t = np.array([0.0, 0.5, 1.0])
    st = C.path_statistics([1.0, 3.0, 2.0], [0.0, 1.0, 3.0], t)
    # (2 * 1 + 2.5 * 3) / 4 = 2.375; over t: 0.5 * (2 + 2.5) = 2.25
    assert st == {"start": 1.0, "end": 2.0, "min": 1.0, "max": 3.0, "avg": 2.0, "int": 2.375, "int_t": 2.25}
