"""The ``landscape`` command. Argument parsing lives here and only here.

Subcommands: ``info`` (summary of a result file), ``eval`` (metrics of checkpoints),
``demo`` (the main job on bundled data). Errors print one line and exit with code 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

__all__ = ["main", "build_parser"]


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


def _add_common_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="built-in name (see --list-models) or package.module:factory")
    p.add_argument("--model-kwargs", default=None, help="JSON object of keyword arguments for the factory")
    p.add_argument("--data", required=True, help="digits | synthetic:cifar10 | file.npz | file.pt | cifar10:DIR | image folder")
    p.add_argument("--split", default="test", help="data split to evaluate on (train/test/all), default test")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many samples")
    p.add_argument("--metrics", default="loss,acc", help="comma-separated: loss, acc, err, mse (default loss,acc)")
    p.add_argument("--bn", default="running", choices=["running", "recompute", "recompute-exact"],
                   help="BatchNorm statistics (default running)")
    p.add_argument("--bn-split", default="train", help="split used to recompute BatchNorm statistics (default train)")
    p.add_argument("--precision", default="fp32", choices=["fp64", "fp32", "tf32", "bf16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--points-per-pass", type=int, default=None)
    p.add_argument("--max-memory", default=None, help="memory budget, e.g. 4G (default: a safe fraction of free memory)")
    p.add_argument("--path", default="auto", choices=["auto", "fused", "vmap", "loop"], help="execution path")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints (runs code from the file)")
    p.add_argument("--out", default=None, help="write results to this HDF5 file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --out file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss surfaces, mode connectivity and ensembles of saved checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="summary of a result file")
    p.add_argument("file")

    p = sub.add_parser("eval", help="metrics of checkpoints")
    p.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeat for several)")
    _add_common_eval(p)

    p = sub.add_parser("demo", help="the main job on bundled data (digits, CPU, under 2 minutes)")
    p.add_argument("--out", default="landscape-demo", help="output folder (default ./landscape-demo)")
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier demo in that folder")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("models", help="list the built-in models")
    return parser


def _cmd_info(args) -> int:
    from . import io

    print(io.describe(args.file))
    return 0


def _load_model_and_data(args):
    from . import data as datalib
    from .models import build_model

    model = build_model(args.model, args.model_kwargs)
    data = datalib.load_data(args.data, args.split, max_samples=args.max_samples)
    bn_data = None
    if args.bn != "running":
        bn_data = datalib.load_data(args.data, args.bn_split, max_samples=args.max_samples)
    return model, data, bn_data


def _check_out(args) -> None:
    if args.out and os.path.exists(args.out) and not (args.resume or args.force):
        raise UsageError(f"'{args.out}' already exists; pass --resume to continue it or --force to overwrite it")
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other; pass one")


def _cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .models import describe_model
    from .pointset import PointSet
    from .weights import load_checkpoint

    _check_out(args)
    model, data, bn_data = _load_model_and_data(args)
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    points = PointSet.explicit(weights, names=[os.path.basename(p) for p in args.ckpt])
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in weights],
        "split": args.split,
        "bn-split": args.bn_split if args.bn != "running" else None,
    }
    res = evaluate(
        model, points, data, [m.strip() for m in args.metrics.split(",") if m.strip()],
        bn=args.bn, bn_data=bn_data, precision=args.precision, device=args.device,
        batch_size=args.batch_size, points_per_pass=args.points_per_pass,
        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
        path=args.path, progress=not args.no_progress, out=args.out, resume=args.resume,
        force=args.force, attrs=attrs,
    )
    names = list(res.metrics)
    width = max(len("checkpoint"), *(len(p) for p in args.ckpt))
    print(f"{'checkpoint':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for k, p in enumerate(args.ckpt):
        print(f"{p:<{width}}  " + "  ".join(f"{res.metrics[n][k]:>10.5g}" for n in names))
    print(f"path: {res.path}, {res.evaluated} point(s) in {res.seconds:.2f} s"
          + (f", written to {args.out}" if args.out else ""))
    return 0


def _cmd_models(args) -> int:
    from .models import list_models

    print("\n".join(list_models()))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, force=args.force, progress=not args.no_progress)
    return 0


_COMMANDS = {"info": _cmd_info, "eval": _cmd_eval, "demo": _cmd_demo, "models": _cmd_models}


def _user_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .evaluate import MemoryBudgetError
    from .io import ResultExistsError, ResultFileError
    from .models import ModelSpecError
    from .weights import CheckpointError

    return (UsageError, DataError, MemoryBudgetError, ResultExistsError, ResultFileError,
            ModelSpecError, CheckpointError, FileNotFoundError, FileExistsError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("landscape: interrupted; finished chunks are saved, rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI turns every error into one line
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, _user_errors()):
            msg = f"{type(e).__name__}: {msg} (run with --debug for the traceback)"
        print(f"landscape: error: {msg}", file=sys.stderr)
        return 2


def console_main() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
