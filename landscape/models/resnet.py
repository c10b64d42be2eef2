"""CIFAR ResNets (He et al., 2016) and pre-activation ResNets (He et al., 2016b).

``ResNet`` is the CIFAR layout of "Deep Residual Learning for Image Recognition", section 4.2:
a 3x3 conv with 16 channels, three stages of ``n = (depth - 2) / 6`` basic blocks with 16, 32
and 64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a linear
layer.  Where a block changes shape its shortcut is a 1x1 conv + batch norm ("option B").

``PreResNet`` is the pre-activation variant of "Identity Mappings in Deep Residual Networks",
laid out as in Garipov et al. (2018)'s PreResNet-110/164: basic blocks below depth 44,
bottleneck blocks (``n = (depth - 2) / 9``) from depth 44 on, 1x1-conv shortcuts, and a final
batch norm + ReLU before pooling.

No module is in-place and ``forward`` has no data-dependent control flow, so the networks run
under ``torch.func.functional_call`` and ``torch.func.vmap`` (in eval mode, with the running
batch-norm statistics passed as buffers).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreResNet",
    "ResNet",
    "preresnet20",
    "preresnet56",
    "preresnet110",
    "preresnet164",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with a 1x1 conv + BN shortcut
    when the stride or the channel count changes."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _cifar_stages(depth: int, per_block: int, name: str) -> int:
    if depth < 2 + per_block or (depth - 2) % per_block != 0:
        raise ValueError(
            f"{name} depth {depth} is not 2 + {per_block}n for n >= 1 "
            f"(e.g. {', '.join(str(2 + per_block * n) for n in (3, 5, 9))})"
        )
    return (depth - 2) // per_block


class ResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (20, 32, 44, 56, 110, ...).

    Parameters
    ----------
    depth : int
        ``6n + 2`` layers.
    num_classes : int
        Number of outputs.
    in_channels : int
        Input channels (3 for CIFAR, 1 for ``digits:image``).
    width : int
        Channels of the first stage (16 in the paper); the stages have ``width``,
        ``2 width`` and ``4 width`` channels.

    Notes
    -----
    ResNet-20 with 10 classes has 272,474 parameters with these option-B shortcuts (0.27M in
    the paper, which uses zero-padding shortcuts).  Works for any input size of at least 4
    pixels (global average pooling).

    Examples
    --------
    >>> import torch
    >>> ResNet(20, num_classes=10).eval()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
    ) -> None:
        super().__init__()
        n = _cifar_stages(depth, 6, "ResNet")
        self.depth = depth
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        channels = width
        stages = []
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, stage_width, stride))
                channels = stage_width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, num_classes]`` of inputs ``Tensor[N, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean(dim=(-2, -1)))


class PreActBasicBlock(nn.Module):
    """``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)``; shortcut is a 1x1 conv."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: 1x1 (``channels``), 3x3 (stride), 1x1 (``4 channels``)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class PreResNet(nn.Module):
    """Pre-activation CIFAR ResNet.

    Parameters
    ----------
    depth : int
        ``6n + 2`` with basic blocks, ``9n + 2`` with bottleneck blocks.
    num_classes : int
        Number of outputs.
    in_channels : int
        Input channels.
    width : int
        Base channels of the first stage (16).
    block : {"auto", "basic", "bottleneck"}
        ``"auto"`` uses basic blocks below depth 44 and bottlenecks from 44 on, as
        Garipov et al.'s PreResNet (so PreResNet-56 has 6 bottlenecks per stage).

    Examples
    --------
    >>> import torch
    >>> PreResNet(20).eval()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        block: str = "auto",
    ) -> None:
        super().__init__()
        if block not in ("auto", "basic", "bottleneck"):
            raise ValueError(f"block {block!r} is not one of 'auto', 'basic', 'bottleneck'")
        if block == "auto":
            block = "bottleneck" if depth >= 44 else "basic"
        block_type = PreActBottleneck if block == "bottleneck" else PreActBasicBlock
        n = _cifar_stages(depth, 9 if block == "bottleneck" else 6, f"PreResNet ({block} blocks)")
        self.depth = depth
        self.block = block
        self.conv1 = _conv3x3(in_channels, width)
        channels = width
        stages = []
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block_type(channels, stage_width, stride))
                channels = stage_width * block_type.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, num_classes]`` of inputs ``Tensor[N, C, H, W]``."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(out.mean(dim=(-2, -1)))


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-20 (3 basic blocks per stage)."""
    return ResNet(20, num_classes, in_channels, width)


def resnet32(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-32 (5 basic blocks per stage)."""
    return ResNet(32, num_classes, in_channels, width)


def resnet44(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-44 (7 basic blocks per stage)."""
    return ResNet(44, num_classes, in_channels, width)


def resnet56(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-56 (9 basic blocks per stage)."""
    return ResNet(56, num_classes, in_channels, width)


def resnet110(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """CIFAR ResNet-110 (18 basic blocks per stage)."""
    return ResNet(110, num_classes, in_channels, width)


def preresnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> PreResNet:
    """Pre-activation ResNet-20 (3 basic blocks per stage)."""
    return PreResNet(20, num_classes, in_channels, width)


def preresnet56(num_classes: int = 10, in_channels: int = 3, width: int = 16, block: str = "auto") -> PreResNet:
    """Pre-activation ResNet-56 (6 bottlenecks per stage; ``block="basic"``: 9 basic blocks)."""
    return PreResNet(56, num_classes, in_channels, width, block)


def preresnet110(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> PreResNet:
    """Pre-activation ResNet-110 of Garipov et al. (12 bottlenecks per stage)."""
    return PreResNet(110, num_classes, in_channels, width)


def preresnet164(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> PreResNet:
    """Pre-activation ResNet-164 of Garipov et al. (18 bottlenecks per stage)."""
    return PreResNet(164, num_classes, in_channels, width)
