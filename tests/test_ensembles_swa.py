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
