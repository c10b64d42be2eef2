"""The BatchNorm "auto" policy: recompute exactly when a layer tracks running statistics."""

import pytest
import torch
from torch import nn

from landscape.bn import auto_mode
from landscape.models import build_model


def test_auto_mode_recomputes_models_with_batchnorm():
    assert auto_mode(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())) == "recompute"
    assert auto_mode(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))) == "recompute"
    assert auto_mode(build_model("mlp", {"widths": [8]})) == "running"


def test_auto_mode_ignores_batchnorm_without_running_statistics():
    # such a layer always normalises with its batch: there is nothing to recompute
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    assert auto_mode(model) == "running"
    assert auto_mode(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2))) == "running"


def test_swa_width_defaults_to_the_auto_policy(monkeypatch):
    from landscape import ensembles
    from landscape.weights import Weights

    seen = {}

    def fake_surface(model, line, xs, **kw):
        seen.update(bn=kw["bn"], bn_data=kw["bn_data"])

    monkeypatch.setattr("landscape.surface.compute_surface", fake_surface)
    train = (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    for make, want in (
        (lambda: nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "recompute"),
        (lambda: nn.Linear(2, 2), "running"),
    ):
        torch.manual_seed(0)
        model, other = make(), make()
        result = ensembles.SWAResult(Weights.from_module(model), Weights.from_module(other), [1])
        ensembles.swa_width(model, result, {"train": train})
        assert seen["bn"] == want
        assert (seen["bn_data"] is not None) == (want == "recompute")


def _bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3), nn.BatchNorm1d(3))
    return net.double().eval()


def _oracle_statistics(net, parts, weights):
    """Float64 by hand: each BatchNorm's batch means and unbiased variances, batch by batch
    (the layers below normalising with the batch's own biased statistics, as train mode
    does), averaged with ``weights``."""
    stats = {1: [], 4: []}
    with torch.no_grad():
        for x in parts:
            h = x @ net[0].weight.T + net[0].bias
            stats[1].append((h.mean(0), h.var(0, unbiased=True)))
            z = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + net[1].eps) * net[1].weight + net[1].bias
            g = torch.relu(z) @ net[3].weight.T + net[3].bias
            stats[4].append((g.mean(0), g.var(0, unbiased=True)))
    return {
        i: (sum(w * m for w, (m, _) in zip(weights, s)), sum(w * v for w, (_, v) in zip(weights, s)))
        for i, s in stats.items()
    }


def _loss_with(net, stats, x, y):
    import copy

    m = copy.deepcopy(net)
    for i, (mean, var) in stats.items():
        m[i].running_mean.copy_(mean)
        m[i].running_var.copy_(var)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(m(x), y))


def test_recompute_weights_batches_by_size_and_recompute_batches_equally():
    """A short last batch (10 + 10 + 3): ``recompute`` gives the count-weighted statistics
    (the mean is the whole data's mean), ``recompute-batches`` the equal-weight ones."""
    import landscape as ls
    from landscape.bn import update_bn

    net = _bn_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 4, dtype=torch.float64, generator=g) * 2 + 1
    y = torch.randint(0, 3, (23,), generator=g)
    parts = [x[:10], x[10:20], x[20:]]
    by_size = _oracle_statistics(net, parts, [10 / 23, 10 / 23, 3 / 23])
    equal = _oracle_statistics(net, parts, [1 / 3] * 3)
    h = x @ net[0].weight.T + net[0].bias  # the first layer's input statistics need no batches
    torch.testing.assert_close(by_size[1][0], h.mean(0), rtol=0, atol=1e-12)
    assert (by_size[4][0] - equal[4][0]).abs().max() > 1e-3  # the short batch matters here

    # the module pass (SWA's average)
    for weighting, want in (("samples", by_size), ("batches", equal)):
        m = update_bn(_bn_net(), (x, y), batch_size=10, weighting=weighting)
        for i, (mean, var) in want.items():
            torch.testing.assert_close(m[i].running_mean, mean, rtol=0, atol=1e-12)
            torch.testing.assert_close(m[i].running_var, var, rtol=0, atol=1e-12)
        assert not m.training and m[1].momentum == 0.1

    # the engine, at the checkpoint and at a point off it, through the loss it reports
    net2 = _bn_net()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype, generator=g))
    w1, w2 = ls.Weights.from_module(net), ls.Weights.from_module(net2)
    pts = ls.PointSet.from_weights([w1, w2], [[1.0, 0.0], [0.4, 0.6]])
    losses = {}
    for bn in ("recompute", "recompute-batches"):
        res = ls.evaluate(
            net, pts, (x, y), ["loss"], bn=bn, bn_batch_size=10, precision="fp64", path="loop", progress=False
        )
        losses[bn] = res["loss"]
    import copy

    for k, coeffs in enumerate(([1.0, 0.0], [0.4, 0.6])):
        point = copy.deepcopy(net)
        point.load_state_dict({n: coeffs[0] * w1[n] + coeffs[1] * w2[n] for n in net.state_dict()})
        for bn, weights in (("recompute", [10 / 23, 10 / 23, 3 / 23]), ("recompute-batches", [1 / 3] * 3)):
            want = _loss_with(point, _oracle_statistics(point, parts, weights), x, y)
            assert losses[bn][k] == pytest.approx(want, rel=1e-10)
    assert abs(losses["recompute"][1] - losses["recompute-batches"][1]) > 1e-6


def test_bad_weighting_is_refused_with_what_arrived():
    from landscape.bn import update_bn

    with pytest.raises(ValueError, match="weighting should be one of .*got 'batch'"):
        update_bn(_bn_net(), torch.zeros(4, 4, dtype=torch.float64), weighting="batch")
