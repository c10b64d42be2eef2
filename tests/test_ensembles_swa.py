"""SWA: the average equals the mean of the collected weights, with or without the start."""

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.ensembles import swa


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
    assert res.collected == [2, 4, 6] and np.allclose(res.lr, 0.02)
    torch.testing.assert_close(res.weights["3.weight"].double(), _mean(res.snapshots, "3.weight"), rtol=0, atol=1e-6)
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
