"""``landscape sharpness``: worst-case, adaptive, average-case and random-direction
sharpness of a checkpoint (:mod:`landscape.sharpness`), written to a resumable file."""

from __future__ import annotations

import math

from . import options
from .common import (
    UsageError,
    batching_options,
    check_out,
    data_attrs,
    open_data,
    recorded_config,
    refuse_existing,
)

#: option -> (measure kind, adaptive)
_MEASURE_OPTIONS = (
    ("worst_case", "worst-case", False, "RHO[,RHO...]: worst-case rho-sharpness (SAM), projected gradient ascent"),
    ("adaptive_worst_case", "worst-case", True, "RHO[,...]: adaptive worst case, the ball scaled by |w| + eta (ASAM)"),
    ("keskar", "keskar", True, "EPS[,...]: Keskar et al.'s sharpness, the box eps (|w| + 1), in % of 1 + L(w)"),
    ("gaussian", "gaussian", False, "SIGMA[,...]: mean loss increase under N(0, sigma^2 I) perturbations"),
    ("adaptive_gaussian", "gaussian", True, "SIGMA[,...]: the same with the noise scaled by |w| + eta"),
    ("sphere", "sphere", False, "RHO[,...]: mean loss increase over perturbations uniform on the rho-sphere"),
    ("direction", "direction", False, "STEP[,...]: mean loss increase along filter-normalized random directions"),
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sharpness",
        help="worst-case, adaptive, average-case and random-direction sharpness of a checkpoint",
        description="Loss increases around a checkpoint (of the training loss by default; eval mode, BatchNorm "
        "running statistics never perturbed): worst cases by projected gradient ascent (m-sharpness with --m), "
        "random perturbations evaluated many per pass by the engine. Prints a table; --out writes a resumable "
        "'sharpness' file.",
    )
    p.set_defaults(run=main)
    options.add_model(p)
    options.add_data(p)
    options.add_split(p, "train", "the samples of the loss (default train)")
    p.add_argument("--ckpt", required=True, help="the checkpoint")
    for dest, _, _, text in _MEASURE_OPTIONS:
        p.add_argument("--" + dest.replace("_", "-"), default=None, metavar="VALUES", help=text)
    p.add_argument("--eta", type=float, default=0.0, help="offset of the adaptive scale |w| + eta (default 0)")
    p.add_argument("--norm", default="l2", choices=["l2", "linf"], help="the ball of the worst case (default l2)")
    p.add_argument("--m", type=int, default=None, help="m-sharpness: an ascent per batch of m samples, averaged")
    p.add_argument("--steps", type=int, default=20, help="gradient steps per ascent (default 20)")
    p.add_argument("--step-size", type=float, default=None, help="first ascent step relative to the radius (default 2)")
    p.add_argument("--random-init", action="store_true", help="start each ascent at a random point of the sphere/box")
    p.add_argument("--samples", type=int, default=100, help="perturbations per random measure (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.95, help="level of the confidence intervals")
    p.add_argument("--params", default=None, help="parameter or module names to perturb (default: every parameter)")
    p.add_argument("--loss", default="loss", help="the loss: a metric name (loss = cross-entropy, token_loss, mse)")
    options.add_precision(p, ("fp32", "fp64"))
    options.add_device(p)
    options.add_batching(p)
    options.add_trust(p)
    options.add_output(p, required=False, resume="continue an interrupted --out file")
    options.add_plot(p, "also write the figure of the file next to it")
    options.add_progress(p)


def parse_values(text: str, option: str) -> list[float]:
    """``"0.01,0.05"`` -> ``[0.01, 0.05]``: positive finite numbers, else one usage line."""
    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            v = float(item)
        except ValueError:
            v = float("nan")
        if not (math.isfinite(v) and v > 0):
            raise UsageError(f"--{option} {text!r}: expected positive numbers separated by commas, e.g. 0.01,0.05")
        values.append(v)
    return values


def measures_of(args) -> list:
    """The measures the options ask for, in the order of the options."""
    from ..sharpness import Measure

    out = []
    for dest, kind, adaptive, _ in _MEASURE_OPTIONS:
        text = getattr(args, dest)
        if text is None:
            continue
        for v in parse_values(text, dest.replace("_", "-")):
            out.append(Measure(kind, v, adaptive=adaptive, eta=args.eta, norm=args.norm))
    if not out:
        names = ", ".join("--" + d.replace("_", "-") for d, *_ in _MEASURE_OPTIONS)
        raise UsageError(f"no measure asked for; expected at least one of {names}")
    return out


def _figure_path(out: str) -> str:
    """The figure of ``--plot`` beside the file: ``s.h5`` -> ``s-sharpness.png``."""
    import os

    return os.path.splitext(out)[0] + "-sharpness.png"


def main(args) -> int:
    from ..models import build_model, describe_model
    from ..sharpness import compute_sharpness
    from ..threads import small_model_threads
    from ..weights import load_checkpoint
    from .hessian import hessian_params

    for name in ("steps", "samples", "m", "points_per_pass", "batch_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
    if args.step_size is not None and not (math.isfinite(args.step_size) and args.step_size > 0):
        raise UsageError(f"--step-size {args.step_size}: expected a positive number")
    if not (0 < args.confidence < 1):
        raise UsageError(f"--confidence {args.confidence}: expected a number between 0 and 1")
    if args.eta < 0 or not math.isfinite(args.eta):
        raise UsageError(f"--eta {args.eta}: expected a number >= 0")
    if args.plot and not args.out:
        raise UsageError("--plot draws the --out file; pass --out too")
    measures = measures_of(args)
    check_out(args)
    if args.plot:
        refuse_existing(_figure_path(args.out), args.force)
    model = build_model(args.model, args.model_kwargs)
    params = hessian_params(args, model)
    data = open_data(args, args.split)
    weights = load_checkpoint(args.ckpt, model, trust=args.trust_checkpoint)
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoint": {"path": weights.source, "sha256": weights.sha256},
        "split": args.split,
        **data_attrs(args),
        **recorded_config(args),
    }
    with small_model_threads(model):
        report = compute_sharpness(
            model,
            weights,
            data,
            measures,
            samples=args.samples,
            m=args.m,
            steps=args.steps,
            step_size=args.step_size,
            init="random" if args.random_init else "zero",
            params=params,
            loss=args.loss,
            seed=args.seed,
            confidence=args.confidence,
            precision=args.precision,
            device=args.device,
            **batching_options(args),
            out=args.out,
            resume=args.resume,
            force=args.force,
            attrs=attrs,
            progress=not args.no_progress,
        )
    print(f"{args.ckpt}: {args.loss} {report.loss:.6g} on {args.split}")
    print(report.table())
    where = f" -> {report.file}" if report.file else ""
    print(f"{report.computed} cell(s) computed in {report.seconds:.1f} s{where}")
    if args.plot:
        from ..plot import plot_sharpness

        fig_path = _figure_path(args.out)
        plot_sharpness(args.out).savefig(fig_path, dpi=120)
        print(f"figure: {fig_path}")
    return 0
