"""Plain convolutional networks: ConvFC, VGG-16 and VGG-19 (as in Garipov et al., 2018).

No module is in-place and ``forward`` has no data-dependent control flow, so the networks run
under ``torch.func.functional_call`` and ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["VGG", "VGG16_CONFIG", "VGG19_CONFIG", "ConvFC", "convfc", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


def _pooled_size(size: int) -> int:
    """Spatial size after ``MaxPool2d(kernel_size=3, stride=2)``."""
    return (size - 3) // 2 + 1


class ConvFC(nn.Module):
    """Three 5x5 conv layers with max pooling, then three fully connected layers.

    The network of Garipov et al. (2018), "Loss Surfaces, Mode Connectivity, and Fast
    Ensembling of DNNs": ``conv_part`` is ``Conv(5x5, pad 2) -> ReLU -> MaxPool(3, 2)`` three
    times with 32, 64, 128 channels; ``fc_part`` is ``Linear -> ReLU -> Linear -> ReLU ->
    Linear`` with 1000 hidden units.  Parameter names match that paper's code
    (``conv_part.0.weight``, ``fc_part.0.weight``, ...).

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    in_channels : int
        Input channels (3 for CIFAR, 1 for ``digits:image``).
    input_size : int
        Height = width of the input (32 for CIFAR, 8 for digits).  A pooling layer is kept
        only while the feature map is at least 3 pixels wide, so 32x32 inputs give exactly the
        paper's network (1152 features after the conv part) and 8x8 inputs still work.
    channels : sequence of int
        Channels of the three conv layers.
    hidden : int
        Width of the two hidden fully connected layers.

    Examples
    --------
    >>> import torch
    >>> ConvFC(10, in_channels=1, input_size=8)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = input_size
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size=5, padding=2), nn.ReLU()]
            if size >= 3:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
                size = _pooled_size(size)
            previous = width
        self.num_features = previous * size * size
        self.conv_part = nn.Sequential(*layers)
        self.fc_part = nn.Sequential(
            nn.Linear(self.num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        for module in self.conv_part.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, num_classes]`` of inputs ``Tensor[N, C, H, W]``."""
        return self.fc_part(self.conv_part(x).flatten(1))


VGG16_CONFIG: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)

VGG19_CONFIG: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256, 256),
    (512, 512, 512, 512),
    (512, 512, 512, 512),
)


class VGG(nn.Module):
    """VGG for 32x32 inputs: 3x3 conv stages with max pooling, then a 3-layer classifier.

    The CIFAR VGG-16 of Garipov et al. (2018): five stages (``VGG16_CONFIG``), each conv
    followed by (optional) batch norm and ReLU, a 2x2 max pool after each stage, and the
    classifier ``Dropout, Linear(512, 512), ReLU, Dropout, Linear(512, 512), ReLU,
    Linear(512, num_classes)``.

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    batch_norm : bool
        Insert ``BatchNorm2d`` after every conv.
    in_channels : int
        Input channels.
    width : float
        Multiplier of every channel count and of the classifier width (``0.125`` for fast
        tests); counts are rounded and at least 1.
    dropout : float
        Dropout probability of the classifier (0.5 in the paper).  Dropout is random in train
        mode, which ``vmap`` refuses by default: evaluate in eval mode (``landscape.bn`` puts
        only the BatchNorm layers in train mode), or pass ``dropout=0``, which puts
        ``nn.Identity`` in the dropout slots (same parameter names).
    input_size : int
        Height = width of the input; must be divisible by 32.
    config : sequence of sequence of int
        Channels per conv layer, one tuple per stage (default VGG-16).

    Examples
    --------
    >>> import torch
    >>> VGG(10, batch_norm=True, width=0.125).eval()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        batch_norm: bool = False,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.5,
        input_size: int = 32,
        config: Sequence[Sequence[int]] = VGG16_CONFIG,
    ) -> None:
        super().__init__()
        stages = len(config)
        if input_size % (2**stages) != 0:
            raise ValueError(f"VGG input_size {input_size} must be divisible by {2**stages} ({stages} pooling stages)")
        layers: list[nn.Module] = []
        previous = in_channels
        for stage in config:
            for channels in stage:
                out = max(1, round(channels * width))
                layers.append(nn.Conv2d(previous, out, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
                previous = out
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        size = input_size // 2**stages
        hidden = max(1, round(512 * width))

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.classifier = nn.Sequential(
            drop(),
            nn.Linear(previous * size * size, hidden),
            nn.ReLU(),
            drop(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, num_classes]`` of inputs ``Tensor[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


def convfc(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, **kwargs) -> ConvFC:
    """Build a :class:`ConvFC` (``convfc(in_channels=1, input_size=8)`` for digits images)."""
    return ConvFC(num_classes, in_channels, input_size, **kwargs)


def vgg16(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-16 without batch norm (see :class:`VGG` for ``width``, ``dropout``, ...)."""
    return VGG(num_classes, batch_norm=False, in_channels=in_channels, **kwargs)


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-16 with batch norm after every conv (see :class:`VGG`)."""
    return VGG(num_classes, batch_norm=True, in_channels=in_channels, **kwargs)


def vgg19(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-19 without batch norm (:class:`VGG` with ``VGG19_CONFIG``)."""
    return VGG(num_classes, batch_norm=False, in_channels=in_channels, config=VGG19_CONFIG, **kwargs)


def vgg19_bn(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-19 with batch norm after every conv (:class:`VGG` with ``VGG19_CONFIG``)."""
    return VGG(num_classes, batch_norm=True, in_channels=in_channels, config=VGG19_CONFIG, **kwargs)
