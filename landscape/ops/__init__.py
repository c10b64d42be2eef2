"""Compiled ops of ``landscape`` and their pure-PyTorch references.

Importing :mod:`landscape._C` registers the C++/CUDA kernels as ``torch.ops.landscape.*``.
When the extension was not built (no compiler, ``LANDSCAPE_NO_EXTENSION=1``) or cannot be
loaded, a warning is issued once and every op falls back to its reference, which computes
the same thing with plain PyTorch (slower, same results up to rounding).
"""

__all__ = [
    "extension_available",
    "batched_linear",
    "fused_mlp2",
    "batched_linear_reference",
    "fused_mlp2_reference",
    "lanczos_step",
    "lanczos_step_reference",
]

from ._extension import _warn_extension_unavailable, extension_available

_warn_extension_unavailable()

from landscape.ops.batched_linear import (  # noqa: E402
    batched_linear,
    batched_linear_reference,
    fused_mlp2,
    fused_mlp2_reference,
)
from landscape.ops.lanczos_step import lanczos_step, lanczos_step_reference  # noqa: E402
