"""Result files: the one place that reads and writes HDF5.

A run writes one HDF5 file.  Its layout (schema version 1, documented in
``docs/h5-format.md``)::

    /                      root attributes: format, schema-version, kind, kind-version,
                           created, library-version and the run's own attributes
    /metrics/<name>        float64[shape], NaN where not computed, contiguous
    /done                  uint8[shape], 1 where every metric of the cell is written
    /arrays/<name>         static arrays written once (coordinates, coefficients, bases)

Crash safety
------------
HDF5 does not survive a kill while its *metadata* is being changed, so a run never
changes metadata in place:

* the file is built in a temporary file next to the target and renamed over it
  (``os.replace``), so it appears complete or not at all;
* ``/metrics/*`` and ``/done`` are contiguous datasets whose storage is allocated
  and filled at creation; writing cells afterwards writes raw bytes at fixed
  offsets and touches no metadata;
* :meth:`ResultFile.write_cells` writes the values of every metric, flushes,
  then sets the ``done`` flags and flushes again: a kill at any moment leaves at
  worst some values without their flag, which a resumed run recomputes;
* changes to metadata after creation (:meth:`ResultFile.update_attrs`,
  :meth:`ResultFile.add_metrics`) copy the file to a temporary file, change the
  copy and rename it over the original.

The default (earliest) HDF5 file format is used on purpose: superblock version 3
(``libver="latest"``) marks a file as open-for-write on disk and a killed writer
would leave it unopenable without ``h5clear``.

Kinds
-----
Every kind of file landscape writes (``eval``, ``line``, ``plane``, ``curve``,
``connections``, ...; and the ``torch.save`` files of curves, variational networks and
connection models) is registered once with :func:`register_kind`: its schema version, the one
function that writes it and the one that reads it, what every file of the kind holds, and the
attributes a resumed run may differ in. A file of a registered kind records its version in
``kind-version``; a reader refuses versions it does not know. ``docs/h5-format.md`` shows
the same table (``tests/test_io_registry.py`` keeps them equal).

Resuming
--------
One mechanism for every resumable file: the ``done`` flags say which cells are finished,
and the run's attributes, except those its kind declares not compared, must equal the
file's (:func:`open_or_create`, :meth:`ResultFile.check_compatible`).

This module imports only numpy, h5py and :mod:`landscape.budget` (standard library only).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Self

import h5py
import numpy as np

__all__ = [
    "FORMAT_NAME",
    "RUN_ATTRS",
    "SCHEMA_VERSION",
    "ResultExistsError",
    "ResultFile",
    "ResultFileError",
    "ResultKind",
    "atomic_write",
    "check_compatible",
    "check_kind",
    "check_output_size",
    "connection_labels",
    "create_result",
    "describe",
    "first_difference",
    "open_hdf5",
    "open_or_create",
    "open_result",
    "pt_version",
    "read_connections",
    "read_density",
    "read_ensemble_run",
    "read_ensembles",
    "read_predictions",
    "read_wa_ensemble",
    "register_kind",
    "remove_stale_temps",
    "result_file_bytes",
    "result_kind",
    "result_kinds",
]

SCHEMA_VERSION: int = 1
"""Version of the layout written by this module; files with another version are refused."""

FORMAT_NAME = "landscape"
"""Value of the root attribute ``format`` that marks a landscape result file."""

SUPPORTED_SCHEMA_VERSIONS = (1,)

RUN_ATTRS = ("created", "finished", "elapsed-s", "library-version", "hessian-map", "cli-config")
"""Attributes describing one execution rather than the computation, or results added to the
file later (``hessian-map``: the settings of its eigenvalue maps; ``cli-config``: the
command line that wrote the file, which a resumed run may give differently); ignored by
:func:`check_compatible` unless told otherwise."""

# Root attributes owned by this module; the run's attributes cannot use these names.
_STRUCTURAL_ATTRS = ("format", "schema-version", "kind", "kind-version")
_JSON_MARKER = "json:"
_METRIC_ORDER_ATTR = "names"  # attribute of /metrics: the metric names, in order
_ADDED_ATTR = "added"  # attribute of /metrics: metrics added after creation (add_metrics)


class ResultFileError(ValueError):
    """A result file is missing, truncated, foreign, damaged or incompatible."""


class ResultExistsError(FileExistsError):
    """The output file exists and the caller asked neither to resume nor to overwrite."""


# --------------------------------------------------------------------------- attributes


def _to_json_value(value: Any, where: str) -> Any:
    """Turn ``value`` into plain JSON types (numpy scalars and arrays included)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        return _to_json_value(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"attribute {where} has a dict key {key!r} of type {type(key).__name__}; "
                    "only str keys can be stored"
                )
            out[key] = _to_json_value(item, f"{where}[{key!r}]")
        return out
    raise TypeError(
        f"attribute {where} has a value of type {type(value).__name__}; expected str, int, "
        "float, bool, None, list, tuple, dict or a numpy scalar/array"
    )


def _encode_attr(name: str, value: Any) -> Any:
    """Value to hand to h5py for attribute ``name``.

    str, bool, int, float, numpy scalars and numeric numpy arrays are stored natively;
    None, lists, tuples and dicts as the string ``"json:" + json.dumps(value)``
    (a str that itself starts with ``"json:"`` is stored the same way, so it reads back
    unchanged).
    """
    where = repr(name)
    if isinstance(value, str):
        return _JSON_MARKER + json.dumps(value) if value.startswith(_JSON_MARKER) else value
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return np.int64(value)
        return _JSON_MARKER + json.dumps(value)
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return _JSON_MARKER + json.dumps(_to_json_value(value, where), allow_nan=True)


def _decode_attr(value: Any) -> Any:
    """Inverse of :func:`_encode_attr`: h5py's value back to the Python value."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return json.loads(value[len(_JSON_MARKER) :]) if value.startswith(_JSON_MARKER) else value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _normalize_attr(name: str, value: Any) -> Any:
    """The value that reading ``value`` back from a file would give."""
    return _decode_attr(_encode_attr(name, value))


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        both_float = a.dtype.kind == "f" and b.dtype.kind == "f"
        return bool(np.array_equal(a, b, equal_nan=both_float))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- helpers


def _fmt_path(path: str | os.PathLike) -> str:
    return f"'{os.fspath(path)}'"


def _temp_path(path: str) -> str:
    """A temporary file next to ``path``: ``dir/.name.tmp-<pid>`` (the one helper for every
    file landscape writes whole: result files, ``.pt`` files, exports). Temporary files of
    ``path`` left by processes that are gone (killed with SIGKILL) are removed first."""
    remove_stale_temps(path)
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or no way to tell
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files ``.<name>.tmp-<pid>`` next to ``path`` whose process no
    longer runs on this machine (a run killed by SIGKILL leaves its temporary file; a clean
    interruption removes it). Returns the paths removed."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{name}.tmp-"
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        pid = entry[len(prefix) :]
        if not entry.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            os.remove(os.path.join(directory, entry))
            removed.append(os.path.join(directory, entry))
        except OSError:
            pass
    return removed


def _check_folder(path: str, error: type[Exception] = FileNotFoundError) -> None:
    """The folder of an output ``path`` must exist (``error`` naming the user's path)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise error(
            f"cannot write {_fmt_path(path)}: its folder '{folder}' does not exist; expected an existing folder"
        )


def _write_failed(path: str, tmp: str, exc: BaseException) -> str:
    """One line saying why writing ``path`` failed, naming ``path``, not its temporary file."""
    errno = getattr(exc, "errno", None)
    reason = os.strerror(errno) if isinstance(errno, int) and errno > 0 else str(exc).replace(tmp, path)
    return f"cannot write {_fmt_path(path)}: {' '.join(reason.split())}"


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Make a rename in the directory of ``path`` durable (best effort)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what} name must be a non-empty str without '/', got {name!r}")
    return name


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
        ok = all(int(d) == d for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}") from None
    if not dims or not ok or any(d < 1 for d in dims):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    return dims


def _library_version() -> str:
    """The installed landscape version, without importing landscape (it imports torch)."""
    package = sys.modules.get("landscape")  # already imported: free to ask
    if isinstance(getattr(package, "__version__", None), str):
        return package.__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("landscape")
    except (PackageNotFoundError, ValueError):
        return "unknown"


def _write_contiguous(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """A contiguous dataset with its storage allocated and written now."""
    dset = group.create_dataset(name, data=data, track_times=False)
    if dset.chunks is not None:  # pragma: no cover - h5py never chunks without being asked
        raise RuntimeError(f"dataset {dset.name} was created chunked")
    return dset


# --------------------------------------------------------------------------- creation


def create_result(
    path: str | os.PathLike,
    *,
    kind: str,
    shape: tuple[int, ...],
    metrics: Sequence[str],
    attrs: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    force: bool = False,
    allow_large: bool = False,
) -> ResultFile:
    """Create a result file with every cell missing and open it for writing.

    Parameters
    ----------
    path : str or path-like
        The file to create.  It appears atomically: the file is written to
        ``.<name>.tmp-<pid>`` in the same directory and renamed over ``path``.
    kind : str
        What the grid is, e.g. ``"eval"``, ``"line"``, ``"surface-2d"``, ``"curve"``.
    shape : tuple of int
        Grid shape of the cells, e.g. ``(K,)`` or ``(nx, ny)``.
    metrics : sequence of str
        One float64 dataset ``/metrics/<name>`` of shape ``shape`` each, filled with NaN.
    attrs : mapping
        Root attributes (model spec, checkpoints and sha256, data spec, seeds, BN mode,
        precision, ...).  Values may be str, int, float, bool, None, lists, tuples,
        dicts with str keys, numpy scalars and numeric numpy arrays; tuples read back as
        lists.  ``library-version`` and ``created`` are filled in when absent.
    arrays : mapping of str to ndarray, optional
        Static arrays stored once under ``/arrays/<name>`` with their dtype
        (coordinates, coefficient matrices, direction vectors).
    force : bool
        Replace an existing file.  Without it an existing ``path`` raises
        :class:`ResultExistsError`.
    allow_large : bool
        Create a file above :data:`landscape.budget.MAX_OUTPUT_BYTES` (2 GB); without it
        (or :func:`landscape.budget.allowing_large`) such a file raises
        :class:`landscape.budget.TooLargeError` before anything is written.

    Returns
    -------
    ResultFile
        Opened in ``"r+"`` mode.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "line.h5")
    >>> with create_result(path, kind="line", shape=(5,), metrics=["loss"],
    ...                    attrs={"seed": 0}, arrays={"t": np.linspace(0, 1, 5)}) as rf:
    ...     rf.write_cells([0, 4], {"loss": [1.0, 2.0]})
    ...     rf.pending().tolist()
    [1, 2, 3]
    """
    path = os.fspath(path)
    dims, metric_names = _check_result_arguments(kind, shape, metrics, attrs)
    root_attrs = {
        "format": FORMAT_NAME,
        "schema-version": np.int64(SCHEMA_VERSION),
        "kind": kind,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if kind in _KINDS:
        root_attrs["kind-version"] = np.int64(_KINDS[kind].version)
    if "library-version" not in attrs:
        root_attrs["library-version"] = _library_version()
    # Encode everything before touching the disk, so a bad value leaves no file behind.
    encoded = {k: _encode_attr(k, v) for k, v in root_attrs.items()}
    encoded.update({k: _encode_attr(k, v) for k, v in attrs.items()})
    static = {}
    for name, value in (arrays or {}).items():
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise ValueError(f"array {name!r} has dtype {array.dtype}; expected a numeric dtype")
        static[_check_name("array", name)] = array

    if os.path.isdir(path):
        raise ResultFileError(f"{_fmt_path(path)} is a directory; expected a result file path")
    if os.path.lexists(path) and not force:
        raise ResultExistsError(_exists_message(path))
    _check_folder(path, ResultFileError)
    check_output_size(dims, metric_names, static, f"result file {_fmt_path(path)}", allow_large=allow_large)

    tmp = _temp_path(path)
    try:
        try:
            _write_empty_result(tmp, encoded, metric_names, dims, static)
            _fsync_file(tmp)
        except OSError as exc:
            raise ResultFileError(_write_failed(path, tmp, exc)) from None
        if force:
            os.replace(tmp, path)
        else:
            _publish_without_overwrite(tmp, path)
        _fsync_dir(path)
    finally:
        _remove_quietly(tmp)
    return open_result(path, "r+")


def _check_result_arguments(
    kind: str, shape: tuple[int, ...], metrics: Sequence[str], attrs: Mapping[str, Any]
) -> tuple[tuple[int, ...], list[str]]:
    """``(grid shape, metric names)`` of :func:`create_result`, after one clear error for a bad
    kind, shape, metric list or attribute name."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty str, got {kind!r}")
    dims = _check_shape(shape)
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, got the str {metrics!r}")
    metric_names = [_check_name("metric", m) for m in metrics]
    if not metric_names:
        raise ValueError("metrics must name at least one metric")
    if len(set(metric_names)) != len(metric_names):
        raise ValueError(f"metrics has repeated names: {metric_names}")
    for key in attrs:
        if not isinstance(key, str) or not key:
            raise ValueError(f"attribute names must be non-empty str, got {key!r}")
        if key in _STRUCTURAL_ATTRS:
            raise ValueError(f"attribute {key!r} is reserved by the result file format")
    return dims, metric_names


def _write_empty_result(
    tmp: str,
    encoded: Mapping[str, Any],
    metric_names: list[str],
    dims: tuple[int, ...],
    static: Mapping[str, np.ndarray],
) -> None:
    """Write a result file with every cell missing to ``tmp``: the root attributes ``encoded``,
    one NaN dataset per metric (in order), ``done`` all zero and the static arrays."""
    with h5py.File(tmp, "w") as h5:
        for key, value in encoded.items():
            h5.attrs[key] = value
        group = h5.create_group("metrics")
        group.attrs[_METRIC_ORDER_ATTR] = _encode_attr(_METRIC_ORDER_ATTR, metric_names)
        missing = np.full(dims, np.nan, dtype=np.float64)
        for name in metric_names:
            _write_contiguous(group, name, missing)
        _write_contiguous(h5, "done", np.zeros(dims, dtype=np.uint8))
        group = h5.create_group("arrays")
        for name, array in static.items():
            _write_contiguous(group, name, array)


def result_file_bytes(
    shape: Sequence[int], metrics: Sequence[str], arrays: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """The bytes a result file of ``shape`` cells takes, by part: float64 metrics, the done
    flags and the static arrays (``arrays`` may give ndarrays or their byte counts), so that
    a run can check its output before it builds anything."""
    cells = int(np.prod([int(d) for d in shape], dtype=object))
    parts = {f"{len(metrics)} metric(s)": 8 * cells * len(metrics), "done flags": cells}
    for name, value in (arrays or {}).items():
        parts[f"array {name!r}"] = int(value) if isinstance(value, (int, np.integer)) else np.asarray(value).nbytes
    return parts


def check_output_size(
    shape: Sequence[int],
    metrics: Sequence[str],
    arrays: Mapping[str, Any] | None,
    what: str,
    *,
    allow_large: bool = False,
) -> None:
    """Refuse a result file above :data:`landscape.budget.MAX_OUTPUT_BYTES` unless
    ``allow_large`` or the run allows large ones (:class:`landscape.budget.TooLargeError`);
    :func:`create_result` checks every file it creates, runs check theirs up front with the
    same numbers (:func:`landscape.budget.check_grid`)."""
    parts = result_file_bytes(shape, metrics, arrays)
    _budget().check_output(sum(parts.values()), what, parts, allow_large=allow_large)


def _budget():
    """:mod:`landscape.budget` (standard library only, like this module needs): imported from
    the package, or from its file next to this one when this module was loaded on its own."""
    if __package__:
        from . import budget

        return budget
    name = "_landscape_budget"
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), "budget.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _exists_message(path: str) -> str:
    return f"{_fmt_path(path)} already exists; pass --resume to continue it or --force to overwrite it"


def _publish_without_overwrite(tmp: str, path: str, error: FileExistsError | None = None) -> None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists (no race where links work); else
    raise ``error`` (default: :class:`ResultExistsError`)."""
    if error is None:
        error = ResultExistsError(_exists_message(path))
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise error from None
    except OSError:  # the file system has no hard links: check, then rename
        if os.path.lexists(path):
            raise error from None
        os.replace(tmp, path)


# --------------------------------------------------------------------------- opening


def open_hdf5(path: str, mode: str = "r", *, expected: str = "a landscape result file") -> h5py.File:
    """Open an HDF5 file, turning every failure (missing, a directory, no HDF5 signature,
    unreadable, damaged) into a one-line :class:`ResultFileError` that ends with what was
    ``expected``; landscape's result files and loss-landscape's surface files
    (:mod:`landscape.io_ll`) both open here."""
    shown = _fmt_path(path)
    if not os.path.lexists(path):
        raise ResultFileError(f"{shown} does not exist; expected {expected}")
    if os.path.isdir(path):
        raise ResultFileError(f"{shown} is a directory; expected {expected}")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise ResultFileError(f"{shown} cannot be read ({' '.join(str(exc).split())}); expected {expected}") from None
    if not is_hdf5:
        raise ResultFileError(f"{shown} is truncated or not an HDF5 file (no HDF5 signature); expected {expected}")
    try:
        # HDF5's own file locks are off: with them a reader could not look at a file a
        # run is writing (`landscape info`), and one process could not open a file twice
        # with different modes. Writers take their own lock instead (_WriterLock).
        return h5py.File(path, mode, locking=False)
    except OSError as exc:
        detail = " ".join(str(exc).split())
        raise ResultFileError(f"{shown} is truncated or damaged ({detail}); expected {expected}") from None


class _WriterLock:
    """An exclusive ``flock`` on a result file, so that two runs never write it at once.

    Readers take no lock.  Where the file system has no ``flock`` (or on Windows) the
    lock is skipped.
    """

    def __init__(self, path: str) -> None:
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # _open_h5 reports why the file cannot be opened
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResultFileError(
                f"{_fmt_path(path)} is being written by another process or handle (is a run still going?)"
            ) from None
        except OSError:  # no flock on this file system
            os.close(fd)
            return
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def open_result(path: str | os.PathLike, mode: str = "r") -> ResultFile:
    """Open and validate a result file.

    Parameters
    ----------
    path : str or path-like
    mode : {"r", "r+"}
        ``"r+"`` to write missing cells (resume) or update attributes.

    Raises
    ------
    ResultFileError
        The file is missing, not HDF5, truncated, not a landscape file, of an
        unsupported schema version, or its datasets are inconsistent.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    return ResultFile(os.fspath(path), mode)


def open_or_create(
    path: str | os.PathLike,
    *,
    kind: str,
    shape: tuple[int, ...],
    metrics: Sequence[str],
    attrs: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    resume: bool = False,
    force: bool = False,
    ignore: Iterable[str] | None = None,
    allow_large: bool = False,
) -> ResultFile:
    """The output file of a run, opened for writing: resumed, created or replaced.

    * ``path`` missing: created (also with ``resume=True``: nothing to resume yet).
    * ``path`` exists and ``resume``: opened ``"r+"`` after checking that this run
      computes the same thing (kind, grid, metrics, attributes except ``ignore``, and
      the static arrays); :meth:`ResultFile.pending` then lists the cells left to do.
    * ``path`` exists and ``force``: replaced by a new file.
    * ``path`` exists otherwise: :class:`ResultExistsError`.

    Parameters are those of :func:`create_result` (``allow_large`` included), plus ``resume`` and ``ignore``
    (see :func:`check_compatible`; default: :data:`RUN_ATTRS` and the attributes the
    registered ``kind`` declares not compared).
    """
    if resume and force:
        raise ValueError("resume and force contradict each other; pass one")
    path = os.fspath(path)
    remove_stale_temps(path)
    if not (resume and os.path.lexists(path)):
        return create_result(
            path,
            kind=kind,
            shape=shape,
            metrics=metrics,
            attrs=attrs,
            arrays=arrays,
            force=force,
            allow_large=allow_large,
        )
    result = open_result(path, "r+")
    try:
        result.check_resume(kind=kind, shape=shape, metrics=metrics, attrs=attrs, ignore=ignore)
        for name, array in (arrays or {}).items():
            if name not in result.array_names():
                raise ResultFileError(f"cannot resume {_fmt_path(path)}: it has no array {name!r} but this run has one")
            stored, array = result.read_array(name), np.asarray(array)
            if stored.shape != array.shape or not np.array_equal(stored, array, equal_nan=True):
                raise ResultFileError(
                    f"cannot resume {_fmt_path(path)}: its array {name!r} differs from this run's: "
                    + _array_difference(stored, array)
                )
    except BaseException:
        result.close()
        raise
    return result


def _warn_nonfinite(message: str) -> None:
    """Warn with :class:`landscape.metrics.NonFiniteWarning` (imported when needed: this
    module imports only numpy and h5py; a copy of it run alone warns RuntimeWarning)."""
    import warnings

    try:
        from .metrics import NonFiniteWarning as category
    except ImportError:  # pragma: no cover - io.py loaded outside the package
        category = RuntimeWarning
    warnings.warn(message, category, stacklevel=4)


def _array_difference(stored: np.ndarray, new: np.ndarray) -> str:
    """What differs between a file's array and a run's, and by how much (one line)."""
    if stored.shape != new.shape:
        return f"the file has {stored.dtype}{list(stored.shape)}, this run {new.dtype}{list(new.shape)}"
    if stored.dtype.kind not in "biufc" or new.dtype.kind not in "biufc":
        return f"the file has {stored.dtype}, this run {new.dtype}"
    common = np.complex128 if "c" in stored.dtype.kind + new.dtype.kind else np.float64
    a, b = stored.astype(common), new.astype(common)
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    count = int(differ.sum())
    if count == 0:  # equal values of other dtypes
        return f"the file has {stored.dtype}, this run {new.dtype}"
    first = tuple(int(i) for i in np.argwhere(differ)[0])
    where = first[0] if len(first) == 1 else first
    text = f"{count} of {a.size} entries of {stored.dtype}{list(stored.shape)} differ"
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(a - b)
        both = differ & np.isfinite(gap)
        if both.any():
            scale = np.maximum(np.abs(a), np.abs(b))
            rel = np.where(both & (scale > 0), gap / np.where(scale > 0, scale, 1.0), 0.0)
            text += f", largest absolute difference {gap[both].max():.3g}, largest relative {rel.max():.3g}"
        odd = count - int(both.sum())
        if odd:
            text += f", {odd} NaN or Inf in one of them only"
    return text + f"; first at index {where}: file {stored[first].item()!r}, this run {new[first].item()!r}"


class ResultFile:
    """An open result file; use it as a context manager.

    Attributes
    ----------
    path : str
    mode : {"r", "r+"}
    kind : str
    kind_version : int or None
        The schema version of the kind (1 for files of a registered kind written before
        kinds had versions; None for a kind that is not registered).
    shape : tuple of int
        The grid shape of the cells.
    metrics : list of str
        Metric names, in creation order.
    attrs : dict
        The decoded root attributes, without the structural ``format``,
        ``schema-version`` and ``kind``.
    schema_version : int
    """

    def __init__(self, path: str, mode: str) -> None:
        self.path = path
        self.mode = mode
        self._h5: h5py.File | None = None
        self._lock: _WriterLock | None = None
        self._written = 0  # cells written through this handle, and those not finite, by metric
        self._nonfinite: dict[str, tuple[int, list[int]]] = {}  # name -> (count, first flat indices)
        self._open()

    # ---------------------------------------------------------------- opening / closing

    def _open(self) -> None:
        lock = _WriterLock(self.path) if self.mode == "r+" else None
        try:
            h5 = open_hdf5(self.path, self.mode)
            try:
                self._load(h5)
            except BaseException:
                h5.close()
                raise
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self._h5, self._lock = h5, lock

    def _load(self, h5: h5py.File) -> None:
        shown = _fmt_path(self.path)
        try:
            raw_attrs = dict(h5.attrs.items())
        except (OSError, KeyError, RuntimeError) as exc:
            raise ResultFileError(f"{shown} has unreadable attributes ({exc})") from None
        if "format" not in raw_attrs:
            raise ResultFileError(f"{shown} is not a landscape result file (no 'format' attribute)")
        fmt = _decode_attr(raw_attrs["format"])
        if fmt != FORMAT_NAME:
            raise ResultFileError(
                f"{shown} is not a landscape result file (its 'format' is {fmt!r}, expected {FORMAT_NAME!r})"
            )
        version = _decode_attr(raw_attrs.get("schema-version"))
        if not isinstance(version, int) or isinstance(version, bool):
            raise ResultFileError(f"{shown} has no valid 'schema-version' attribute (got {version!r})")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            readable = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
            raise ResultFileError(f"{shown} has schema version {version}; this landscape reads version {readable}")
        kind = _decode_attr(raw_attrs.get("kind"))
        if not isinstance(kind, str):
            raise ResultFileError(f"{shown} has no 'kind' attribute")
        kind_version = _kind_version(kind, _decode_attr(raw_attrs.get("kind-version")), shown)

        done = h5.get("done")
        if not isinstance(done, h5py.Dataset) or done.dtype != np.uint8 or done.ndim < 1:
            raise ResultFileError(f"{shown} has no uint8 dataset '/done'")
        shape = tuple(int(d) for d in done.shape)
        group = h5.get("metrics")
        if not isinstance(group, h5py.Group):
            raise ResultFileError(f"{shown} has no group '/metrics'")
        names = _decode_attr(group.attrs.get(_METRIC_ORDER_ATTR, "json:null"))
        present = sorted(group.keys())
        if not isinstance(names, list) or sorted(names) != present:
            raise ResultFileError(f"{shown} lists metrics {names!r} but holds datasets {present!r} under '/metrics'")
        for name in names:
            dset = group[name]
            if not isinstance(dset, h5py.Dataset) or dset.dtype != np.float64:
                raise ResultFileError(f"{shown}: '/metrics/{name}' is not a float64 dataset")
            if dset.shape != shape:
                raise ResultFileError(f"{shown}: '/metrics/{name}' has shape {dset.shape} but '/done' has {shape}")
        if self.mode == "r+":
            for dset in [done] + [group[n] for n in names]:
                if dset.chunks is not None:
                    raise ResultFileError(
                        f"{shown}: '{dset.name}' is chunked; landscape writes cells only into contiguous datasets"
                    )
        try:
            done[()]  # a damaged file fails here rather than in the middle of a run
        except (OSError, RuntimeError) as exc:
            raise ResultFileError(f"{shown} is truncated or damaged ({exc})") from None

        self.kind = kind
        self.kind_version = kind_version
        self.schema_version = version
        self.shape = shape
        self.metrics = list(names)
        added = _decode_attr(group.attrs.get(_ADDED_ATTR, "json:[]"))
        #: the metrics the file was created with: those :meth:`write_cells` writes and a
        #: resumed run must compute (the rest came later through :meth:`add_metrics`)
        self.base_metrics = [m for m in names if m not in set(added or [])]
        self.attrs = {k: _decode_attr(v) for k, v in raw_attrs.items() if k not in _STRUCTURAL_ATTRS}

    def close(self) -> None:
        """Close the file (safe to call twice); warn (:class:`~landscape.metrics.NonFiniteWarning`)
        when cells written through this handle hold NaN or Inf."""
        self._close()

    def _close(self) -> None:
        if self._h5 is not None:
            if self._nonfinite:
                message, self._nonfinite, self._written = self._nonfinite_message(), {}, 0
                _warn_nonfinite(message)  # stack: here, _close, close or __exit__, the caller
            self._h5.close()
            self._h5 = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def closed(self) -> bool:
        return self._h5 is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.mode
        return f"<ResultFile {self.path!r} kind={self.kind!r} shape={self.shape} {state}>"

    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise ValueError(f"result file {_fmt_path(self.path)} is closed")
        return self._h5

    def _writable(self) -> h5py.File:
        h5 = self._file()
        if self.mode != "r+":
            raise ValueError(f"result file {_fmt_path(self.path)} is open read-only")
        return h5

    # ---------------------------------------------------------------- reading

    @property
    def size(self) -> int:
        """Number of cells, ``prod(shape)``."""
        return math.prod(self.shape)

    @property
    def done(self) -> np.ndarray:
        """bool[shape]: cells whose metrics are all written."""
        return self._file()["done"][()] != 0

    def pending(self) -> np.ndarray:
        """int64[n]: flat (C-order) indices of the cells not done, ascending."""
        return np.flatnonzero(~self.done.ravel()).astype(np.int64)

    def read_metric(self, name: str) -> np.ndarray:
        """float64[shape]: the metric, NaN where not computed."""
        if name not in self.metrics:
            raise KeyError(f"{_fmt_path(self.path)} has no metric {name!r}; it has {self.metrics}")
        return self._file()["metrics"][name][()]

    def array_names(self) -> list[str]:
        """Names of the static arrays under ``/arrays``."""
        group = self._file().get("arrays")
        return list(group.keys()) if isinstance(group, h5py.Group) else []

    def read_array(self, name: str) -> np.ndarray:
        """A static array, with the dtype it was stored with."""
        group = self._file().get("arrays")
        if not isinstance(group, h5py.Group) or name not in group:
            raise KeyError(f"{_fmt_path(self.path)} has no array {name!r}; it has {self.array_names()}")
        return group[name][()]

    # ---------------------------------------------------------------- writing cells

    def _flat_indices(self, flat_indices: Any) -> np.ndarray:
        index = np.asarray(flat_indices)
        if index.size == 0:
            return np.zeros(0, dtype=np.int64)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(f"flat_indices must be a 1-d integer array, got shape {index.shape} dtype {index.dtype}")
        index = index.astype(np.int64)
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= self.size:
            raise IndexError(
                f"flat index {low if low < 0 else high} out of range for {self.size} cells (shape {self.shape})"
            )
        if np.unique(index).size != index.size:
            raise ValueError("flat_indices has repeated cells")
        return index

    def _selection(self, index: np.ndarray) -> tuple[h5py.h5s.SpaceID, np.ndarray]:
        """Memory space for ``index.size`` values and the cells' coordinates (n, ndim)."""
        coords = np.stack(np.unravel_index(index, self.shape), axis=1).astype(np.uint64)
        return h5py.h5s.create_simple((index.size,)), coords

    def _write_points(
        self,
        dset: h5py.Dataset,
        memspace: h5py.h5s.SpaceID,
        coords: np.ndarray,
        data: np.ndarray,
    ) -> None:
        filespace = dset.id.get_space()
        filespace.select_elements(coords)
        dset.id.write(memspace, filespace, np.ascontiguousarray(data, dtype=dset.dtype))

    def _column(self, name: str, value: Any, n: int) -> np.ndarray:
        column = np.asarray(value, dtype=np.float64).reshape(-1)
        if column.size != n:
            raise ValueError(f"values[{name!r}] has {column.size} entries for {n} cells")
        return column

    def write_cells(self, flat_indices: Any, values: Mapping[str, Any]) -> None:
        """Write finished cells: every metric's values, flush, then the done flags, flush.

        Parameters
        ----------
        flat_indices : int[n]
            Flat (C-order) cell indices, distinct, in any order.
        values : mapping of str to float[n]
            One entry per metric the file was created with (:attr:`base_metrics`); metrics
            added later (:meth:`add_metrics`) may be given too.

        Only raw data at fixed offsets is written, so a kill at any moment leaves a
        readable file; at worst some values are written without their done flag.
        """
        h5 = self._writable()
        index = self._flat_indices(flat_indices)
        missing = [m for m in self.base_metrics if m not in values]
        unknown = [k for k in values if k not in self.metrics]
        if missing or unknown:
            raise ValueError(
                f"write_cells needs values for the metrics {self.base_metrics} (and may take those added later); "
                f"missing {missing}, unknown {unknown}"
            )
        written = [m for m in self.metrics if m in values]
        columns = {m: self._column(m, values[m], index.size) for m in written}
        if index.size == 0:
            return
        memspace, coords = self._selection(index)
        for name in written:
            self._write_points(h5["metrics"][name], memspace, coords, columns[name])
        h5.flush()
        self._write_points(h5["done"], memspace, coords, np.ones(index.size, dtype=np.uint8))
        h5.flush()
        self._count_nonfinite(index, columns)

    def _count_nonfinite(self, index: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Remember the written cells that are NaN or Inf (warned once, when the file closes),
        unless the file's kind pads its tables with NaN (:attr:`ResultKind.warn_nonfinite`)."""
        spec = _KINDS.get(self.kind)
        if spec is not None and not spec.warn_nonfinite:
            return
        self._written += index.size
        for name, column in columns.items():
            bad = index[~np.isfinite(column)]
            if bad.size:
                count, first = self._nonfinite.get(name, (0, []))
                self._nonfinite[name] = (count + bad.size, sorted({*first, *np.sort(bad)[:3].tolist()})[:3])

    def _place(self, flat: int) -> str:
        """Cell ``flat`` as grid indices and, where the file has them, its coordinates
        (arrays ``x``, ``y`` or ``t`` of the axis' length; a curve's ``rows``)."""
        index = np.unravel_index(flat, self.shape)
        names = self.array_names()
        parts = []
        for axis, i in enumerate(index):
            rows = self.attrs.get("rows")
            if axis == 0 and len(self.shape) > 1 and isinstance(rows, list) and len(rows) == self.shape[0]:
                parts.append(str(rows[i]))
                continue
            for name in ("x", "t") if axis == 0 else ("y", "t") if axis == 1 else ():
                if name in names:
                    values = np.asarray(self.read_array(name)).reshape(-1)
                    if values.size == self.shape[axis]:
                        parts.append(f"{name}={values[i]:.4g}")
                        break
        cell = f"cell {_cell(flat, self.shape)}"
        return f"{' '.join(parts)} ({cell})" if parts else cell

    def _nonfinite_message(self) -> str:
        """One line: which metrics have NaN/Inf in the cells written, how many, and where."""
        groups: dict[tuple[int, tuple[int, ...]], list[str]] = {}  # metrics bad at the same cells
        for name, (count, first) in self._nonfinite.items():
            groups.setdefault((count, tuple(first)), []).append(name)
        where = []
        for (count, first), names in groups.items():
            cells = ", ".join(self._place(c) for c in first)
            more = ", ..." if count > len(first) else ""
            where.append(f"{', '.join(names)} in {count} of {self._written} cells, first at {cells}{more}")
        return f"{_fmt_path(self.path)}: computed values not finite (NaN/Inf): {'; '.join(where)}"

    def set_metric_cells(self, name: str, flat_indices: Any, values: Any) -> None:
        """Write one metric's values at some cells without touching the done flags."""
        h5 = self._writable()
        if name not in self.metrics:
            raise KeyError(f"{_fmt_path(self.path)} has no metric {name!r}; it has {self.metrics}")
        index = self._flat_indices(flat_indices)
        column = self._column(name, values, index.size)
        if index.size == 0:
            return
        memspace, coords = self._selection(index)
        self._write_points(h5["metrics"][name], memspace, coords, column)
        h5.flush()

    # ---------------------------------------------------------------- metadata changes

    def _atomic_rewrite(self, change) -> None:
        """Apply ``change(h5)`` to a copy of the file and rename the copy over it."""
        self._writable().close()
        self._h5 = None
        old_lock, self._lock = (
            self._lock,
            None,
        )  # held on the old file until it is replaced
        tmp = _temp_path(self.path)
        try:
            shutil.copyfile(self.path, tmp)
            shutil.copymode(self.path, tmp)
            with h5py.File(tmp, "r+", locking=False) as h5:
                change(h5)
            _fsync_file(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.path)
        finally:
            _remove_quietly(tmp)
            if old_lock is not None:
                old_lock.release()
            self._open()

    def update_attrs(self, mapping: Mapping[str, Any]) -> None:
        """Set root attributes (e.g. ``finished``, ``elapsed-s``), atomically."""
        for key in mapping:
            if not isinstance(key, str) or not key:
                raise ValueError(f"attribute names must be non-empty str, got {key!r}")
            if key in _STRUCTURAL_ATTRS:
                raise ValueError(f"attribute {key!r} is reserved by the result file format")
        encoded = {k: _encode_attr(k, v) for k, v in mapping.items()}

        def change(h5: h5py.File) -> None:
            for key, value in encoded.items():
                h5.attrs[key] = value

        self._atomic_rewrite(change)

    def add_metrics(self, names: Iterable[str]) -> None:
        """Add NaN metric datasets (e.g. a Hessian eigenvalue map), atomically.

        The done mask is left as it is: it keeps meaning "the original metrics of this
        cell are written"; fill the new metrics with :meth:`set_metric_cells` and find
        their missing cells with ``np.isnan(read_metric(name))``.
        """
        new = [_check_name("metric", n) for n in names]
        clash = [n for n in new if n in self.metrics]
        if clash or len(set(new)) != len(new):
            raise ValueError(f"metrics {clash or new} already exist or repeat in {self.metrics}")
        if not new:
            return
        order = self.metrics + new

        def change(h5: h5py.File) -> None:
            group = h5["metrics"]
            missing = np.full(self.shape, np.nan, dtype=np.float64)
            for name in new:
                _write_contiguous(group, name, missing)
            group.attrs[_METRIC_ORDER_ATTR] = _encode_attr(_METRIC_ORDER_ATTR, order)
            added = [m for m in order if m not in self.base_metrics]
            group.attrs[_ADDED_ATTR] = _encode_attr(_ADDED_ATTR, added)

        self._atomic_rewrite(change)

    # ---------------------------------------------------------------- resuming

    @property
    def ignore(self) -> tuple[str, ...]:
        """Attributes a resumed run may differ in: :data:`RUN_ATTRS` and those the file's
        registered kind declares not compared (:attr:`ResultKind.not_compared`)."""
        spec = _KINDS.get(self.kind)
        return spec.ignore if spec is not None else RUN_ATTRS

    def check_compatible(self, new_attrs: Mapping[str, Any], ignore: Iterable[str] | None = None) -> None:
        """:func:`check_compatible` of this file's attributes against ``new_attrs``
        (``ignore`` defaults to :attr:`ignore`)."""
        check_compatible(self.attrs, new_attrs, self.ignore if ignore is None else ignore, path=self.path)

    def check_resume(
        self,
        *,
        kind: str,
        shape: tuple[int, ...],
        metrics: Sequence[str],
        attrs: Mapping[str, Any],
        ignore: Iterable[str] | None = None,
    ) -> None:
        """Raise ResultFileError unless this run (kind, grid, metrics, attrs) matches the file
        (``ignore`` defaults to :attr:`ignore`)."""
        shown = _fmt_path(self.path)
        if kind != self.kind:
            raise ResultFileError(f"cannot resume {shown}: it is a {self.kind!r} result but this run makes {kind!r}")
        if tuple(int(d) for d in shape) != self.shape:
            raise ResultFileError(f"cannot resume {shown}: its grid is {self.shape} but this run has {tuple(shape)}")
        if list(metrics) != self.base_metrics:
            raise ResultFileError(
                f"cannot resume {shown}: its metrics are {self.base_metrics} but this run computes {list(metrics)}"
            )
        self.check_compatible(attrs, ignore)


_MISSING = object()


def _ignored(key: str, patterns: Sequence[str]) -> bool:
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def first_difference(
    existing_attrs: Mapping[str, Any], new_attrs: Mapping[str, Any], ignore: Iterable[str] = ()
) -> tuple[str, Any, Any] | None:
    """The first attribute (in sorted order) whose value differs, as ``(key, old, new)``, or None.

    ``new_attrs`` values are normalized as storing them would (tuples become lists, numpy
    scalars Python numbers); a key on one side only differs, and the missing side is the
    marker ``first_difference.MISSING``. ``ignore`` holds names or shell patterns
    (``"barrier-*"``) not compared; the structural attributes never are.
    """
    patterns = (*ignore, *_STRUCTURAL_ATTRS)
    old = {k: v for k, v in existing_attrs.items() if not _ignored(k, patterns)}
    new = {k: _normalize_attr(k, v) for k, v in new_attrs.items() if not _ignored(k, patterns)}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a is _MISSING or b is _MISSING or not _values_equal(a, b):
            return key, a, b
    return None


first_difference.MISSING = _MISSING  # type: ignore[attr-defined]


def check_compatible(
    existing_attrs: Mapping[str, Any],
    new_attrs: Mapping[str, Any],
    ignore: Iterable[str] = RUN_ATTRS,
    *,
    path: str | os.PathLike | None = None,
) -> None:
    """Raise ResultFileError if a resumed run would compute something else.

    Keys are compared in sorted order and the first difference is reported; a key
    present on one side only is a difference.  ``new_attrs`` values are normalized as
    storing them would (tuples become lists, numpy scalars Python numbers).

    Parameters
    ----------
    existing_attrs : mapping
        ``ResultFile.attrs`` of the file being resumed.
    new_attrs : mapping
        The attributes this run would write.
    ignore : iterable of str
        Keys not compared, or shell patterns of them (default :data:`RUN_ATTRS`).
    path : str or path-like, optional
        Named in the message.
    """
    where = f"cannot resume {_fmt_path(path)}" if path is not None else "cannot resume"
    diff = first_difference(existing_attrs, new_attrs, ignore)
    if diff is None:
        return
    key, old, new = diff
    if new is _MISSING:
        raise ResultFileError(f"{where}: its {key!r} is {_short(old)} but this run has no {key!r}")
    if old is _MISSING:
        raise ResultFileError(f"{where}: it has no {key!r} but this run has {_short(new)}")
    raise ResultFileError(f"{where}: its {key!r} is {_short(old)} but this run has {_short(new)}")


# --------------------------------------------------------------------------- summary


def _cell(flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return str(flat)
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def _run_progress(rf: ResultFile, n_done: int) -> str:
    """How far the run that writes ``rf`` got: cells done, or for a ``connections`` file
    (rewritten whole after each method) the methods finished of those the run has to do."""
    if rf.kind == "connections" and isinstance(rf.attrs.get("methods"), list):
        attrs = rf.attrs
        written = list(attrs["methods"])
        skipped = attrs.get("skipped") if isinstance(attrs.get("skipped"), dict) else {}
        planned = attrs.get("planned")
        note = f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""
        if attrs.get("complete") is not False:
            return f"methods: {len(written)}/{len(written)} done (100.0%){note}"
        if not isinstance(planned, list):
            return (
                f"methods: {len(written)} done{note}; the run did not finish (interrupted, or still going) "
                "and the file does not record how many it has to do"
            )
        pending = [m for m in planned if m not in written]
        total = len(written) + len(pending)
        return (
            f"methods: {len(written)}/{total} done ({100.0 * len(written) / max(total, 1):.1f}%), "
            f"{len(pending)} pending ({', '.join(pending)}){note}: the run did not finish "
            "(interrupted, or still going); --resume continues it"
        )
    return f"cells: {n_done}/{rf.size} done ({100.0 * n_done / rf.size:.1f}%), {rf.size - n_done} pending"


def describe(path: str | os.PathLike) -> str:
    """A human summary of a result file (``landscape info FILE.h5``).

    Kind, grid, how far the run got (cells done; methods done for a ``connections``
    file), per-metric range over the done cells, where the minimum and maximum are and
    how many done cells are not finite, the attributes (long values shortened) and the
    arrays. Metrics added after the run (Hessian eigenvalue maps) have no done flags: a
    cell of theirs is written when it is not NaN.
    """
    with open_result(path, "r") as rf:
        done = rf.done.ravel()
        n_done = int(done.sum())
        lines = [
            (
                f"{os.fspath(path)}: landscape result, kind {rf.kind!r}"
                + (f" version {rf.kind_version}" if rf.kind_version is not None else "")
                + f", schema version {rf.schema_version}"
            ),
            f"grid {' x '.join(map(str, rf.shape))} = {rf.size} cells",
            _run_progress(rf, n_done),
            "metrics (over done cells):",
        ]
        width = max(len(m) for m in rf.metrics)
        for name in rf.metrics:
            values = rf.read_metric(name).ravel()
            added = name not in rf.base_metrics
            written = ~np.isnan(values) if added else done
            finite = written & np.isfinite(values)
            bad = int((written & ~np.isfinite(values)).sum())
            parts = [f"{int(written.sum())}/{rf.size} cells written (added later)"] if added else []
            if finite.any():
                i_min = int(np.argmin(np.where(finite, values, np.inf)))
                i_max = int(np.argmax(np.where(finite, values, -np.inf)))
                parts.append(
                    f"min {values[i_min]:.6g} at {_cell(i_min, rf.shape)}, "
                    f"max {values[i_max]:.6g} at {_cell(i_max, rf.shape)}"
                )
            elif not written.any():
                parts.append("no values yet")
            if bad:
                parts.append(f"{bad} computed cells not finite (NaN/Inf)")
            text = f"  {name:<{width}}  " + ", ".join(parts)
            lines.append(text)
        lines.append("attributes:")
        for key in sorted(rf.attrs):
            lines.append(f"  {key}: {_short(rf.attrs[key], 100)}")
        names = rf.array_names()
        lines.append("arrays:" if names else "arrays: none")
        group = rf._file()["arrays"] if names else None
        for name in names:
            dset = group[name]
            lines.append(f"  {name}  {tuple(dset.shape)} {dset.dtype}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- kinds read as plain data
#
# The readers of the result kinds that are not a grid of cells over coordinates: each reads
# what its writer (``ConnectionReport.save``, ``EnsembleComparison.save``,
# ``WAEnsembleCurve.save``) stored and returns plain data (lists, dicts, numpy arrays) whose
# keys are the fields of the analysis' dataclass, so the analysis loads with ``cls(**data)``
# and a figure reads the file without the analysis.

_DERIVED_ATTRS = ("table", "library-version", "created")  # rebuilt or run notes: not data


class _Reading:
    """``with _Reading(src, kind) as rf``: an open :class:`ResultFile` of that kind (a path is
    opened and closed; an open ResultFile is used as it is)."""

    def __init__(self, src: str | os.PathLike | ResultFile, kind: str) -> None:
        self.src, self.kind, self.opened = src, kind, None

    def __enter__(self) -> ResultFile:
        if isinstance(self.src, ResultFile):
            rf = self.src
        elif isinstance(self.src, (str, os.PathLike)):
            rf = self.opened = open_result(self.src, "r")
        else:
            raise TypeError(f"expected a result file's path or an open ResultFile, got {type(self.src).__name__}")
        if rf.kind != self.kind:
            where = _fmt_path(rf.path)
            self.close()
            raise ValueError(f"{where} holds a {rf.kind!r} result, not {self.kind!r}")
        return rf

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()
            self.opened = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _data_attrs(attrs: Mapping[str, Any], *taken: str) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in taken and k not in _DERIVED_ATTRS}


def read_connections(src: str | os.PathLike | ResultFile) -> dict[str, Any]:
    """A file of kind ``"connections"`` (``ConnectionReport.save``) as plain data.

    Returns
    -------
    dict
        ``methods``, ``splits`` (lists of str), ``skipped`` (method -> reason),
        ``endpoints`` (split -> ``A_acc``, ``B_acc``, ``A_loss``, ``B_loss``), ``t`` and
        ``stage`` (method -> ndarray[K]), ``acc`` and ``loss`` (method -> split ->
        ndarray[K]) for every method not skipped, ``labels`` (method -> row label) and
        ``attrs`` (the other attributes).
    """
    with _Reading(src, "connections") as rf:
        a = dict(rf.attrs)
        methods, splits, skipped = list(a["methods"]), list(a["splits"]), dict(a["skipped"])
        computed = [m for m in methods if m not in skipped]
        return {
            "methods": methods,
            "splits": splits,
            "t": {m: rf.read_array(f"{m}.t") for m in computed},
            "stage": {m: rf.read_array(f"{m}.stage") for m in computed},
            "acc": {m: {s: rf.read_array(f"{m}.{s}.acc") for s in splits} for m in computed},
            "loss": {m: {s: rf.read_array(f"{m}.{s}.loss") for s in splits} for m in computed},
            "endpoints": {s: {k: float(v) for k, v in e.items()} for s, e in a["endpoints"].items()},
            "skipped": skipped,
            "attrs": _data_attrs(a, "methods", "splits", "skipped", "endpoints", "rows", "stages", "labels"),
            "labels": connection_labels(methods, a),
        }


#: Row labels of the methods of ``compare_connections`` in files written before the file
#: kept its labels (attribute ``labels``), with the rule of that time below.
_OLD_CONNECTION_LABELS = {"linear": "Linear", "arc": "Arc", "ot": "OT"}


def connection_labels(methods: Sequence[str], attrs: Mapping[str, Any]) -> dict[str, str]:
    """The row label of every method of a ``connections`` file with attributes ``attrs``:
    the attribute ``labels``; for older files, the rule they were written with (WA rows name
    the formulation ``wa-form``, default ``"bias"``; OT matched on ``ot-neuron="bl"``, the
    default, is ``"OT (b, l)"``; other rows are their names).

    Examples
    --------
    >>> connection_labels(["linear", "arc+wa", "Bezier (3)"], {"wa-form": "paper"})
    {'linear': 'Linear', 'arc+wa': 'Arc + WA (paper)', 'Bezier (3)': 'Bezier (3)'}
    """
    saved = attrs.get("labels")
    if isinstance(saved, Mapping):
        return {m: str(saved.get(m, m)) for m in methods}
    form = str(attrs.get("wa-form", "bias"))
    form = {"bias": "bias column"}.get(form, form)
    out = {}
    for m in methods:
        base, wa = m.removesuffix("+wa"), m.endswith("+wa")
        if base not in _OLD_CONNECTION_LABELS:
            out[m] = m
        elif wa:
            out[m] = f"{_OLD_CONNECTION_LABELS[base]} + WA ({form})"
        else:
            bl = base == "ot" and str(attrs.get("ot-neuron", "bl")) == "bl"
            out[m] = _OLD_CONNECTION_LABELS[base] + (" (b, l)" if bl else "")
    return out


def read_ensembles(src: str | os.PathLike | ResultFile) -> dict[str, Any]:
    """A file of kind ``"ensembles"`` (``EnsembleComparison.save``) as plain data.

    Returns
    -------
    dict
        ``labels`` (one per run), ``acc``, ``nll``, ``ece`` (float ndarray[R]),
        ``per_member`` (metric -> ndarray[R, M], NaN past a run's members: ``cumulative_acc``,
        ``cumulative_nll``, ``member_acc``, ``budget``) and ``attrs``.
    """
    with _Reading(src, "ensembles") as rf:
        a = dict(rf.attrs)
        return {
            "labels": list(a["labels"]),
            "acc": np.asarray(a["acc"], float),
            "nll": np.asarray(a["nll"], float),
            "ece": np.asarray(a["ece"], float),
            "per_member": {k: np.asarray(rf.read_metric(k)) for k in rf.metrics},
            "attrs": _data_attrs(a, "labels", "acc", "nll", "ece"),
        }


def read_wa_ensemble(src: str | os.PathLike | ResultFile) -> dict[str, Any]:
    """A file of kind ``"wa-ensemble"`` (``WAEnsembleCurve.save``) as plain data.

    Returns
    -------
    dict
        ``head_layers``, ``sizes`` (lists of int), ``acc``, ``nll`` (ndarray[n_heads,
        n_sizes]), ``member_acc`` (per head, each member's accuracy), ``cost`` (per head:
        ``params``, ``macs`` and their ``*_ordinary`` values), ``n_layers`` and ``attrs``.
    """
    with _Reading(src, "wa-ensemble") as rf:
        a = dict(rf.attrs)
        return {
            "head_layers": [int(v) for v in rf.read_array("head_layers")],
            "sizes": [int(v) for v in rf.read_array("sizes")],
            "acc": np.asarray(rf.read_metric("acc")),
            "nll": np.asarray(rf.read_metric("nll")),
            "member_acc": a["member_acc"],
            "cost": a["cost"],
            "n_layers": int(a["n_layers"]),
            "attrs": _data_attrs(a, "member_acc", "cost", "n_layers"),
        }


def read_predictions(src: str | os.PathLike | ResultFile) -> dict[str, Any]:
    """A file of kind ``"predict"`` (:func:`landscape.variational.save_predictions`) as plain data.

    Returns
    -------
    dict
        ``schemes`` (list of str), ``acc``, ``nll``, ``ece`` (float ndarray[S], one per
        scheme), ``samples``, ``seed``, ``bn`` and ``attrs`` (the other attributes).
    """
    with _Reading(src, "predict") as rf:
        a = dict(rf.attrs)
        out = {"schemes": list(a["schemes"])}
        out.update({m: np.asarray(rf.read_metric(m)) for m in ("acc", "nll", "ece")})
        out.update(samples=int(a["samples"]), seed=a["seed"], bn=a["bn"])
        out["attrs"] = _data_attrs(a, "schemes", "samples", "seed", "bn")
        return out


def read_density(src: str | os.PathLike | ResultFile) -> dict[str, Any]:
    """A file of kind ``"hessian-density"`` (:meth:`landscape.hessian.SpectralDensity.save`) as plain data.

    Returns
    -------
    dict
        The fields of :class:`~landscape.hessian.SpectralDensity`: ``nodes``, ``weights``
        (float ndarray[probes, steps]), ``n``, ``hvps`` (int), ``selection`` (dict or None),
        and ``attrs`` (the other attributes).
    """
    with _Reading(src, "hessian-density") as rf:
        a = dict(rf.attrs)
        return {
            "nodes": np.asarray(rf.read_metric("nodes")),
            "weights": np.asarray(rf.read_metric("weights")),
            "n": int(a["n"]),
            "hvps": int(a["hvps"]),
            "selection": a["selection"],
            "attrs": _data_attrs(a, "n", "hvps", "selection"),
        }


def read_ensemble_run(src: str | os.PathLike | ResultFile, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A file of kind ``"ensemble-run"`` (:func:`landscape.ensembles.record.open_ensemble_run`)
    as plain data.

    Parameters
    ----------
    src : path or ResultFile
    settings : mapping, optional
        The settings of a run that would continue this one: compared with the file's
        (``ResultFileError`` ``cannot resume ...`` when they differ).

    Returns
    -------
    dict
        ``method``, ``members`` (checkpoint file names), ``done`` (bool ndarray: which
        members are saved), ``budgets`` (float ndarray, NaN where not done), ``spent``
        (float or None), ``settings`` (the other attributes) and ``arrays`` (name ->
        ndarray: ``lr`` and the method's own).
    """
    with _Reading(src, "ensemble-run") as rf:
        a = dict(rf.attrs)
        if settings is not None:
            new = {k: v for k, v in settings.items() if k != "method"}
            new.update(method=settings.get("method", a["method"]), members=a["members"])
            rf.check_compatible(new)
        return {
            "method": a["method"],
            "members": list(a["members"]),
            "done": rf.done.copy(),
            "budgets": np.where(rf.done, rf.read_metric("budget"), np.nan),
            "spent": a.get("spent"),
            "settings": _data_attrs(a, "method", "members", "spent"),
            "arrays": {name: rf.read_array(name) for name in rf.array_names()},
        }


# --------------------------------------------------------------------------- kinds
#
# Every kind of file landscape writes is registered here, once: its name, its schema
# version, the one function that writes it and the one that reads it, and what every file
# of the kind holds. ``docs/h5-format.md`` documents the same table, and
# ``tests/test_io_registry.py`` checks that the two agree (anndata's IO registry:
# ``IOSpec("array", "0.2.0")``).


class ResultKind(NamedTuple):
    """One kind of file: its name, schema version, writer, reader and contents.

    Attributes
    ----------
    name : str
        The root attribute ``kind`` of an HDF5 result file (``"line"``, ``"connections"``),
        or the ``format`` entry of a PyTorch file (``"landscape-curve"``).
    version : int
        Schema version of the kind, stored as the root attribute ``kind-version`` (PyTorch
        files: the entry ``version``). Files written before kinds had versions have none
        and are version 1.
    reads : tuple of int
        The versions the reader understands; opening another version raises
        :class:`ResultFileError`.
    writer, reader : str
        Dotted names of the one function that writes the kind and the one that reads it.
    container : {"h5", "pt"}
        An HDF5 result file (this module's layout) or a ``torch.save`` dict.
    grid : str
        What a cell is (documentation).
    metrics, arrays, attrs : tuple of str
        What every file of the kind holds: metrics, static arrays and root attributes (for
        PyTorch files, ``attrs`` are the dict's keys). A kind may hold more (optional
        entries are documented in ``docs/h5-format.md``).
    not_compared : tuple of str
        Attributes a resumed run may differ in besides :data:`RUN_ATTRS` (shell patterns,
        e.g. ``"barrier-*"``): results stored when a run finishes and the record of what is
        done so far. Every other attribute defines the run and is compared when resuming.
    warn_nonfinite : bool
        A NaN or Inf in a done cell is a computed value that is not finite:
        :meth:`ResultFile.write_cells` counts them and closing the file warns
        (:class:`~landscape.metrics.NonFiniteWarning`). False for the tables that mark cells
        that do not apply with NaN (``ensembles``: the members past a run's size).
    """

    name: str
    version: int
    reads: tuple[int, ...]
    writer: str
    reader: str
    container: str = "h5"
    grid: str = ""
    metrics: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()
    not_compared: tuple[str, ...] = ()
    warn_nonfinite: bool = True

    @property
    def ignore(self) -> tuple[str, ...]:
        """The attributes not compared when a run resumes a file of this kind."""
        return (*RUN_ATTRS, *self.not_compared)


_KINDS: dict[str, ResultKind] = {}


def register_kind(
    name: str,
    version: int,
    *,
    writer: str,
    reader: str,
    container: str = "h5",
    grid: str = "",
    metrics: Sequence[str] = (),
    arrays: Sequence[str] = (),
    attrs: Sequence[str] = (),
    not_compared: Sequence[str] = (),
    warn_nonfinite: bool = True,
    reads: Sequence[int] | None = None,
) -> ResultKind:
    """Register a kind of file: one writer and one reader, with a schema version.

    Parameters are the fields of :class:`ResultKind`; ``reads`` defaults to ``(version,)``
    and always includes ``version``. Registering a name again with another definition raises
    ``ValueError``: a kind has one writer and one reader.

    Returns
    -------
    ResultKind
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"kind name must be a non-empty str, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"kind {name!r}: version must be an int >= 1, got {version!r}")
    if container not in ("h5", "pt"):
        raise ValueError(f"kind {name!r}: container must be 'h5' or 'pt', got {container!r}")
    for what, value in (("writer", writer), ("reader", reader)):
        if not isinstance(value, str) or "." not in value:
            raise ValueError(f"kind {name!r}: {what} must be a dotted name such as 'landscape.io.open_result'")
    versions = tuple(sorted({int(v) for v in (reads or ())} | {version}))
    spec = ResultKind(
        name=name,
        version=version,
        reads=versions,
        writer=writer,
        reader=reader,
        container=container,
        grid=grid,
        metrics=tuple(metrics),
        arrays=tuple(arrays),
        attrs=tuple(attrs),
        not_compared=tuple(not_compared),
        warn_nonfinite=bool(warn_nonfinite),
    )
    old = _KINDS.get(name)
    if old is not None and old != spec:
        raise ValueError(
            f"kind {name!r} is already registered (version {old.version}, written by {old.writer}); "
            "a kind has one writer and one reader"
        )
    _KINDS[name] = spec
    return spec


def result_kind(name: str) -> ResultKind:
    """The registered kind ``name``; ``KeyError`` naming the known kinds otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"no kind {name!r} is registered; the kinds are {', '.join(_KINDS)}") from None


def result_kinds() -> dict[str, ResultKind]:
    """Every registered kind, by name, in registration order."""
    return dict(_KINDS)


def _kind_version(name: str, raw: Any, shown: str) -> int | None:
    """The kind version of a file (1 when a registered kind's file predates the attribute);
    ResultFileError when the reader does not know it."""
    spec = _KINDS.get(name)
    if raw is None:
        return 1 if spec is not None else None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ResultFileError(f"{shown} has no valid 'kind-version' attribute (got {raw!r})")
    if spec is not None and raw not in spec.reads:
        raise ResultFileError(
            f"{shown} is a {name!r} file of kind version {raw}; this landscape reads version {_versions(spec.reads)}"
        )
    return raw


def check_kind(src: str | os.PathLike | ResultFile) -> ResultKind:
    """Check that an HDF5 result file holds what its registered kind promises.

    Parameters
    ----------
    src : path or ResultFile

    Returns
    -------
    ResultKind

    Raises
    ------
    ResultFileError
        The kind is not registered, or the file lacks one of its metrics, arrays or
        attributes (all of them named).
    """
    rf = src if isinstance(src, ResultFile) else open_result(src, "r")
    try:
        shown = _fmt_path(rf.path)
        spec = _KINDS.get(rf.kind)
        if spec is None or spec.container != "h5":
            raise ResultFileError(f"{shown} is of kind {rf.kind!r}, which is not registered")
        arrays = set(rf.array_names())
        missing = [f"metric {m!r}" for m in spec.metrics if m not in rf.metrics]
        missing += [f"array {a!r}" for a in spec.arrays if a not in arrays]
        missing += [f"attribute {a!r}" for a in spec.attrs if a not in rf.attrs]
        if missing:
            raise ResultFileError(f"{shown} is a {rf.kind!r} file without its {', '.join(missing)}")
        return spec
    finally:
        if rf is not src:
            rf.close()


# Grids of cells over coordinates (resumable runs of the engine).
_RUN = ("bn", "bn-data", "precision")
register_kind(
    "eval",
    1,
    writer="landscape.evaluate.evaluate",
    reader="landscape.io.open_result",
    grid="(K,): the points",
    arrays=("coefficients",),
    attrs=("metrics", *_RUN, "data", "basis-names", "num-points", "basis-size", "num-weights"),
)
_SURFACE = ("surface-type", "basis-names", "anchor-names", "splits", "metrics-per-split", *_RUN)
register_kind(
    "line",
    1,
    writer="landscape.surface.compute_surface",
    reader="landscape.io.open_result",
    grid="(nx,)",
    arrays=("x", "basis", "coefficients", "anchors"),
    attrs=_SURFACE,
)
register_kind(
    "plane",
    1,
    writer="landscape.surface.compute_surface",
    reader="landscape.io.open_result",
    grid="(nx, ny): cell (i, j) at (x[i], y[j])",
    arrays=("x", "y", "basis", "coefficients", "anchors"),
    attrs=_SURFACE,
)
register_kind(
    "curve",
    1,
    writer="landscape.curves.profile.evaluate_curve",
    reader="landscape.io.open_result",
    grid="(2, T): row 0 the curve, row 1 the straight line",
    arrays=("t", "basis", "coefficients"),
    attrs=("surface-type", "curve-kind", "n-bends", "rows", "basis-names", "splits", *_RUN, "checkpoints"),
    not_compared=("barrier-*",),
)
# Tables of an analysis, each written whole (read back as plain data).
register_kind(
    "connections",
    1,
    writer="landscape.connect.report.ConnectionReport.save",
    reader="landscape.io.read_connections",
    grid="(methods + 1, splits)",
    metrics=("worst_acc", "max_loss"),
    attrs=("methods", "splits", "rows", "skipped", "endpoints", "stages", "table"),
    not_compared=(
        "methods",
        "rows",
        "skipped",
        "endpoints",
        "stages",
        "table",
        "labels",
        "complete",
        "planned",
        "wa_samples",
        "wa_steps",
        "ot_swaps",
    ),
)
register_kind(
    "wa-ensemble",
    1,
    writer="landscape.connect.ensemble.WAEnsembleCurve.save",
    reader="landscape.io.read_wa_ensemble",
    grid="(head sizes, ensemble sizes)",
    metrics=("acc", "nll"),
    arrays=("head_layers", "sizes"),
    attrs=("n_layers", "cost", "member_acc", "table"),
)
register_kind(
    "ensembles",
    1,
    writer="landscape.ensembles.report.EnsembleComparison.save",
    reader="landscape.io.read_ensembles",
    grid="(runs, members)",
    metrics=("cumulative_acc", "cumulative_nll", "member_acc", "budget"),
    attrs=("labels", "acc", "nll", "ece", "table"),
    warn_nonfinite=False,  # NaN past a run's members
)
register_kind(
    "ensemble-run",
    1,
    writer="landscape.ensembles.record.open_ensemble_run",
    reader="landscape.io.read_ensemble_run",
    grid="(members,)",
    metrics=("budget",),
    attrs=("method", "members"),
    not_compared=("members", "spent"),
)
register_kind(
    "predict",
    1,
    writer="landscape.variational.io.save_predictions",
    reader="landscape.io.read_predictions",
    grid="(schemes,)",
    metrics=("acc", "nll", "ece"),
    attrs=("schemes", "samples", "seed", "bn"),
)
register_kind(
    "hessian-density",
    1,
    writer="landscape.hessian.density.SpectralDensity.save",
    reader="landscape.io.read_density",
    grid="(probes, steps)",
    metrics=("nodes", "weights"),
    attrs=("n", "hvps", "selection"),
)
# Surfaces brought in from other tools.
register_kind(
    "loss-landscape",
    1,
    writer="landscape.io_ll.import_loss_landscape",
    reader="landscape.io.open_result",
    grid="(nx,) or (nx, ny): cell (i, j) at (x[i], y[j])",
    arrays=("x",),
    attrs=("surface-type", "source", "source-sha256", "dir-file", "left-out", "partial-cells"),
)
# PyTorch files (torch.load(weights_only=True) reads them).
register_kind(
    "landscape-curve",
    1,
    writer="landscape.curves.curve.Curve.save",
    reader="landscape.curves.files.load_curve",
    container="pt",
    attrs=("kind", "n_bends", "names", "start", "end", "bends"),
)
register_kind(
    "landscape-variational",
    1,
    writer="landscape.variational.io.save_variational",
    reader="landscape.variational.io.read_variational",
    container="pt",
    attrs=("spec", "state_dict"),
)
register_kind(
    "landscape.connect.flows",
    2,
    reads=(1,),
    writer="landscape.connect.flows.save_connection_model",
    reader="landscape.connect.flows.load_connection_model",
    container="pt",
    attrs=("kind", "groups", "flows", "meta", "template"),
)
# Sharpness measures at a point (issue 24): one cell per perturbation or batch.
register_kind(
    "sharpness",
    1,
    writer="landscape.sharpness.compute_sharpness",
    reader="landscape.sharpness.read_sharpness",
    grid="(cells,): row 0 the unperturbed point, then each measure's perturbations or batches",
    metrics=("loss", "base_loss", "norm", "count"),
    arrays=("row", "sample"),
    attrs=("measures", "samples", "m", "steps", "step-size", "init", "seed", "loss", "precision", "params"),
    not_compared=("confidence",),
)


# Model merging and soups (issue 23): one cell per merge of a method's parameter grid.
register_kind(
    "merge",
    1,
    writer="landscape.merge.run.evaluate_merges",
    reader="landscape.io.open_result",
    grid="the method's parameter axes, e.g. (lambda,), (lambda_a, lambda_b), (density, lambda), (row,)",
    arrays=("coefficients",),
    attrs=("method", "axes", "parameters", "seeds", "options", "basis-names", "splits", "metrics-per-split", *_RUN),
    not_compared=("greedy-soup",),
)


def pt_version(state: Mapping[str, Any], name: str, path: str | os.PathLike) -> int:
    """The version of a PyTorch file of registered kind ``name`` (1 when it has none);
    ``ValueError`` when the reader does not know it."""
    spec = result_kind(name)
    version = state.get("version", 1)
    if isinstance(version, bool) or version not in spec.reads:
        raise ValueError(f"{_fmt_path(path)} has format version {version!r}; expected {_versions(spec.reads)}")
    return int(version)


def _versions(reads: Sequence[int]) -> str:
    """``"1"``, ``"1 to 3"`` or ``"1, 3"``."""
    if len(reads) > 1 and list(reads) == list(range(reads[0], reads[-1] + 1)):
        return f"{reads[0]} to {reads[-1]}"
    return ", ".join(str(v) for v in reads)


# --------------------------------------------------------------------------- atomic files


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, force: bool = False) -> str:
    """Write a file so that it appears complete or not at all.

    ``write(tmp)`` writes the whole file to ``.<name>.tmp-<pid>`` next to ``path``
    (``lambda tmp: torch.save(obj, tmp)``); the temporary file is flushed to disk and
    renamed over ``path``. A failure leaves ``path`` as it was and no temporary file.

    Parameters
    ----------
    path : str or path-like
    write : callable
        ``write(tmp_path)``.
    force : bool
        Replace an existing ``path``; without it an existing file raises
        ``FileExistsError`` (checked before writing, and again when publishing).

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    FileExistsError, IsADirectoryError, FileNotFoundError
        ``path`` exists (without ``force``), is a directory, or its folder does not exist.
        Errors while writing name ``path``, never the temporary file; an interruption
        (``KeyboardInterrupt``) removes the temporary file, and one left by a killed process
        is removed by the next write of ``path`` (:func:`remove_stale_temps`).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{_fmt_path(path)} is a directory; expected a file path")
    message = f"{_fmt_path(path)} already exists; pass force=True (CLI: --force) to overwrite it"
    if os.path.lexists(path) and not force:
        raise FileExistsError(message)
    _check_folder(path)
    tmp = _temp_path(path)
    try:
        try:
            write(tmp)
            _fsync_file(tmp)
        except (OSError, RuntimeError) as exc:  # torch.save reports some failures as RuntimeError
            kind = type(exc) if type(exc).__module__ == "builtins" else OSError
            raise kind(_write_failed(path, tmp, exc)) from None
        if force:
            os.replace(tmp, path)
        else:
            _publish_without_overwrite(tmp, path, FileExistsError(message))
        _fsync_dir(path)
    finally:
        _remove_quietly(tmp)
    return path
