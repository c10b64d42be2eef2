"""FGE collects the weights exactly in the middle of every cycle."""

import copy

import pytest
import torch
import torch.nn.functional as F

import landscape as ls
from landscape.ensembles import fge, fge_lr


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [16]})
    data = ls.load_data("digits", "train", max_samples=300)
    return model, ls.Weights.from_module(model), data


def test_snapshots_are_taken_at_mid_cycle_with_the_smallest_rate(setup):
    model, start, data = setup
    res = fge(model, start, data, cycles=3, cycle_length=6, alpha1=0.05, alpha2=0.001, batch_size=50, seed=1)
    assert res.iterations == [3, 9, 15] and len(res.snapshots) == 3
    assert [res.lr[i - 1] for i in res.iterations] == pytest.approx([0.001] * 3)
    assert res.lr.max() == pytest.approx(0.05) and len(res.lr) == 18
    assert all(d > 0 for d in res.distance) and res.points().K == 3
    # the user's module is untouched
    for name, t in model.state_dict().items():
        assert torch.equal(t, start[name])


def test_snapshots_equal_an_independent_sgd_loop(setup):
    model, start, data = setup
    res = fge(model, start, data, cycles=2, cycle_length=4, alpha1=0.05, alpha2=0.001, batch_size=64, seed=3)
    # oracle: the same seeded minibatches, the seed's formula, plain torch SGD
    net = copy.deepcopy(model)
    net.load_state_dict(start.state_dict())
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(3)
    order, pos, got = torch.randperm(len(data.y), generator=g), 0, {}
    for i in range(1, 9):
        if pos + 64 > len(data.y):
            order, pos = torch.randperm(len(data.y), generator=g), 0
        idx = order[pos : pos + 64]
        pos += 64
        for group in opt.param_groups:
            group["lr"] = fge_lr(i, 0.05, 0.001, 4)
        opt.zero_grad()
        F.cross_entropy(net(data.x[idx]), data.y[idx]).backward()
        opt.step()
        if i in (2, 6):
            got[i] = {k: v.clone() for k, v in net.state_dict().items()}
    for snap, i in zip(res.snapshots, res.iterations):
        for name in got[i]:
            assert torch.equal(snap[name], got[i][name]), (i, name)


def test_bad_settings_are_refused(setup):
    model, start, data = setup
    with pytest.raises(ValueError, match="even"):
        fge(model, start, data, cycles=1, cycle_length=5, alpha1=0.05, alpha2=0.001)
    with pytest.raises(ValueError, match="alpha1 > alpha2"):
        fge(model, start, data, cycles=1, cycle_length=4, alpha1=0.001, alpha2=0.05)
