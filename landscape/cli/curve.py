"""``landscape curve fit|eval|plane|export|import``: mode connectivity (Garipov et al. 2018).

``fit`` trains a Bezier curve or polygonal chain between two checkpoints
(:func:`landscape.curves.fit_curve`), ``eval`` the metrics along it against the straight
line, ``plane`` the surface on the plane through the endpoints and the middle bend,
``export`` the weights at one ``t`` as a normal checkpoint, and ``import`` writes a curve
checkpoint of dnn-mode-connectivity as our curve file (:func:`landscape.curves.import_dmc_curve`).
"""

from __future__ import annotations

import argparse
import os

from . import options
from .common import (
    UsageError,
    check_out,
    comma_list,
    engine_options,
    finite_summary,
    open_data,
    plot_if_asked,
    print_surface_summary,
    recorded_config,
    refuse_existing,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "curve", help="mode connectivity: fit | eval | plane | export | import a curve between two checkpoints"
    )
    p.set_defaults(run=main)
    csub = p.add_subparsers(dest="curve_command", metavar="ACTION")
    c = csub.add_parser("fit", help="train a Bezier curve or polygonal chain between two checkpoints")
    c.add_argument("--ckpt", action="append", default=[], help="the two endpoint checkpoints (repeat)")
    c.add_argument("--curve", dest="curve_kind", default="bezier", choices=["bezier", "polychain"])
    c.add_argument(
        "--bends",
        type=int,
        default=1,
        help="bends between the endpoints (default 1; dnn-mode-connectivity's --num_bends counts the "
        "endpoints too: its 3 is 1 here)",
    )
    c.add_argument("--init", default=None, help="checkpoint to start the (single) bend from (default: the line)")
    c.add_argument("--epochs", type=int, default=20)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--momentum", type=float, default=0.9)
    c.add_argument("--wd", type=float, default=5e-4, help="weight decay (default 5e-4; where: --wd-on)")
    c.add_argument(
        "--wd-on",
        default="point",
        choices=["point", "bends"],
        help="point: wd/2 ||phi(t)||^2 at the sampled t, as dnn-mode-connectivity (default); "
        "bends: wd/2 ||theta||^2 on the trained control points",
    )
    c.add_argument("--schedule", default="garipov", choices=["garipov", "cosine", "constant"])
    c.add_argument(
        "--lr-update",
        default="epoch",
        choices=["epoch", "batch"],
        help="epoch: epoch e of E runs at the schedule's f(e/E), as dnn-mode-connectivity (default); "
        "batch: every batch, from f(0)",
    )
    for end in ("start", "end"):
        c.add_argument(
            f"--fix-{end}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"keep the {end} checkpoint fixed (default), or train it with the bends (--no-fix-{end})",
        )
    c.add_argument("--t-per-batch", type=int, default=1, help="positions t sampled per minibatch")
    c.add_argument("--fair", action="store_true", help="arc-length weighted ('fair') loss")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--fit-batch-size", type=int, default=128)
    options.add_evaluation(c, split=False, out_required=True)
    for action, text in (
        ("eval", "loss and error along t, against the straight line"),
        ("plane", "surface on the plane through the endpoints and the middle bend"),
    ):
        c = csub.add_parser(action, help=text)
        c.add_argument("--curve", dest="curve_file", required=True, help="curve file written by `landscape curve fit`")
        c.add_argument("--points", type=int, default=61, help="values of t (eval; default 61)")
        c.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
        c.add_argument("--x", default=None, help="MIN:MAX:COUNT (plane; default: around the control points)")
        c.add_argument("--y", default=None, help="MIN:MAX:COUNT (plane)")
        options.add_plot(c)
        options.add_evaluation(c, split=False, out_required=True)
        c.set_defaults(bn="recompute")  # statistics recomputed at every point, as in the paper
    c = csub.add_parser("export", help="weights at one t as a normal checkpoint")
    c.add_argument("--curve", dest="curve_file", required=True)
    options.add_model(c)
    c.add_argument("--t", type=float, required=True)
    options.add_output(c, help="the checkpoint file to write")
    c = csub.add_parser("import", help="a curve checkpoint of dnn-mode-connectivity as a curve file")
    c.add_argument("dmc_file", metavar="DMC.pt", help="dnn-mode-connectivity's curve checkpoint (train.py --curve)")
    options.add_model(c)
    c.add_argument(
        "--curve",
        dest="curve_kind",
        default=None,
        choices=["bezier", "polychain"],
        help="its --curve (Bezier, PolyChain); read from the file's coeff_layer buffers when they are there",
    )
    options.add_trust(c)
    options.add_output(c, help="the curve file to write")


def main(args) -> int:
    from ..models import build_model

    action = args.curve_command
    if action is None:
        raise UsageError("landscape curve needs an action: fit, eval, plane, export or import")
    model = build_model(args.model, args.model_kwargs)
    if action == "export":
        return _export(args, model)
    if action == "import":
        return _import(args, model)
    if action == "fit":
        return _fit(args, model)
    return _profile(args, model)


def _export(args, model) -> int:
    from .. import curves
    from ..weights import save_weights

    curve, _ = curves.load_curve(args.curve_file, model)
    if not 0.0 <= args.t <= 1.0:
        raise UsageError(f"--t {args.t} is outside [0, 1]")
    save_weights(curve.weights_at(args.t).state_dict(), args.out, force=args.force)
    print(f"weights at t={args.t} -> {args.out}")
    return 0


def _import(args, model) -> int:
    from .. import curves

    refuse_existing(args.out, args.force)
    curve, info = curves.load_curve(
        args.dmc_file, model, format="dmc", curve=args.curve_kind, trust=args.trust_checkpoint
    )
    curve.save(args.out, force=args.force, imported_from=info)
    print(
        f"{curve.kind} curve, {curve.n_bends} bend(s) (dnn-mode-connectivity's num_bends {info['num_bends']}) "
        f"-> {args.out}"
    )
    if any(name.endswith("running_mean") for name in curve.layout.names()):
        print(
            "BatchNorm: the file holds one set of running statistics for the whole curve, now in every control "
            "point; `curve eval` and `curve plane` recompute them at every t (--bn recompute), as its eval_curve.py"
        )
    return 0


def _fit(args, model) -> int:
    from .. import curves
    from ..weights import load_checkpoint

    if len(args.ckpt) != 2:
        raise UsageError(f"curve fit needs two --ckpt (the endpoints), got {len(args.ckpt)}")
    check_out(args)
    a, b = (load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt)
    init = "line"
    if args.init:
        if args.bends != 1:
            raise UsageError("--init gives one bend; use it with --bends 1")
        init = [load_checkpoint(args.init, model, trust=args.trust_checkpoint)]
    curve = curves.Curve(a, b, n_bends=args.bends, kind=args.curve_kind, init=init)
    res = curves.fit_curve(
        model,
        curve,
        open_data(args, "train"),
        epochs=args.epochs,
        batch_size=args.fit_batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.wd,
        weight_decay_on=args.wd_on,
        schedule=args.schedule,
        lr_update=args.lr_update,
        t_per_batch=args.t_per_batch,
        fair=args.fair,
        fix_start=args.fix_start,
        fix_end=args.fix_end,
        seed=args.seed,
        device=args.device,
        checkpoint=args.out,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
    )
    last = res.history[-1] if res.history else {}
    print(
        f"{args.curve_kind} curve, {args.bends} bend(s): {len(res.history)} epochs "
        f"(resumed from {res.resumed_from}) in {res.seconds:.1f} s, last epoch loss "
        f"{last.get('loss', float('nan')):.4f} -> {args.out}"
    )
    return 0


def _profile(args, model) -> int:
    """``curve eval`` (metrics along t) and ``curve plane`` (the surface of its plane)."""
    import numpy as np

    from .. import curves
    from ..models import describe_model

    check_out(args)
    curve, _ = curves.load_curve(args.curve_file, model)
    splits = {s: open_data(args, s) for s in comma_list(args.splits)}
    common = dict(
        **engine_options(args, splits),
        out=args.out,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        attrs={
            "model": describe_model(args.model, args.model_kwargs),
            "curve-file": os.path.abspath(args.curve_file),
            **recorded_config(args),
        },
    )
    metrics = comma_list(args.metrics)
    if args.curve_command == "eval":
        prof = curves.evaluate_curve(model, curve, splits, points=args.points, metrics=metrics, **common)
        for r, row in enumerate(("curve", "line")):
            for split, h in prof.barriers.get(row, {}).items():
                if np.isnan(h):  # a NaN loss along the row: no maximum, say how many
                    bad = int(np.isnan(prof.metrics[f"{split}_loss"][r]).sum())
                    print(f"{row:5s} {split:5s} loss barrier undefined: {bad} of {len(prof.t)} losses are NaN")
                    continue
                print(f"{row:5s} {split:5s} loss barrier {h:.4f} nats at t={prof.barriers[row + '-t'][split]:.3f}")
        if "test_acc" in prof.metrics:
            err = 100 * (1 - prof.metrics["test_acc"])
            print(
                f"test error (%): curve {finite_summary(err[0], '.2f', low=None)}, "
                f"line {finite_summary(err[1], '.2f', low=None)}, endpoints {err[0, 0]:.2f} / {err[0, -1]:.2f}"
            )
        print(
            f"length over the {len(prof.t)} points: curve {prof.lengths['curve']:.4g}, "
            f"line {prof.lengths['line']:.4g} (ratio {prof.lengths['curve'] / prof.lengths['line']:.3f})"
        )
        cols = ("start", "end", "min", "max", "avg", "int")
        print(f"{'':22s}" + "".join(f"{c:>10s}" for c in cols) + "   (int: over arc length, as eval_curve.py)")
        for row in ("curve", "line"):
            for name, st in prof.stats.get(row, {}).items():
                if name.endswith(("_loss", "_err")):
                    print(f"{row:5s} {name:16s}" + "".join(f"{st[c]:10.4f}" for c in cols))
        print(f"-> {args.out}")
    else:
        from ..surface import auto_range, compute_surface, parse_range

        plane = curves.curve_plane(curve)
        pts = np.concatenate([plane.anchors, plane.arrays["trajectory"]])
        xs = parse_range(args.x) if args.x else auto_range(pts[:, 0])
        ys = parse_range(args.y) if args.y else auto_range(pts[:, 1])
        res = compute_surface(model, plane, xs, ys, splits=splits, metrics=metrics, **common)
        print_surface_summary(res)
    return plot_if_asked(args)
