"""``landscape connect``: every connection of Anokhin & Yarotsky (2020) between two
checkpoints, with the worst accuracy along each (:func:`landscape.connect.compare_connections`)."""

from __future__ import annotations

import os

from ..connect import registry
from . import options
from .common import UsageError, check_out, checkpoint_records, comma_list, open_data, plot_if_asked, recorded_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "connect",
        help="connect two checkpoints by Linear, Arc, OT and Weight Adjustment; worst accuracy along each",
        description="Build every connection of Anokhin & Yarotsky (2020) between two checkpoints of an MLP or a "
        "convolutional / residual network (WA: MLPs), evaluate each path at --points values of t and print the "
        "table of worst train/test accuracy along it, next to the endpoints and any trained curves (--curve). "
        "The report goes to --out (HDF5).",
    )
    p.add_argument("--ckpt", action="append", default=[], help="the two checkpoints A and B (repeat)")
    p.add_argument(
        "--methods",
        default="paper",
        help=f"comma-separated registered connection methods: {', '.join(registry.names())}; or paper (the six "
        "of Anokhin & Yarotsky 2020, the default) or all",
    )
    p.add_argument("--points", type=int, default=21, help="values of t per path (OT: stage 1; WA: per step)")
    p.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
    p.add_argument("--wa-split", default="train", help="data split the weight adjustment fits on (default train)")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge term of the weight adjustment (default 0)")
    p.add_argument(
        "--wa-form",
        choices=("paper", "bias"),
        default="paper",
        help="weight adjustment: paper = Anokhin & Yarotsky's (no bias column, A's output kept, two phases with one "
        "hidden layer; default), bias = a bias column fitted too (residual networks: bias only)",
    )
    p.add_argument(
        "--ot-neuron",
        choices=("blc", "bl"),
        default="blc",
        help="what OT matches: blc = the paper's neuron (bias, incoming and outgoing weights; default), "
        "bl = bias and incoming weights only",
    )
    options.add_bn(
        p,
        choices=("auto", *options.BN_MODES),
        default="auto",
        help="BatchNorm statistics along the paths (default auto: recompute when the model has BatchNorm)",
    )
    p.add_argument(
        "--curve",
        action="append",
        default=[],
        metavar="[LABEL=]FILE",
        help="a curve file from `landscape curve fit` between the same checkpoints, added as a row (repeat)",
    )
    p.add_argument(
        "--connection-model",
        action="append",
        default=[],
        metavar="[LABEL=]FILE",
        help="a Flow/Bijection model from `landscape connection-model`, added as a row (repeat)",
    )
    options.add_plot(p)
    options.add_model(p)
    options.add_data(p)
    options.add_precision(p)
    options.add_device(p)
    options.add_trust(p)
    options.add_output(p, help="write the report to this HDF5 file", resume="continue an interrupted --out file")
    options.add_progress(p)
    p.set_defaults(run=main)


def labelled_files(items: list[str]) -> list[tuple[str | None, str]]:
    """``[LABEL=]FILE`` values of ``--curve`` and ``--connection-model``."""
    out = []
    for item in items:
        label, sep, path = item.rpartition("=")
        if not sep or os.path.exists(item):
            label, path = "", item
        out.append((label or None, path))
    return out


def _methods(args) -> list[str]:
    """``--methods``: registered names (:mod:`landscape.connect.registry`), ``paper`` (the
    paper's six, :data:`~landscape.connect.registry.PAPER_METHODS`) or ``all`` of them."""
    known = registry.names()
    names = [m.lower() for m in comma_list(args.methods)]
    methods = {"all": list(known), "paper": list(registry.PAPER_METHODS)}.get(",".join(names), names)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise UsageError(
            f"--methods {args.methods!r}: unknown {unknown}; expected some of {', '.join(known)}, paper or all"
        )
    return methods


def _curves(args, model) -> dict:
    """The ``--curve`` rows by label."""
    from .. import curves as curvelib

    curves = {}
    for label, path in labelled_files(args.curve):
        curve, _ = curvelib.load_curve(path, model)
        label = label or f"{'Bezier' if curve.kind == 'bezier' else 'Polychain'} ({curve.n_bends + 2})"
        if label in curves:
            raise UsageError(f"two --curve rows are labelled {label!r}; name them LABEL=FILE")
        curves[label] = curve
    return curves


def _connection_models(args) -> dict:
    """The ``--connection-model`` rows by label: (flows, groups, template of an aligned pool)."""
    from ..connect.flows import load_connection_model

    flows = {}
    for label, path in labelled_files(args.connection_model):
        nu, groups, meta = load_connection_model(path)
        label = label or f"{'Bijection' if meta.get('bijection') else 'Flow'} ({meta.get('kind', 'flow')})"
        if label in flows:
            raise UsageError(f"two --connection-model rows are labelled {label!r}; name them LABEL=FILE")
        flows[label] = (nu, groups, meta.get("template"))
    return flows


def main(args) -> int:
    from ..bn import auto_mode
    from ..connect import compare_connections
    from ..models import build_model, describe_model
    from ..weights import load_checkpoint

    if len(args.ckpt) != 2:
        raise UsageError(f"connect needs two --ckpt (A and B), got {len(args.ckpt)}")
    check_out(args)
    methods = _methods(args)
    if args.points < 2:
        raise UsageError(f"--points should be at least 2, got {args.points}")
    model = build_model(args.model, args.model_kwargs)
    A, B = (load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt)
    splits = {s: open_data(args, s) for s in comma_list(args.splits)}
    if not splits:
        raise UsageError("--splits names no split")
    wa = splits.get(args.wa_split) or open_data(args, args.wa_split)
    bn = auto_mode(model) if args.bn == "auto" else args.bn
    bn_data = (splits.get(args.bn_split) or open_data(args, args.bn_split)) if bn != "running" else None
    curves = _curves(args, model)
    flows = _connection_models(args)
    rep = compare_connections(
        model,
        A,
        B,
        splits,
        methods=methods,
        connection_models=flows,
        points=args.points,
        wa_data=wa,
        curves=curves,
        ridge=args.ridge,
        wa_form=args.wa_form,
        neuron=args.ot_neuron,
        bn=bn,
        bn_data=bn_data,
        device=args.device,
        precision=args.precision,
        out=args.out,
        force=args.force,
        resume=args.resume,
        progress=not args.no_progress,
        attrs={
            "model": describe_model(args.model, args.model_kwargs),
            "checkpoints": checkpoint_records((A, B)),
            "data": args.data,
            "curve-files": [os.path.abspath(p) for _, p in labelled_files(args.curve)],
            **recorded_config(args),
        },
    )
    print(rep.markdown())
    print(f"{args.points} points per path -> {args.out}")
    return plot_if_asked(args)
