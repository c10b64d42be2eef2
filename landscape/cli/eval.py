"""``landscape eval``: metrics of checkpoints (:func:`landscape.evaluate`)."""

from __future__ import annotations

import os

from . import options
from .common import check_out, checkpoint_records, comma_list, data_attrs, engine_options, open_data, recorded_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="metrics of checkpoints")
    p.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeat for several)")
    options.add_evaluation(p)
    p.set_defaults(run=main)


def main(args) -> int:
    from ..evaluate import evaluate
    from ..models import build_model, describe_model
    from ..pointset import PointSet
    from ..weights import load_checkpoint

    check_out(args)
    model = build_model(args.model, args.model_kwargs)
    data = open_data(args, args.split)
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    points = PointSet.explicit(weights, names=[os.path.basename(p) for p in args.ckpt])
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": checkpoint_records(weights),
        "split": args.split,
        "bn-split": args.bn_split if args.bn != "running" else None,
        **data_attrs(args),
        **recorded_config(args),
    }
    res = evaluate(
        model,
        points,
        data,
        comma_list(args.metrics),
        **engine_options(args, {args.split: data}),
        progress=not args.no_progress,
        out=args.out,
        resume=args.resume,
        force=args.force,
        attrs=attrs,
    )
    names = list(res.metrics)
    width = max(len("checkpoint"), *(len(p) for p in args.ckpt))
    print(f"{'checkpoint':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for k, p in enumerate(args.ckpt):
        print(f"{p:<{width}}  " + "  ".join(f"{res.metrics[n][k]:>10.5g}" for n in names))
    print(
        f"path: {res.path}, {res.evaluated} point(s) in {res.seconds:.2f} s"
        + (f", written to {args.out}" if args.out else "")
    )
    return 0
