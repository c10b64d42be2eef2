"""Sizes checked before work: output files, memory and time of a run.

Every command that writes a result estimates, before it starts, how large its output file
will be and how much memory it will take; above :data:`MAX_OUTPUT_BYTES` of output, or more
memory than the machine has available, it refuses with :class:`TooLargeError`, naming the
numbers and the override (``allow_large=True``; CLI: ``--allow-large``). The output check
is made where result files are created (:func:`landscape.io.create_result`), the memory
check by the entry points through :func:`check_memory`; the run's override reaches both
through :func:`allowing_large`, which the entry points and the CLI enter once.

Examples
--------
>>> from landscape import budget
>>> budget.format_bytes(5_700_000_000)
'5.7 GB'
>>> with budget.allowing_large(True):
...     budget.check_output(10**12, "a test file")  # allowed: no error
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "MAX_OUTPUT_BYTES",
    "TooLargeError",
    "allowing_large",
    "available_memory",
    "check_grid",
    "check_memory",
    "check_output",
    "check_training",
    "format_bytes",
    "format_seconds",
    "large_allowed",
    "report_eta",
    "tensor_bytes",
]

#: Output files above this many bytes need ``allow_large=True`` (CLI: ``--allow-large``).
MAX_OUTPUT_BYTES = 2_000_000_000

#: Runs whose estimated time is above this many seconds print their estimate (one line).
ETA_REPORT_SECONDS = 60.0

_OVERRIDE = "pass allow_large=True (CLI: --allow-large) to run it anyway"

_allow_large: contextvars.ContextVar[bool] = contextvars.ContextVar("landscape_allow_large", default=False)


class TooLargeError(ValueError):
    """A run whose output file or memory exceeds the safe limits (see :mod:`landscape.budget`)."""


def large_allowed() -> bool:
    """Whether the run in progress was given ``allow_large=True`` (CLI: ``--allow-large``)."""
    return _allow_large.get()


@contextlib.contextmanager
def allowing_large(allow: bool = True) -> Iterator[None]:
    """Within the block, the size checks let large runs through when ``allow`` (an enclosing
    ``allowing_large(True)`` stays in force)."""
    token = _allow_large.set(bool(allow) or _allow_large.get())
    try:
        yield
    finally:
        _allow_large.reset(token)


def format_bytes(n: float) -> str:
    """``5_700_000_000`` -> ``'5.7 GB'`` (decimal units)."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def format_seconds(seconds: float) -> str:
    """``900000`` -> ``'250 h'``; ``90`` -> ``'1.5 min'``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def available_memory(device=None) -> int | None:
    """Bytes a run can still allocate: free memory of a CUDA device
    (``torch.cuda.mem_get_info``), else the host's ``MemAvailable`` (``/proc/meminfo`` on
    Linux, ``os.sysconf`` elsewhere); None when the system does not say."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _parts(parts: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {format_bytes(b)}" for name, b in parts.items() if b > 0)


def check_output(
    nbytes: float, what: str, parts: Mapping[str, float] | None = None, *, allow_large: bool = False
) -> None:
    """Refuse (:class:`TooLargeError`) an output file of ``nbytes`` above
    :data:`MAX_OUTPUT_BYTES` unless ``allow_large`` or the run allows large ones
    (:func:`allowing_large`). ``what`` names the file, ``parts`` what its bytes are made of."""
    if nbytes <= MAX_OUTPUT_BYTES or allow_large or large_allowed():
        return
    detail = f" ({_parts(parts)})" if parts else ""
    raise TooLargeError(
        f"{what} would take {format_bytes(nbytes)} on disk{detail}, above the "
        f"{format_bytes(MAX_OUTPUT_BYTES)} limit; {_OVERRIDE}"
    )


def check_memory(
    parts: Mapping[str, float], what: str, *, device=None, held: float = 0, allow_large: bool = False
) -> int:
    """Refuse (:class:`TooLargeError`) a run whose memory (``parts``: name -> bytes at the
    peak) exceeds what the machine has available unless ``allow_large`` or the run allows
    large ones (:func:`allowing_large`).
    ``held``: bytes of ``parts`` already allocated (data and basis loaded before the call),
    which the available memory no longer counts. Returns the estimated peak in bytes."""
    peak = int(sum(parts.values()))
    available = available_memory(device)
    if available is None or allow_large or large_allowed() or peak - held <= available:
        return peak
    where = "GPU" if device is not None and str(device).startswith("cuda") else "host"
    raise TooLargeError(
        f"{what} would need about {format_bytes(peak)} of memory ({_parts(parts)}), "
        f"{format_bytes(available + held)} available on the {where}; {_OVERRIDE}"
    )


def report_eta(what: str, done: int, total: int, seconds: float, unit: str = "cells", *, file=None) -> float:
    """The time left for ``total`` items at the rate of the first ``done`` (measured in
    ``seconds``); printed as one line on stderr when above :data:`ETA_REPORT_SECONDS`.
    Returns the estimate in seconds."""
    if done <= 0 or total <= done:
        return 0.0
    eta = seconds / done * (total - done)
    if eta > ETA_REPORT_SECONDS:
        from tqdm import tqdm  # writes above a progress bar that is showing

        line = f"{what}: {total} {unit}, about {format_seconds(eta)} left (first {done} in {format_seconds(seconds)})"
        tqdm.write(line, file=file or sys.stderr)
    return eta


def tensor_bytes(obj) -> int:
    """Bytes of the tensors ``obj`` holds in memory: a tensor or array, a module (its
    state_dict), in-memory data (``.x`` and ``.y``), :class:`~landscape.weights.Weights`,
    or a mapping or sequence of these; 0 for what is streamed (loaders, iterables)."""
    import numpy as np
    import torch

    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, torch.nn.Module):
        return sum(tensor_bytes(t) for t in obj.state_dict().values())
    if torch.is_tensor(getattr(obj, "x", None)):
        return tensor_bytes(obj.x) + tensor_bytes(getattr(obj, "y", None))
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    state_dict = getattr(obj, "state_dict", None)
    if callable(state_dict) and hasattr(obj, "layout"):  # Weights
        return tensor_bytes(dict(state_dict()))
    return 0


def check_grid(
    what: str,
    *,
    shape: Sequence[int],
    metrics: Sequence[str],
    basis: tuple[int, int],
    itemsize: int,
    held: Mapping[str, float],
    device=None,
    out=None,
    points_per_pass: int | None = None,
    allow_large: bool = False,
) -> int:
    """The up-front memory check of a run that evaluates the cells of a grid of ``shape``,
    points of a ``basis`` of ``(J, P)`` entries of ``itemsize`` bytes, on ``metrics``, before
    any point is built: its memory at the peak (coefficients, results, the points of one pass,
    the basis copy written to ``out`` when there is one, and ``held``: what is loaded already,
    such as the basis, the data and the model). The output file's size is checked by
    :func:`landscape.io.check_output_size` (where files are created). Raises
    :class:`TooLargeError` unless ``allow_large``; returns the estimated peak in bytes."""
    J, P = basis
    cells = 1
    for d in shape:
        cells *= int(d)
    k = points_per_pass or max(1, min(64, (256 << 20) // max(P * itemsize, 1)))
    parts = dict(held)
    parts["coefficients"] = 2 * cells * J * 8 + 2 * cells * 8
    parts["results"] = (2 * len(metrics) + 2) * cells * 8
    parts["points of one pass"] = min(k, cells) * P * itemsize
    if out is not None:
        parts["basis copy for the file"] = J * P * 4
    return check_memory(parts, what, device=device, held=sum(held.values()), allow_large=allow_large)


def check_training(model, data, what: str, *, copies: int = 4, device=None, allow_large: bool = False) -> int:
    """The up-front memory check of a training run (curve fits, ensembles, variational
    networks): ``copies`` times the model's tensors (its weights, their gradients, the
    optimizer's momentum and what the method keeps besides, such as an average or a curve's
    control points) and the data held in memory, of which the model and the data are loaded
    already. Activations are not counted, so this is a lower bound: it refuses only runs that
    cannot fit. Raises :class:`TooLargeError` unless ``allow_large``; returns the estimate."""
    model_bytes = tensor_bytes(model)
    data_bytes = tensor_bytes(data)
    parts = {
        f"model x {copies} (weights, gradients, optimizer state, kept copies)": copies * model_bytes,
        "data in memory": data_bytes,
    }
    return check_memory(parts, what, device=device, held=model_bytes + data_bytes, allow_large=allow_large)
