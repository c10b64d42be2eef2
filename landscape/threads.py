"""CPU threads for small models.

Tiny models train and evaluate fastest on one CPU thread: two OpenMP threads spin on
64 x 128 matrices, up to 100x slower when the machine is busy. Larger models keep every
thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["single_thread", "small_model_threads"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch CPU thread inside the block; the previous count is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextlib.contextmanager
def small_model_threads(model: nn.Module, limit: int = 1_000_000) -> Iterator[None]:
    """One CPU thread (:func:`single_thread`) while working on a model with fewer than
    ``limit`` parameters; a larger model keeps every thread.

    Examples
    --------
    >>> import torch
    >>> with small_model_threads(torch.nn.Linear(4, 2)):
    ...     torch.get_num_threads()
    1
    """
    if sum(p.numel() for p in model.parameters()) < limit:
        with single_thread():
            yield
    else:
        yield
