"""The traced structure of a model: one ``torch.fx`` trace per model, shared by every method.

Connections need to know which tensor axes hold the same hidden unit (permutation groups),
which layers follow one another (weight adjustment's layers) and which nodes every path from
the input to the output goes through (weight adjustment's cuts in residual networks). All of
these are read from one ``torch.fx.symbolic_trace`` of the model, made once per model and
kept while the model lives (:func:`traced`). The kinds of modules and functions the readers
understand are named here once (:data:`ELEMENTWISE`, :data:`PASS_MODULES`,
:data:`PASS_FUNCTIONS`, :data:`BATCHNORMS`).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

__all__ = [
    "BATCHNORMS",
    "CONVOLUTIONS",
    "ELEMENTWISE",
    "PASS_FUNCTIONS",
    "PASS_MODULES",
    "UnsupportedModelError",
    "traced",
]


class UnsupportedModelError(ValueError):
    """The channel structure of a model cannot be followed."""


#: Modules that act elementwise and have no per-neuron parameters: they commute with a
#: permutation of the neurons.
ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
    nn.Dropout,
)
#: Modules that pass the channels of their input through unchanged (activations, pooling,
#: dropout, identities).
PASS_MODULES = (
    *ELEMENTWISE,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_F = torch.nn.functional
#: Functions that pass the channels of their first argument through.
PASS_FUNCTIONS = frozenset(
    {
        _F.relu,
        _F.relu6,
        _F.leaky_relu,
        _F.elu,
        _F.selu,
        _F.gelu,
        _F.silu,
        _F.mish,
        _F.tanh,
        _F.sigmoid,
        _F.hardtanh,
        _F.softplus,
        _F.dropout,
        _F.max_pool1d,
        _F.max_pool2d,
        _F.max_pool3d,
        _F.avg_pool1d,
        _F.avg_pool2d,
        _F.avg_pool3d,
        _F.adaptive_avg_pool1d,
        _F.adaptive_avg_pool2d,
        _F.adaptive_avg_pool3d,
        _F.adaptive_max_pool1d,
        _F.adaptive_max_pool2d,
        torch.relu,
        torch.tanh,
        torch.sigmoid,
    }
)

#: model -> (signature, GraphModule): one trace per model while it lives
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    """What a cached trace depends on: the modules' names and types and the tensors' shapes."""
    mods = tuple((n, type(m)) for n, m in model.named_modules())
    shapes = tuple((n, tuple(t.shape)) for n, t in model.state_dict().items())
    return mods, shapes


def traced(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, made once per model (again only when its modules
    or tensor shapes changed).

    Raises
    ------
    UnsupportedModelError
        ``torch.fx`` cannot trace the model (the message names why).
    """
    import torch.fx

    sig = _signature(model)
    hit = _TRACES.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "connections need a model whose channel flow can be traced"
        ) from e
    _TRACES[model] = (sig, gm)
    return gm
