"""SWA: the repository's procedure (schedule, one optimizer, collection every c epochs) against a
hand-written float64 loop; the average equals the mean of the collected weights."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape as ls
from landscape.ensembles import swa, swa_epoch_lr


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 2})  # with BatchNorm
    data = ls.load_data("digits:image", "train", max_samples=256)
    return model, ls.Weights.from_module(model), data


def _mean(ws, name):
    return torch.stack([w[name].double() for w in ws]).mean(0)


@pytest.mark.parametrize("include_start", [False, True])
def test_cyclical_average_is_the_mean_of_the_collected_weights(setup, include_start):
    model, start, data = setup
    res = swa(
        model,
        start,
        data,
        epochs=2,
        lr=0.05,
        lr_min=0.005,
        cycle_length=2,
        batch_size=64,
        include_start=include_start,
        keep_snapshots=True,
    )
    # 4 iterations per epoch, cycles of 2: collected at 2, 4, 6, 8 (and the start)
    assert res.collected == ([0] if include_start else []) + [2, 4, 6, 8]
    assert res.lr[1] == pytest.approx(0.005) and res.lr[0] == pytest.approx(0.0275)
    if include_start:
        assert torch.equal(res.snapshots[0]["0.weight"], start["0.weight"])
    for name in ("0.weight", "4.bias", "8.weight"):
        torch.testing.assert_close(res.weights[name].double(), _mean(res.snapshots, name), rtol=0, atol=1e-6)
    # BatchNorm statistics were recomputed for the average (not averaged, not the start's)
    assert not torch.allclose(res.weights["1.running_mean"], start["1.running_mean"])


def test_constant_schedule_averages_once_per_epoch(setup):
    model, start, data = setup
    res = swa(model, start, data, epochs=3, lr=0.02, batch_size=128, keep_snapshots=True)
    # the start counts (the repository's first model is the end of the pre-SWA phase)
    assert res.collected == [0, 2, 4, 6] and np.allclose(res.lr, 0.02)
    torch.testing.assert_close(res.weights["3.weight"].double(), _mean(res.snapshots, "3.weight"), rtol=0, atol=1e-6)
    assert torch.equal(res.snapshots[0]["3.weight"], start["3.weight"])
    old = swa(model, start, data, epochs=3, lr=0.02, batch_size=128, include_start=False)  # the earlier default
    assert old.collected == [2, 4, 6]
    with pytest.raises(ValueError, match="both lr_min and cycle_length"):
        swa(model, start, data, epochs=1, lr=0.02, lr_min=0.01)


def test_width_line_runs_through_both_solutions_in_distance_units():
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [16], "num_classes": 10})
    train = ls.load_data("digits", "train", max_samples=256)
    test = ls.load_data("digits", "test", max_samples=128)
    res = swa(model, ls.Weights.from_module(model), train, epochs=3, lr=0.05, batch_size=64)
    from landscape.ensembles import swa_line, swa_width

    line = swa_line(res.weights, res.sgd)
    dist = line.anchors[1]
    by_hand = sum(float((res.sgd[k].double() - res.weights[k].double()).pow(2).sum()) for k in res.sgd) ** 0.5
    assert dist == pytest.approx(by_hand, rel=1e-6)
    pts = line.points(np.array([0.0, dist]))
    for k in res.sgd:
        torch.testing.assert_close(pts.weights(0)[k], res.weights[k], rtol=0, atol=0)
        torch.testing.assert_close(pts.weights(1)[k], res.sgd[k], rtol=1e-5, atol=1e-6)
    wd = 1e-3
    out = swa_width(model, res, {"train": train, "test": test}, weight_decay=wd, points=9)
    xs = out.x
    assert xs.min() == pytest.approx(-dist) and xs.max() == pytest.approx(2 * dist) and dist in xs
    i0, i1 = int(np.argmin(abs(xs))), int(np.argmin(abs(xs - dist)))
    for w, i in ((res.weights, i0), (res.sgd, i1)):  # oracle: the L2-regularised loss by hand, float64
        net = ls.build_model("mlp", {"in_features": 64, "widths": [16], "num_classes": 10}).double()
        net.load_state_dict(w.state_dict())
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(net(train.x.double()), train.y)
            sq = sum(float(p.pow(2).sum()) for p in net.parameters())
            err = 100 * float((net(test.x.double()).argmax(1) != test.y).double().mean())
        assert out["train_loss+l2"][i] == pytest.approx(float(loss) + 0.5 * wd * sq, rel=1e-5)
        assert out["test_err"][i] == pytest.approx(err, abs=1e-9)


def test_width_line_refuses_identical_solutions(setup):
    from landscape.ensembles import swa_line

    _, start, _ = setup
    with pytest.raises(ValueError, match="coincide"):
        swa_line(start, start)


def _repository_lr(epoch0, lr_init, swa_lr, swa_start):
    """timgaripov/swa train.py's schedule(epoch), epoch counted from 0 (written out here)."""
    t = epoch0 / swa_start
    ratio = swa_lr / lr_init
    factor = 1.0 if t <= 0.5 else (1.0 - (1.0 - ratio) * (t - 0.5) / 0.4 if t <= 0.9 else ratio)
    return lr_init * factor


def test_repository_schedule_per_epoch():
    for e in range(1, 30):
        assert swa_epoch_lr(e, 0.1, 0.01, 20) == pytest.approx(_repository_lr(e - 1, 0.1, 0.01, 20), rel=1e-15)
    assert swa_epoch_lr(10, 0.1, 0.01, 20) == 0.1 and swa_epoch_lr(12, 0.1, 0.01, 20) == pytest.approx(0.08875)
    assert swa_epoch_lr(19, 0.1, 0.01, 20) == pytest.approx(0.01) and swa_epoch_lr(3, 0.1, 0.02, 0) == 0.02


def _problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(24, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    return net, DataLoader(TensorDataset(x, y), batch_size=8)  # 3 iterations per epoch, fixed order


def _hand_loop(net0, loader, *, epochs, swa_start, c, lr, swa_lr, restart=False, include_start=True):
    """The repository's train.py loop in float64: one SGD optimizer (or a new one at swa_start),
    its schedule per epoch, moving_average after epochs swa_start, swa_start + c, ..."""
    import copy

    net = copy.deepcopy(net0)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
    swa_w, n, lrs, collected, i = None, 0, [], [], 0
    for epoch in range(epochs):  # 0-based, as in the repository
        if restart and epoch == swa_start:
            opt = torch.optim.SGD(net.parameters(), lr=swa_lr, momentum=0.9, weight_decay=1e-3)
        rate = _repository_lr(epoch, lr, swa_lr, swa_start)
        for xb, yb in loader:
            i += 1
            for group in opt.param_groups:
                group["lr"] = rate
            lrs.append(rate)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        if epoch + 1 >= swa_start and (epoch + 1 - swa_start) % c == 0:
            if epoch + 1 == swa_start and not include_start:
                continue
            w = [p.detach().clone() for p in net.parameters()]
            swa_w = w if swa_w is None else [(a * n + b) / (n + 1) for a, b in zip(swa_w, w)]
            n += 1
            collected.append(i)
    return net, swa_w, lrs, collected


@pytest.mark.parametrize("restart", [False, True])
def test_repository_procedure_equals_a_hand_written_loop(restart):
    net, loader = _problem()
    start = ls.Weights.from_module(net)
    kw = dict(epochs=9, swa_start=4, lr=0.2, swa_lr=0.05)
    res = swa(net, start, loader, **kw, swa_c_epochs=2, restart=restart, include_start=True, weight_decay=1e-3)
    sgd, avg, lrs, collected = _hand_loop(net, loader, c=2, restart=restart, **kw)
    # the average of the weights after epochs 4, 6 and 8 (iterations 12, 18, 24)
    assert collected == [12, 18, 24] and res.collected == collected
    np.testing.assert_allclose(res.lr, lrs, rtol=1e-15, atol=0)
    assert res.lr[:6].tolist() == [0.2] * 6 and res.lr[-3:].tolist() == pytest.approx([0.05] * 3)
    names = [n for n, _ in net.named_parameters()]
    for name, p, a in zip(names, sgd.parameters(), avg):
        torch.testing.assert_close(res.sgd[name], p.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res.weights[name], a, rtol=1e-12, atol=1e-12)


def test_momentum_carries_into_the_averaging_phase_unless_restarted():
    net, loader = _problem()
    start = ls.Weights.from_module(net)
    kw = dict(epochs=6, swa_start=3, lr=0.2, swa_lr=0.05, weight_decay=1e-3, include_start=True)
    kept, fresh = swa(net, start, loader, **kw), swa(net, start, loader, **kw, restart=True)
    # the first three epochs are the same run; the momentum buffers make the rest differ
    one, _, _, _ = _hand_loop(net, loader, epochs=3, swa_start=3, c=1, lr=0.2, swa_lr=0.05)
    w3 = {n: p.detach() for n, p in one.named_parameters()}
    assert kept.collected == fresh.collected == [9, 12, 15, 18]
    assert (kept.sgd["0.weight"] - fresh.sgd["0.weight"]).abs().max() > 1e-4
    # restarting equals a new run from the weights after epoch 3 at swa_lr
    again = swa(net, ls.Weights({**start.tensors, **w3}, start.layout), loader, epochs=3, lr=0.05, weight_decay=1e-3)
    for name in w3:
        torch.testing.assert_close(fresh.sgd[name], again.sgd[name], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fresh.weights[name], again.weights[name], rtol=1e-12, atol=1e-12)


def test_collection_epochs_and_bad_settings():
    net, loader = _problem()
    start = ls.Weights.from_module(net)
    res = swa(net, start, loader, epochs=7, swa_start=2, swa_c_epochs=2, lr=0.1, swa_lr=0.05, include_start=False)
    assert res.collected == [12, 18]  # epochs 4 and 6; epoch 2 (the start of averaging) left out
    res = swa(net, start, loader, epochs=2, swa_start=2, lr=0.1, swa_lr=0.05)
    assert res.collected == [6]  # no averaging epoch: the end of the pre-SWA phase alone
    with pytest.raises(ValueError, match=r"swa_start should be .* \[0, epochs=3\], got 5"):
        swa(net, start, loader, epochs=3, swa_start=5, lr=0.1)
    with pytest.raises(ValueError, match="swa_c_epochs should be a positive integer, got 0"):
        swa(net, start, loader, epochs=3, swa_c_epochs=0, lr=0.1)
    with pytest.raises(ValueError, match="no weights were averaged"):
        swa(net, start, loader, epochs=3, swa_start=1, swa_c_epochs=5, lr=0.1, include_start=False)
