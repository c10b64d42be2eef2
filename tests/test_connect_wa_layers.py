"""wa_layer_count: the weighted layers weight adjustment works through, or why it cannot."""

import pytest
from torch import nn

import landscape as ls
from landscape.connect.adjust import NotSequentialError, wa_layer_count
from landscape.connect.graph import UnsupportedModelError


def test_counts_the_layers_of_mlps_and_sequential_convnets():
    assert wa_layer_count(ls.build_model("mlp", {"in_features": 6, "widths": [5], "num_classes": 3})) == 2
    assert wa_layer_count(ls.build_model("mlp", {"in_features": 6, "widths": [5, 4, 7], "num_classes": 3})) == 4
    conv = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10)
    )
    assert wa_layer_count(conv) == 2


def test_residual_networks_and_parametric_activations_are_refused():
    with pytest.raises(NotSequentialError):
        wa_layer_count(ls.build_model("resnet20", {"num_classes": 10}))
    with pytest.raises(ValueError, match="PReLU"):
        wa_layer_count(nn.Sequential(nn.Linear(4, 5), nn.PReLU(), nn.Linear(5, 2)))
    assert issubclass(NotSequentialError, UnsupportedModelError) and issubclass(UnsupportedModelError, ValueError)
