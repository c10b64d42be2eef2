"""Snapshot ensembles take their snapshots at the end of each cosine cycle; independent
ensembles are seeded and count their budget."""

import math

import pytest
import torch

import landscape as ls
from landscape.ensembles import independent, sse, sse_lr


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return ls.build_model("mlp", {"widths": [8]}), ls.load_data("digits", "train", max_samples=200)


def test_snapshots_at_cycle_ends_then_restart(setup):
    model, data = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = sse(model, data, epochs=5, cycles=3, lr=0.1, batch_size=64, seed=2)
    T = 5 * math.ceil(200 / 64)  # 20 iterations; period ceil(20 / 3) = 7
    assert res.iterations == [7, 14, 20] and len(res.members) == 3 and res.epochs == 5
    assert [res.lr[i - 1] for i in (1, 8, 15)] == pytest.approx([0.1, 0.1, 0.1])  # restarts
    assert [res.lr[i - 1] for i in (7, 14)] == pytest.approx([sse_lr(7, 0.1, T, 3)] * 2)
    assert res.lr[6] < res.lr[5] < res.lr[0]
    assert not torch.equal(res.members[0]["1.weight"], res.members[1]["1.weight"])
    for name, t in model.state_dict().items():  # the module is untouched
        assert torch.equal(t, before[name])


def test_independent_members_are_seeded_and_count_the_budget(setup):
    model, data = setup
    a = independent(model, data, members=2, epochs=1, seeds=[3, 4])
    b = independent(model, data, members=2, epochs=1, seeds=[3, 4])
    assert a.epochs == 2.0 and len(a.members) == 2
    assert torch.equal(a.members[1]["1.weight"], b.members[1]["1.weight"])
    assert not torch.equal(a.members[0]["1.weight"], a.members[1]["1.weight"])
    with pytest.raises(ValueError, match="seeds"):
        independent(model, data, members=2, epochs=1, seeds=[1])
