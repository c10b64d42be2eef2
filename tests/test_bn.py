"""The BatchNorm "auto" policy: recompute exactly when a layer tracks running statistics."""

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
