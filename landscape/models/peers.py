"""The peers' architectures under their own names, and their checkpoints' parameter names.

Three research repositories train the networks this library studies and save their weights
with ``torch.save``:

- dnn-mode-connectivity (Garipov et al., 2018; "dmc"): ``VGG16``, ``VGG16BN``, ``VGG19``,
  ``VGG19BN``, ``PreResNet110``, ``PreResNet164``, ``WideResNet28x10``, ``ConvFC``; files
  ``{'epoch', 'model_state', 'optimizer_state'}``.
- the SWA repository (Izmailov et al., 2018; "swa"): ``VGG16``, ``VGG16BN``, ``VGG19``,
  ``VGG19BN``, ``PreResNet110``, ``PreResNet164``, ``WideResNet28x10``; files
  ``{'epoch', 'state_dict', 'swa_state_dict', 'swa_n', 'optimizer'}`` (two state dicts: pick
  one with ``FILE.pt:swa_state_dict`` or ``FILE.pt:state_dict``).
- distribution-based connectivity (Anokhin & Yarotsky, 2020; "dbc"): the MLPs
  ``LinearOneLayer*``, ``Linear*`` and ``Linear*NoBias``, ``VGG16``, ``VGG19``, ``VGG19BN``,
  ``ConvFC``; files ``{'epoch', 'model_state', 'optimizer_state'}``.

Each of their classes is a model spec here, ``<peer>.<class name in lower case>``
(``dmc.vgg16bn``, ``swa.preresnet110``, ``dbc.linear3nobias``): it builds our network of the
same computation with the peer's sizes. Where a peer names parameters differently from our
network (dmc's and dbc's VGG keep their convs in ``layer_blocks.<stage>.<index>``, dbc's
MLPs in ``fc.<index>`` or ``linear_layers.<index>``), :func:`peer_key_map` gives the
renaming, which :func:`landscape.load_checkpoint` applies by itself: such a checkpoint loads
into the spec above or into our own ``vgg16``, ``mlp``... with matching sizes. The other
architectures (PreResNet, ConvFC, SWA's VGG, WideResNet) already carry the peers' names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .convnets import VGG, convfc, vgg16, vgg16_bn, vgg19, vgg19_bn
from .mlp import MLP, mlp
from .resnet import preresnet110, preresnet164
from .wide_resnet import wideresnet28x10

__all__ = ["PEER_MODELS", "PEER_NAMINGS", "PeerNaming", "peer_key_map"]


@dataclass(frozen=True)
class PeerNaming:
    """How a peer repository names the parameters of one of our networks.

    ``table(model)`` returns ``{peer's name: our name}`` for every entry of the model's
    ``state_dict``, or ``None`` when the naming does not apply to this kind of model.
    """

    name: str
    table: Callable[[nn.Module], dict[str, str] | None]


def _entries(prefix: str, module: nn.Module, our_prefix: str) -> dict[str, str]:
    return {f"{prefix}.{key}": f"{our_prefix}.{key}" for key in module.state_dict()}


def _vgg_layer_blocks(model: nn.Module) -> dict[str, str] | None:
    """dmc's and dbc's VGG: the convs (and batch norms) of stage ``s`` are
    ``layer_blocks.s.0, layer_blocks.s.1, ...``; the classifier has our indices."""
    if not isinstance(model, VGG):
        return None
    table: dict[str, str] = {}
    stage = index = 0
    for name, module in model.features.named_children():
        if isinstance(module, nn.MaxPool2d):
            stage, index = stage + 1, 0
        elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            table |= _entries(f"layer_blocks.{stage}.{index}", module, f"features.{name}")
            index += 1
    return table | _entries("classifier", model.classifier, "classifier")


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]] | None:
    if not isinstance(model, MLP):
        return None
    return [(name, m) for name, m in model.named_children() if isinstance(m, nn.Linear)]


def _mlp_linear_layers(model: nn.Module) -> dict[str, str] | None:
    """dbc's ``LinearBase`` (``Linear``, ``Linear3NoBias``...): ``linear_layers.j``."""
    linears = _linears(model)
    if linears is None:
        return None
    return {k: v for j, (name, m) in enumerate(linears) for k, v in _entries(f"linear_layers.{j}", m, name).items()}


def _mlp_fc_sequential(model: nn.Module) -> dict[str, str] | None:
    """dbc's ``LinearOneLayerBase``: ``fc = Sequential(Linear, ReLU, Linear)``, the j-th
    linear layer at ``fc.{2j}``."""
    linears = _linears(model)
    if linears is None:
        return None
    return {k: v for j, (name, m) in enumerate(linears) for k, v in _entries(f"fc.{2 * j}", m, name).items()}


def _mlp_fc_single(model: nn.Module) -> dict[str, str] | None:
    """dbc's ``LogRegression``: one linear layer ``fc``."""
    linears = _linears(model)
    if linears is None or len(linears) != 1:
        return None
    name, m = linears[0]
    return _entries("fc", m, name)


#: The peers' namings that differ from ours, tried in this order.
PEER_NAMINGS: tuple[PeerNaming, ...] = (
    PeerNaming("dnn-mode-connectivity / distribution-based connectivity VGG (layer_blocks)", _vgg_layer_blocks),
    PeerNaming("distribution-based connectivity MLP (linear_layers)", _mlp_linear_layers),
    PeerNaming("distribution-based connectivity one-hidden-layer MLP (fc)", _mlp_fc_sequential),
    PeerNaming("distribution-based connectivity logistic regression (fc)", _mlp_fc_single),
)


def peer_key_map(model: nn.Module, keys: Iterable[str]) -> tuple[str, dict[str, str]] | None:
    """The renaming of a checkpoint's keys onto ``model`` under a peer's naming.

    Parameters
    ----------
    model : nn.Module
        One of our networks (:class:`~landscape.models.VGG`, :class:`~landscape.models.MLP`).
    keys : iterable of str
        The checkpoint's keys.

    Returns
    -------
    (str, dict of str to str) or None
        The naming's description and ``{checkpoint key: model key}`` for every key, from the
        first naming of :data:`PEER_NAMINGS` that knows all the keys; ``None`` when none does
        (a checkpoint in the model's own names, or one of another network). Whether the
        renamed keys cover the model is the caller's check.

    Examples
    --------
    >>> from landscape.models import mlp
    >>> peer_key_map(mlp(widths=(5,)), ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"])[1]["fc.2.weight"]
    '3.weight'
    """
    keys = list(keys)
    if not keys:
        return None
    for naming in PEER_NAMINGS:
        table = naming.table(model)
        if table and all(k in table for k in keys):
            return naming.name, {k: table[k] for k in keys}
    return None


def _dbc_mlp(in_features: int, widths: tuple[int, ...], bias: bool = True) -> dict[str, Any]:
    return {"in_features": in_features, "widths": widths, "bias": bias}


_WIDE = (2 * 3072, 2 * 3072, 1152, 1000, 1000)

#: ``spec name -> (our factory, the peer's keyword arguments)``; the spec's kwargs override.
PEER_MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    **{
        f"{peer}.{name}": entry
        for peer in ("dmc", "swa")
        for name, entry in {
            "vgg16": (vgg16, {}),
            "vgg16bn": (vgg16_bn, {}),
            "vgg19": (vgg19, {}),
            "vgg19bn": (vgg19_bn, {}),
            "preresnet110": (preresnet110, {}),
            "preresnet164": (preresnet164, {}),
            "wideresnet28x10": (wideresnet28x10, {}),
        }.items()
    },
    "dmc.convfc": (convfc, {}),
    "dbc.vgg16": (vgg16, {}),
    "dbc.vgg19": (vgg19, {}),
    "dbc.vgg19bn": (vgg19_bn, {}),
    "dbc.convfc": (convfc, {}),
    "dbc.linear": (mlp, _dbc_mlp(3072, _WIDE)),
    "dbc.linearmnist": (mlp, _dbc_mlp(784, _WIDE)),
    "dbc.linearnobias": (mlp, _dbc_mlp(3072, _WIDE, bias=False)),
    "dbc.linear2nobias": (mlp, _dbc_mlp(3072, (2 * 3072,), bias=False)),
    "dbc.linear3nobias": (mlp, _dbc_mlp(3072, (2 * 3072, 2000), bias=False)),
    "dbc.linear3nobiasw": (mlp, _dbc_mlp(3072, (2 * 3072, 2 * 3072), bias=False)),
    "dbc.linear5nobias": (mlp, _dbc_mlp(3072, (2 * 3072, 2000, 1000, 1000), bias=False)),
    "dbc.linear7nobias": (mlp, _dbc_mlp(3072, (2 * 3072, 2000, 1000, 1000, 1000, 1000), bias=False)),
    "dbc.linearonelayer": (mlp, _dbc_mlp(784, (2000,))),
    "dbc.linearonelayer100": (mlp, _dbc_mlp(3072, (100,))),
    "dbc.linearonelayer500": (mlp, _dbc_mlp(3072, (500,))),
    "dbc.linearonelayer1000": (mlp, _dbc_mlp(3072, (1000,))),
    "dbc.linearonelayer2000": (mlp, _dbc_mlp(3072, (2000,))),
    "dbc.linearonelayer60k": (mlp, _dbc_mlp(3072, (60000,))),
}
