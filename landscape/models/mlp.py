"""Multilayer perceptron as a plain ``nn.Sequential``.

The evaluation engine recognises stacks of ``nn.Flatten``/``nn.Linear``/activation modules and
evaluates them with a fused batched-linear kernel, so :class:`MLP` stays a plain
``nn.Sequential`` of those modules.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


class MLP(nn.Sequential):
    """Fully connected network ``Flatten, Linear, act, ..., Linear``.

    Parameters
    ----------
    in_features : int
        Size of one flattened input (64 for the flat digits).
    widths : sequence of int
        Hidden layer widths; ``()`` gives a linear classifier.
    num_classes : int
        Number of outputs.
    activation : str
        One of ``ACTIVATIONS`` (``"relu"``, ``"tanh"``, ...).
    bias : bool
        Give the linear layers biases (Anokhin & Yarotsky's ``Linear3NoBias`` and its kin
        have none).

    Notes
    -----
    Module indices: ``0`` is ``nn.Flatten``, then ``Linear`` at ``1, 3, 5, ...`` with the
    activation after each hidden one, so parameter names are ``1.weight``, ``1.bias``, ...

    Examples
    --------
    >>> import torch
    >>> MLP(64, (32, 16), 10)(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    """

    def __init__(
        self,
        in_features: int = 64,
        widths: Sequence[int] = (2000,),
        num_classes: int = 10,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        widths = [int(w) for w in widths]
        if any(w < 1 for w in widths) or in_features < 1 or num_classes < 1:
            raise ValueError(
                f"MLP sizes must be positive, got in_features={in_features}, widths={widths}, num_classes={num_classes}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width, bias=bias), ACTIVATIONS[activation]()]
            previous = width
        layers.append(nn.Linear(previous, num_classes, bias=bias))
        super().__init__(*layers)
        self.in_features = in_features
        self.widths = tuple(widths)
        self.num_classes = num_classes
        self.activation = activation
        self.use_bias = bool(bias)


def mlp(
    in_features: int = 64,
    widths: Sequence[int] = (2000,),
    num_classes: int = 10,
    activation: str = "relu",
    bias: bool = True,
) -> MLP:
    """Build an :class:`MLP` (the registry's ``mlp``)."""
    return MLP(in_features, widths, num_classes, activation, bias)
