"""Small reference architectures and model specs.

``build_model("resnet20", {"num_classes": 10})`` builds a built-in model;
``build_model("package.module:factory", '{"...": ...}')`` imports any factory.  Every model
runs under ``torch.func.functional_call`` and ``torch.func.vmap``.
"""

from .convnets import VGG, ConvFC, convfc, vgg16, vgg16_bn, vgg19, vgg19_bn
from .mlp import MLP, mlp
from .peers import PEER_MODELS, peer_key_map
from .registry import (
    ModelSpecError,
    build_model,
    describe_model,
    list_models,
    resolve_factory,
)
from .resnet import (
    PreResNet,
    ResNet,
    preresnet20,
    preresnet56,
    preresnet110,
    preresnet164,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from .small import small_cnn
from .wide_resnet import WideResNet, wideresnet28x10

__all__ = [
    "MLP",
    "PEER_MODELS",
    "VGG",
    "ConvFC",
    "ModelSpecError",
    "PreResNet",
    "ResNet",
    "WideResNet",
    "build_model",
    "convfc",
    "describe_model",
    "list_models",
    "mlp",
    "peer_key_map",
    "preresnet20",
    "preresnet56",
    "preresnet110",
    "preresnet164",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resolve_factory",
    "small_cnn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "wideresnet28x10",
]
