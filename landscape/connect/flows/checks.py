"""Argument checks shared by the modules of :mod:`landscape.connect.flows`.

Every check raises ``ValueError`` naming the argument and what arrived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...weights import Layout, Weights

__all__ = [
    "check_int",
    "check_model",
    "check_pair",
    "check_positive",
    "check_weights_list",
    "dtype_device",
    "float_entries",
    "progress_bar",
]


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int if it is one (not a bool) and ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} should be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> None:
    """Raise unless ``value`` is a finite number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} should be a positive number, got {value!r}")


def check_pair(A: Mapping[str, Tensor], B: Mapping[str, Tensor]) -> None:
    """Raise unless ``A`` and ``B`` are mappings with the same entries, in order, and shapes."""
    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Mapping):
            raise ValueError(f"{name} should be a Weights or a mapping of str to Tensor, got {type(w).__name__}")
    if list(A.keys()) != list(B.keys()):
        only = sorted(set(A) ^ set(B))
        raise ValueError(
            f"A and B have different entries ({len(A)} and {len(B)}; e.g. {only[:3]}); expected the same model"
        )
    for k in A:
        if tuple(A[k].shape) != tuple(B[k].shape):
            raise ValueError(f"entry '{k}' has shape {tuple(A[k].shape)} in A and {tuple(B[k].shape)} in B")


def check_weights_list(weights, what: str = "weights", minimum: int = 1) -> list[Mapping[str, Tensor]]:
    """``weights`` as a list of at least ``minimum`` weight points of one model."""
    if isinstance(weights, Mapping) or not isinstance(weights, Sequence) or len(weights) < minimum:
        got = f"{len(weights)} items" if isinstance(weights, Sequence) else type(weights).__name__
        raise ValueError(f"{what} should be a list of at least {minimum} Weights, got {got}")
    for i, w in enumerate(weights[1:], 1):
        check_pair(weights[0], w)  # same entries and shapes
        if isinstance(w, Weights) and isinstance(weights[0], Weights):
            if w.layout.names() != weights[0].layout.names():
                raise ValueError(f"{what}[{i}] has a different layout from {what}[0]")
    return list(weights)


def check_model(model: nn.Module, w: Mapping[str, Tensor]) -> None:
    """Raise unless ``w`` holds the entries of ``model``'s ``state_dict``, in order."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model should be an nn.Module, got {type(model).__name__}")
    expected = Layout.from_module(model).names()
    if list(w.keys()) != expected:
        missing = [k for k in expected if k not in w][:3]
        extra = [k for k in w if k not in expected][:3]
        raise ValueError(f"the weights do not match the model (missing {missing}, unexpected {extra})")


def float_entries(w: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``w``."""
    return [k for k, v in w.items() if torch.is_tensor(v) and v.is_floating_point()]


def dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """Dtype and device of the first floating-point parameter or buffer of ``module``
    (the default dtype and the CPU if it has none)."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def progress_bar(total: int, desc: str, enabled: bool):
    """A ``tqdm.auto`` bar of ``total`` epochs, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True, leave=False)
