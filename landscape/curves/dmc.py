"""Curve checkpoints of dnn-mode-connectivity (Garipov et al., 2018; "DMC") as :class:`Curve`.

DMC's ``train.py --curve Bezier|PolyChain --num_bends N`` saves ``{'epoch', 'model_state',
'optimizer_state'}``, where ``model_state`` is its ``CurveNet.state_dict()``:

- ``coeff_layer.*``: the buffers of the coefficient module: ``range``, ``rev_range`` and
  ``binom`` for a Bezier curve, ``range`` alone for a polygonal chain (so the file records the
  curve type, and ``len(range)`` is ``N``);
- ``net.<module>.weight_<i>`` and ``net.<module>.bias_<i>``: control point ``i`` of every curve
  layer, ``i = 0`` the start and ``i = N - 1`` the end (``N`` counts both ends: ``N = n_bends + 2``);
- ``net.<bn>.running_mean``, ``running_var``, ``num_batches_tracked``: one set of BatchNorm
  running statistics for the whole curve (DMC's curve BatchNorm keeps no statistics per
  control point; its ``eval_curve.py`` recomputes them at every t).

The curve networks name some modules differently from DMC's base networks: VGG's classifier is
``fc1``, ``fc2``, ``fc3`` (``classifier.1``, ``.4``, ``.6`` in the base), ConvFC's layers are
``conv1..conv3``, ``fc4..fc6`` (``conv_part.0/3/6``, ``fc_part.0/2/4``), and the residual
networks' projections are ``downsample.weight_i`` / ``shortcut.weight_i`` (``downsample.0.weight``,
``shortcut.0.weight``). :func:`import_dmc_curve` renames these onto the base network's names,
then matches each control point to the model as :func:`landscape.load_checkpoint` does a
checkpoint of the base network (DMC's VGG ``layer_blocks.*`` included,
:func:`landscape.models.peer_key_map`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..weights import (
    CheckpointError,
    checkpoint_sha256,
    read_state_dict,
    split_checkpoint_key,
    weights_from_state_dict,
)
from .curve import CURVE_KINDS, Curve

__all__ = ["DMC_CURVE_RENAMES", "dmc_curve_kind", "import_dmc_curve"]

#: DMC's curve-network module names that differ from its base networks', per architecture.
DMC_CURVE_RENAMES: dict[str, dict[str, str]] = {
    "VGG": {"fc1": "classifier.1", "fc2": "classifier.4", "fc3": "classifier.6"},
    "ConvFC": {
        "conv1": "conv_part.0",
        "conv2": "conv_part.3",
        "conv3": "conv_part.6",
        "fc4": "fc_part.0",
        "fc5": "fc_part.2",
        "fc6": "fc_part.4",
    },
}

_INDEXED = re.compile(r"^(?P<base>.+\.(?P<name>weight|bias))_(?P<index>\d+)$")
_PROJECTION = {"PreResNet": "downsample", "WideResNet": "shortcut"}


def _base_namer(model: nn.Module) -> Callable[[str], str]:
    """``f(curve module's tensor name) -> the base network's name`` for ``model``'s architecture."""
    from ..models.convnets import VGG, ConvFC
    from ..models.resnet import PreResNet
    from ..models.wide_resnet import WideResNet

    kind = next((c.__name__ for c in (VGG, ConvFC, PreResNet, WideResNet) if isinstance(model, c)), None)
    if kind in DMC_CURVE_RENAMES:
        table = DMC_CURVE_RENAMES[kind]

        def rename(key: str) -> str:
            module, dot, rest = key.partition(".")
            return f"{table[module]}{dot}{rest}" if module in table else key

        return rename
    if kind in _PROJECTION:
        projection = re.compile(rf"\.{_PROJECTION[kind]}\.(weight|bias)$")
        return lambda key: projection.sub(rf".{_PROJECTION[kind]}.0.\1", key)
    return lambda key: key


def dmc_curve_kind(coeff_buffers: dict[str, torch.Tensor]) -> str | None:
    """The curve type DMC's ``coeff_layer`` buffers record: ``"bezier"`` (``binom``),
    ``"polychain"`` (``range`` alone) or ``None`` (no buffers)."""
    if "binom" in coeff_buffers:
        return "bezier"
    return "polychain" if "range" in coeff_buffers else None


def import_dmc_curve(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    curve: str | None = None,
    trust: bool = False,
    check_finite: bool = True,
) -> tuple[Curve, dict[str, Any]]:
    """Read a DMC curve checkpoint as a :class:`Curve` on ``model``.

    Parameters
    ----------
    path : str
        DMC's ``checkpoint-<epoch>.pt`` (``{'epoch', 'model_state', 'optimizer_state'}``) or a
        bare ``CurveNet.state_dict()``; ``FILE.pt:KEY`` as for :func:`landscape.load_checkpoint`.
    model : nn.Module
        The base network (``dmc.vgg16``, ``dmc.preresnet110``, ``dmc.convfc``, ... or ours
        with the same tensors).
    curve : {"bezier", "polychain"}, optional
        DMC's ``--curve``. The file records it in its ``coeff_layer`` buffers; needed only when
        they are absent, and refused when it contradicts them.
    trust : bool
        See :func:`landscape.weights.read_state_dict`.
    check_finite : bool
        Warn when control points hold NaN or Inf.

    Returns
    -------
    (Curve, dict)
        The curve (``n_bends = num_bends - 2``; endpoints with no ``sha256``, since they are
        not checkpoint files; DMC's one set of BatchNorm running statistics in every control
        point, so ``bn="running"`` uses them at every t) and ``{"format": "dmc", "source",
        "sha256", "kind", "num_bends"}``.

    Raises
    ------
    CheckpointError
        A file that is not a DMC curve checkpoint, a control point missing for a tensor, an
        unknown or contradicting curve type, or tensors that do not match ``model``.
    ValueError
        ``curve`` not one of ``CURVE_KINDS``.
    """
    path = os.fspath(path)
    if curve is not None and curve not in CURVE_KINDS:
        raise ValueError(f"curve should be one of {CURVE_KINDS} (DMC's Bezier or PolyChain), got {curve!r}")
    sd = read_state_dict(path, trust=trust)
    coeffs = {k[len("coeff_layer.") :]: v for k, v in sd.items() if k.startswith("coeff_layer.")}
    net = {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}
    other = [k for k in sd if not k.startswith(("coeff_layer.", "net."))]
    if not net or other:
        found = other[0] if other else next(iter(sd), "none")
        raise CheckpointError(
            f"'{path}' is not a dnn-mode-connectivity curve checkpoint: key '{found}'; expected CurveNet's "
            "keys 'net.<module>.weight_<i>' and 'coeff_layer.*'"
        )
    recorded = dmc_curve_kind(coeffs)
    if recorded is None and curve is None:
        raise CheckpointError(
            f"DMC curve checkpoint '{path}' does not record its curve type (no coeff_layer buffers): "
            "give curve='bezier' or curve='polychain' (CLI: --curve), DMC's --curve"
        )
    if recorded is not None and curve is not None and curve != recorded:
        raise CheckpointError(
            f"DMC curve checkpoint '{path}' is a {recorded} curve (its coeff_layer buffers), but curve={curve!r} "
            "was given"
        )
    kind = curve or recorded

    points: dict[str, dict[int, torch.Tensor]] = {}  # curve tensor name -> {control point: tensor}
    shared: dict[str, torch.Tensor] = {}  # BatchNorm running statistics: one set for the curve
    for key, value in net.items():
        m = _INDEXED.match(key)
        if m is None:
            shared[key] = value
        else:
            points.setdefault(m["base"], {})[int(m["index"])] = value
    if not points:
        raise CheckpointError(
            f"'{path}' holds no curve parameters ('net.<module>.weight_<i>'); expected a DMC curve checkpoint "
            "(a base network's checkpoint loads with load_checkpoint)"
        )
    num_bends = len(coeffs["range"]) if "range" in coeffs else 1 + max(max(p) for p in points.values())
    for name, found in points.items():
        if sorted(found) != list(range(num_bends)):
            missing = sorted(set(range(num_bends)) - set(found)) or sorted(set(found) - set(range(num_bends)))
            raise CheckpointError(
                f"DMC curve checkpoint '{path}': 'net.{name}_<i>' has control points {sorted(found)}; expected "
                f"0..{num_bends - 1} (num_bends {num_bends}), point {missing[0]} does not fit"
            )
    if num_bends < 2:
        raise CheckpointError(f"DMC curve checkpoint '{path}' has num_bends {num_bends}; expected at least 2")

    base = _base_namer(model)
    control = [
        weights_from_state_dict(
            {base(k): v for k, v in shared.items()} | {base(k): v[i] for k, v in points.items()},
            model,
            source=f"{path} (DMC control point {i})",
            check_finite=check_finite,
        )
        for i in range(num_bends)
    ]
    result = Curve(control[0], control[-1], n_bends=num_bends - 2, kind=kind, init=control[1:-1])
    info = {
        "format": "dmc",
        "source": path,
        "sha256": checkpoint_sha256(split_checkpoint_key(path)[0]),
        "kind": kind,
        "num_bends": num_bends,
    }
    return result, info
