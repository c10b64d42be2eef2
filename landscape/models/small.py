"""A small convnet for 8x8 inputs (``digits:image``), optionally with BatchNorm.

Used by the mode-connectivity reproduction on digits (``tools/repro_curves.py``): two conv
layers, one pooling, one linear classifier. No module is in-place and ``forward`` has no
data-dependent control flow, so it runs under ``torch.func.functional_call`` and ``vmap``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["small_cnn"]


def small_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    width: int = 16,
    batch_norm: bool = True,
    input_size: int = 8,
) -> nn.Sequential:
    """``Conv(3x3, width) [BN] ReLU Conv(3x3, 2 width) [BN] ReLU MaxPool(2) Flatten Linear``.

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    in_channels : int
        Input channels (1 for ``digits:image``).
    width : int
        Channels of the first conv layer (the second has ``2 * width``).
    batch_norm : bool
        A ``BatchNorm2d`` after each conv layer.
    input_size : int
        Height = width of the (square, even-sized) input; 8 for digits.

    Examples
    --------
    >>> import torch
    >>> small_cnn()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    width = int(width)
    if width < 1 or num_classes < 1 or in_channels < 1 or input_size < 2:
        raise ValueError(
            f"small_cnn sizes must be positive, got num_classes={num_classes}, in_channels={in_channels}, "
            f"width={width}, input_size={input_size}"
        )
    w2 = 2 * width
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(width))
    layers += [nn.ReLU(), nn.Conv2d(width, w2, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(w2))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(w2 * (input_size // 2) ** 2, num_classes)]
    return nn.Sequential(*layers)
