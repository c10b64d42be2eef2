"""Compiled ops of ``landscape`` and their pure-PyTorch references.

Importing :mod:`landscape._C` registers the C++/CUDA kernels as ``torch.ops.landscape.*``.
When the extension was not built (no compiler, ``LANDSCAPE_NO_EXTENSION=1``) or cannot be
loaded, a warning is issued once and every op falls back to its reference, which computes
the same thing with plain PyTorch (slower, same results up to rounding).
"""

import warnings

__all__ = [
    "extension_available",
    "batched_linear",
    "fused_mlp2",
    "batched_linear_reference",
    "fused_mlp2_reference",
    "lanczos_step",
    "lanczos_step_reference",
]

_EXTENSION_ERROR: str | None = None
_WARNED = False

try:
    from landscape import _C  # noqa: F401  (importing registers torch.ops.landscape.*)
except Exception as _error:  # ImportError, or an OSError from an ABI mismatch
    _EXTENSION_ERROR = f"{type(_error).__name__}: {_error}"


def extension_available() -> bool:
    """Whether the compiled extension ``landscape._C`` is loaded.

    Returns
    -------
    bool
        True when ``torch.ops.landscape.*`` kernels are registered; False when the ops use
        their pure-PyTorch references.
    """
    return _EXTENSION_ERROR is None


def _warn_extension_unavailable() -> None:
    global _WARNED
    if _WARNED or _EXTENSION_ERROR is None:
        return
    _WARNED = True
    warnings.warn(
        "landscape: the compiled extension landscape._C is unavailable "
        f"({_EXTENSION_ERROR}); using the pure-PyTorch reference ops (slower).",
        RuntimeWarning,
        stacklevel=3,
    )


_warn_extension_unavailable()

from landscape.ops.batched_linear import (  # noqa: E402
    batched_linear,
    batched_linear_reference,
    fused_mlp2,
    fused_mlp2_reference,
)
from landscape.ops.lanczos_step import lanczos_step, lanczos_step_reference  # noqa: E402
