"""Loading the compiled extension ``landscape._C`` (its own module, so the ops' modules can ask
whether it loaded without importing their package)."""

import importlib
import warnings

__all__ = ["extension_available"]

# The commands that build landscape._C in a source checkout, named in the warning.
_BUILD_COMMANDS = ("pip install --no-build-isolation -e .", "python setup.py build_ext --inplace")


def _load_extension() -> str | None:
    """Imports :mod:`landscape._C` (registering ``torch.ops.landscape.*``); why it failed, or None.

    ``importlib`` rather than ``from landscape import _C``: inside the half-imported package
    a missing module reads as a "circular import" there, which is not what happened.
    """
    try:
        importlib.import_module("landscape._C")
    except Exception as error:  # ModuleNotFoundError, or an ImportError/OSError from an ABI mismatch
        if isinstance(error, ModuleNotFoundError) and error.name == "landscape._C":
            what = "is not built"
        else:
            what = "failed to load"
        return f"{what} ({type(error).__name__}: {error})"
    return None


_EXTENSION_ERROR: str | None = _load_extension()
_WARNED = False


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
    """Warns once per process that the ops use their references, why, and how to build."""
    global _WARNED
    if _WARNED or _EXTENSION_ERROR is None:
        return
    _WARNED = True
    warnings.warn(
        f"landscape: the compiled extension landscape._C {_EXTENSION_ERROR}; the ops use their "
        "pure-PyTorch references (same results, slower). Build it in the source checkout with "
        f"`{_BUILD_COMMANDS[0]}` or `{_BUILD_COMMANDS[1]}`.",
        RuntimeWarning,
        stacklevel=3,
    )
