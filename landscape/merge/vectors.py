"""Task vectors: what fine-tuning added to a base model, entry by entry.

A task vector (Ilharco et al., 2023, "Editing models with task arithmetic") is the difference
between a fine-tuned checkpoint and the pre-trained (base) one it started from,

.. math::

    \\tau_i = \\theta_i - \\theta_{\\text{base}},

taken over the floating-point entries of the layout (parameters and float buffers such as
BatchNorm's running statistics; integer buffers are carried from the base). Tied tensors are
one entry, so they stay tied in every merge.

The non-linear merges of :mod:`landscape.merge.methods` work tensor by tensor in
:func:`work_dtype` (the checkpoints' dtype, promoted to at least float32 so that magnitudes,
signs and angles are not computed in half precision) and cast each merged tensor back to the
checkpoints' dtype: memory grows with one tensor per checkpoint, never with a second model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch

from ..weights import Entry, Weights

__all__ = ["check_same_layout", "entry_deltas", "from_entries", "merged_entries", "task_vector", "work_dtype"]


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype merges compute a tensor in: ``dtype`` promoted to at least float32."""
    return torch.promote_types(dtype, torch.float32)


def check_same_layout(base: Weights, others: Sequence[Weights], what: str = "fine-tuned checkpoint") -> None:
    """Every checkpoint of a merge has the base's layout (names and shapes); one line naming
    the first difference otherwise."""
    if not isinstance(base, Weights):
        raise TypeError(f"base should be Weights (landscape.Weights / load_checkpoint), got {type(base).__name__}")
    names = base.layout.names()
    for i, w in enumerate(others):
        if not isinstance(w, Weights):
            raise TypeError(f"{what} {i} should be Weights, got {type(w).__name__}")
        if w.layout.names() != names:
            extra = sorted(set(w.layout.names()) ^ set(names))[:3]
            raise ValueError(f"{what} {i} has other tensors than the base (e.g. {extra}); expected the same model")
        for e in base.layout.flat_entries():
            if tuple(w[e.name].shape) != e.shape:
                raise ValueError(f"{what} {i} has {tuple(w[e.name].shape)} for '{e.name}'; the base has {e.shape}")


def task_vector(base: Weights, finetuned: Weights) -> OrderedDict[str, torch.Tensor]:
    """``finetuned - base`` for every floating-point entry, in :func:`work_dtype`.

    Parameters
    ----------
    base, finetuned : Weights
        Of one layout.

    Returns
    -------
    OrderedDict of str to Tensor
        The task vector, entry by entry (``Tensor[*shape]`` each; aliases of tied tensors
        are not repeated).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> tau = task_vector(ls.Weights.from_module(a), ls.Weights.from_module(b))
    >>> torch.allclose(tau["bias"], (b.bias - a.bias).detach())
    True
    """
    check_same_layout(base, [finetuned])
    return OrderedDict((e.name, d[0]) for e, d in entry_deltas(base, [finetuned]))


def entry_deltas(base: Weights, finetuned: Sequence[Weights]):
    """``(entry, [tau_1, ..., tau_n])`` for every floating-point entry, in layout order, each
    task vector in :func:`work_dtype` (a generator: one entry's deltas in memory at a time)."""
    for e in base.layout.flat_entries():
        b = base[e.name]
        dt = work_dtype(b.dtype)
        yield e, [w[e.name].to(dt) - b.to(dt) for w in finetuned]


def merged_entries(base: Weights, delta: Mapping[str, torch.Tensor], scale: float = 1.0) -> Weights:
    """``base + scale * delta`` entry by entry, computed in :func:`work_dtype` and cast to the
    base's dtype; integer buffers from the base; tied tensors stay tied."""
    out = {}
    for e in base.layout.flat_entries():
        b = base[e.name]
        out[e.name] = (b.to(work_dtype(b.dtype)) + scale * delta[e.name]).to(b.dtype)
    return from_entries(base, out)


def from_entries(base: Weights, tensors: Mapping[str, torch.Tensor], *, cast: bool = True) -> Weights:
    """:class:`Weights` of ``base``'s layout holding ``tensors`` for its floating-point entries
    (cast to the base's dtype with ``cast``) and the base's integer buffers."""
    out: dict[str, torch.Tensor] = {}
    for e in base.layout:
        if e.tied_to is not None:
            continue
        if e.flat:
            t = tensors[e.name]
            out[e.name] = t.to(base[e.name].dtype) if cast else t
        else:
            out[e.name] = base[e.name]
    return Weights(out, base.layout)


def is_merged_parameter(e: Entry) -> bool:
    """Entries TIES and DARE sparsify: parameters (float buffers, e.g. BatchNorm statistics,
    are averaged over the fine-tunes instead)."""
    return e.is_parameter
