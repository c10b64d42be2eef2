"""Wide residual networks (Zagoruyko & Komodakis, 2016), as the mode-connectivity and SWA
repositories train them on CIFAR (WideResNet-28x10).

Parameter names are those of both repositories' ``WideResNet28x10`` (``conv1``,
``layer1.0.bn1``, ``layer1.0.conv1``, ``layer1.0.bn2``, ``layer1.0.conv2``,
``layer1.0.shortcut.0``, ..., ``bn1``, ``linear``), so their checkpoints load as they are.

No module is in-place and ``forward`` has no data-dependent control flow, so the network runs
under ``torch.func.functional_call`` and ``torch.func.vmap`` (in eval mode).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WideBasicBlock", "WideResNet", "wideresnet28x10"]


class WideBasicBlock(nn.Module):
    """``conv2(relu(bn2(dropout(conv1(relu(bn1(x))))))) + shortcut(x)``.

    The stride sits on ``conv2``; the shortcut is a 1x1 conv with bias where the stride or
    the channel count changes (``shortcut.0``), else the identity.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nn.Module):
    """Wide ResNet of depth ``6n + 4`` and width factor ``k``.

    A 3x3 conv with 16 channels, three stages of ``n`` :class:`WideBasicBlock` with ``16 k``,
    ``32 k`` and ``64 k`` channels (stride 2 at the start of stages 2 and 3), a final batch
    norm and ReLU, global average pooling and a linear layer.

    Parameters
    ----------
    depth : int
        ``6n + 4`` (28 gives 4 blocks per stage).
    widen_factor : int
        ``k``.
    num_classes : int
        Number of outputs.
    dropout : float
        Dropout probability between the two convs of a block (0 in both repositories; with
        0 the slot holds ``nn.Identity``, which vmap accepts in train mode).
    in_channels : int
        Input channels.

    Notes
    -----
    The repositories pool with ``avg_pool2d(out, 8)``, which is the global average for 32x32
    inputs; this class takes the global average for any input size. Their final batch norm
    has ``momentum=0.9``, and so has this one.

    Examples
    --------
    >>> import torch
    >>> WideResNet(depth=10, widen_factor=1).eval()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth {depth} is not 6n + 4 for n >= 1 (e.g. 10, 16, 28, 40)")
        if widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be a positive integer, got {widen_factor}")
        n = (depth - 4) // 6
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=True)
        channels = 16
        stages = []
        for stage, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            blocks = []
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(WideBasicBlock(channels, width, stride, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn1 = nn.BatchNorm2d(channels, momentum=0.9)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, num_classes]`` of inputs ``Tensor[N, C, H, W]``."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.linear(out.mean(dim=(-2, -1)))


def wideresnet28x10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0, **kwargs) -> WideResNet:
    """WideResNet-28x10 (``depth`` and ``widen_factor`` may be given to build others)."""
    kwargs = {"depth": 28, "widen_factor": 10} | kwargs
    return WideResNet(num_classes=num_classes, dropout=dropout, in_channels=in_channels, **kwargs)
