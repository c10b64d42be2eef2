"""What the subcommands share when they run: the one-line usage error, the data of
``--data``, the checks of ``--out`` and the figures of ``--plot``."""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = [
    "UsageError",
    "check_out",
    "checkpoint_records",
    "comma_list",
    "data_attrs",
    "finite_summary",
    "max_memory",
    "num_samples",
    "one_line_warnings",
    "open_data",
    "parse_bytes",
    "plot_if_asked",
    "print_surface_summary",
    "recorded_config",
    "refuse_existing",
    "several_checkpoints",
]


class UsageError(ValueError):
    """Bad command-line input."""


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1e9"`` -> bytes."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in scale:
            return int(float(t[:-1]) * scale[t[-1]])
        return int(float(t))
    except ValueError:
        raise UsageError(f"--max-memory {text!r} is not a size; expected e.g. 2G, 512M or 1000000") from None


def max_memory(args) -> int | None:
    """``--max-memory`` in bytes, or None."""
    return parse_bytes(args.max_memory) if args.max_memory else None


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def open_data(args, split: str, *, max_samples: int | None | bool = True):
    """``--data`` of ``split`` with the data options of ``args``: a py: spec's loader or
    dataset as it is (every command streams it), the built-in specs in memory.
    ``max_samples=True`` takes ``--max-samples``."""
    from ..data import open_data as open_spec

    return open_spec(
        args.data,
        split,
        max_samples=args.max_samples if max_samples is True else max_samples,
        normalize=args.normalize,
        seq_len=getattr(args, "seq_len", None),
        kwargs=getattr(args, "data_kwargs", None),
    )


def bn_data_of(args, splits: dict):
    """The statistics data of ``--bn`` (None for ``running``): the ``--bn-split`` among the
    splits already opened, else opened here."""
    if args.bn == "running":
        return None
    return splits.get(args.bn_split) or open_data(args, args.bn_split)


def batching_options(args) -> dict:
    """The engine keywords of :func:`options.add_batching`: batch size, points per pass,
    memory budget and execution path."""
    return {
        "batch_size": args.batch_size,
        "points_per_pass": args.points_per_pass,
        "max_memory": max_memory(args),
        "path": args.path,
    }


def engine_options(args, splits: dict, *, device=None) -> dict:
    """Every engine keyword of :func:`options.add_engine`: ``bn`` with its statistics data
    (:func:`bn_data_of` among ``splits``), precision, device (``device`` when the caller has
    resolved it, e.g. a distributed rank's) and :func:`batching_options`."""
    return {
        "bn": args.bn,
        "bn_data": bn_data_of(args, splits),
        "precision": args.precision,
        "device": args.device if device is None else device,
        **batching_options(args),
    }


def num_samples(data) -> int:
    from ..batches import as_source

    return as_source(data).num_samples()


def data_attrs(args) -> dict:
    """Data options beyond the spec, for result-file attributes."""
    out = {}
    if getattr(args, "data_kwargs", None):
        out["data-kwargs"] = args.data_kwargs
    if getattr(args, "seq_len", None) is not None:
        out["seq-len"] = args.seq_len
    return out


def recorded_config(args) -> dict:
    """``{"cli-config": JSON}``: the resolved options of this command line, which every
    result file records (``landscape rerun`` reads them), or nothing when the namespace was
    not parsed by :func:`landscape.cli.main`."""
    text = getattr(args, "cli_config", None)
    return {"cli-config": text} if text else {}


def checkpoint_records(weights) -> list[dict]:
    """``[{"path", "sha256"}]`` of loaded checkpoints, for result-file attributes."""
    return [{"path": w.source, "sha256": w.sha256} for w in weights]


def _not_a_directory(path: str | None) -> None:
    """An output file path that names a directory is refused (``--force`` cannot help)."""
    if path and os.path.isdir(path):
        raise UsageError(f"'{path}' is a directory; expected a file path, e.g. '{os.path.join(path, 'result.h5')}'")


def check_out(args) -> None:
    """An ``--out`` that exists needs ``--resume`` or ``--force``, not both; a directory is
    refused."""
    _not_a_directory(args.out)
    if args.out and os.path.exists(args.out) and not (args.resume or args.force):
        raise UsageError(f"'{args.out}' already exists; pass --resume to continue it or --force to overwrite it")
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other; pass one")


def refuse_existing(path: str | None, force: bool) -> None:
    """A file that exists is overwritten only with ``--force``; a directory is refused."""
    _not_a_directory(path)
    if path and os.path.exists(path) and not force:
        raise UsageError(f"'{path}' already exists; pass --force to overwrite it")


def several_checkpoints(args, command: str, need: str) -> None:
    """At least two ``--ckpt`` and an ``--out`` that is new unless ``--force``."""
    if len(args.ckpt) < 2:
        raise UsageError(f"{command} needs at least {need}, got {len(args.ckpt)}")
    refuse_existing(args.out, args.force)


@contextlib.contextmanager
def one_line_warnings():
    """Show every warning of the command as one line on stderr (``landscape: warning: ...``),
    without the file and source line Python adds."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"landscape: warning: {text} ({category.__name__})", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def plot_if_asked(args) -> int:
    """``--plot``: the figures of ``args.out`` next to it."""
    if args.plot:
        from ..plot import plot_file

        written = plot_file(args.out, os.path.dirname(os.path.abspath(args.out)), force=args.force)
        print(f"figures: {', '.join(written)}")
    return 0


def finite_summary(values, fmt: str = ".4g", *, low: str | None = "min", high: str | None = "max") -> str:
    """``"min 0.12  max 2.3"`` over the finite values of computed ``values``, followed by how
    many of them are not finite (``"(3 of 41 not finite: NaN/Inf)"``): a summary never drops
    NaN silently. ``low``/``high`` name the ends shown (None leaves one out)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    ends = [(word, f) for word, f in ((low, np.min), (high, np.max)) if word is not None]
    text = "  ".join(f"{word} {f(finite):{fmt}}" for word, f in ends) if finite.size else "no finite value"
    if finite.size < v.size:
        text += f" ({v.size - finite.size} of {v.size} not finite: NaN/Inf)"
    return text


def print_surface_summary(res) -> None:
    grid = " x ".join(str(d) for d in next(iter(res.metrics.values())).shape)
    print(
        f"{res.plane.kind} surface, grid {grid}, {res.evaluated} cell(s) computed in {res.seconds:.1f} s "
        f"(engine path {res.path}) -> {res.file}"
    )
    for name, v in res.metrics.items():  # the run finished: every cell is computed
        print(f"  {name:12s} {finite_summary(v)}")
