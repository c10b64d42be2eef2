"""``landscape hessian eig|map|trace|density``: curvature of the training loss
(:mod:`landscape.hessian`).

``eig`` gives lambda_max and lambda_min (Lanczos) or the top-k eigenvalues (power
iteration) per checkpoint, ``map`` the eigenvalue maps of every cell of a surface file
(resumable, sharded over torchrun ranks), ``trace`` Hutchinson's estimate and ``density``
the spectral density by stochastic Lanczos quadrature.
"""

from __future__ import annotations

import os

from . import options
from .common import UsageError, data_attrs, finite_summary, open_data, recorded_config, refuse_existing

_ACTIONS = (
    ("eig", "lambda_max and lambda_min (Lanczos), or the top-k eigenvalues (power iteration), per checkpoint"),
    ("map", "eigenvalue maps over every cell of a line or plane file"),
    ("trace", "Hutchinson's estimate of the trace, with its standard error"),
    ("density", "spectral density by stochastic Lanczos quadrature, with a figure"),
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "hessian",
        help="Hessian of the loss: extreme eigenvalues, eigenvalue maps of a surface, trace, spectral density",
        description="Curvature of the mean training loss at checkpoints (eig, trace, density) or at every cell of "
        "a line/plane file (map: lambda_max, lambda_min and |lambda_min/lambda_max| written into the same file, "
        "resumable and sharded over torchrun ranks). Hessian-vector products are exact; BatchNorm is in eval mode "
        "with each point's running statistics.",
    )
    p.set_defaults(run=main)
    hsub = p.add_subparsers(dest="hessian_action", metavar="ACTION", required=True)
    for action, text in _ACTIONS:
        c = hsub.add_parser(action, help=text, description=text)
        _add_action_options(c, action)


def _add_action_options(c, action: str) -> None:
    options.add_model(c)
    options.add_data(c)
    options.add_split(c, "train", "the samples of the loss (default train)")
    c.add_argument(
        "--params",
        default=None,
        help="parameter or module names (comma-separated); default: every parameter with requires_grad",
    )
    c.add_argument(
        "--loss",
        default="loss",
        help="the loss whose Hessian is taken: a metric name (loss = cross-entropy, token_loss for causal LMs, mse)",
    )
    c.add_argument("--method", default="auto", choices=["auto", "forward-over-reverse", "double-backward"])
    options.add_precision(c, ("fp32", "fp64"))
    options.add_device(c)
    c.add_argument("--batch-size", type=int, default=None, help="samples per HVP pass")
    c.add_argument("--seed", type=int, default=0)
    options.add_trust(c)
    options.add_progress(c)
    if action == "map":
        c.add_argument("surface", help="a line or plane file (landscape surface --out)")
        c.add_argument("--points-per-pass", type=int, default=8, help="cells per batched Lanczos run")
        options.add_force(c, "recompute maps made with other settings")
        options.add_plot(c, "heatmaps of the maps next to the file")
    else:
        c.add_argument("--ckpt", action="append", required=True, help="checkpoint (repeat for several)")
    if action in ("eig", "map"):
        c.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance (default 1e-3)")
        c.add_argument("--max-iter", type=int, default=50, help="Lanczos steps at most (default 50)")
        c.add_argument(
            "--relative-to",
            default="spectrum",
            choices=["spectrum", "eigenvalue"],
            help="--tol relative to the spectral radius (default) or to each eigenvalue",
        )
    if action == "eig":
        c.add_argument("--top", type=int, default=None, help="the top-k eigenvalues by power iteration instead")
    if action == "trace":
        c.add_argument("--samples", type=int, default=100, help="Rademacher vectors (default 100)")
    if action == "density":
        c.add_argument("--probes", type=int, default=10)
        c.add_argument("--steps", type=int, default=30, help="Lanczos steps per probe")
        options.add_output(
            c, help="the figure (.png/.pdf); the nodes and weights go beside it as a .h5 file", force=None
        )


def hessian_params(args, model):
    """``--params``: parameter names, or module names standing for their parameters."""
    if args.params is None:
        return None
    from ..hessian import layer_selections

    groups = layer_selections(model)
    names = [n for n, _ in model.named_parameters()]
    out = []
    for item in (t.strip() for t in args.params.split(",")):
        if not item:
            continue
        if item in names:
            out.append(item)
        elif item in groups:
            out += groups[item]
        else:
            raise UsageError(
                f"--params {item!r} is neither a parameter nor a module with parameters; modules: {list(groups)}"
            )
    if not out:
        raise UsageError("--params selects nothing")
    return list(dict.fromkeys(out))


class _CountedOperator:
    """An operator that advances a progress bar by the Hessian-vector products it computes."""

    def __init__(self, op, bar):
        self.op, self.bar = op, bar
        self.n, self.device, self.dtype, self.selection = op.n, op.device, op.dtype, op.selection

    def __call__(self, v):
        out = self.op(v)
        self.bar.update(1 if v.dim() == 1 else v.shape[0])
        return out


def main(args) -> int:
    from ..models import build_model

    for name in ("max_iter", "top", "samples", "probes", "steps", "points_per_pass"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
    model = build_model(args.model, args.model_kwargs)
    params = hessian_params(args, model)
    data = open_data(args, args.split)
    opts = dict(params=params, batch_size=args.batch_size, dtype=args.precision, method=args.method, loss=args.loss)
    if args.hessian_action == "map":
        return _map(args, model, data, opts)
    return _at_checkpoints(args, model, data, opts)


def _map(args, model, data, opts: dict) -> int:
    """``hessian map``: the eigenvalue maps of a surface file, written into it."""
    from .. import distributed
    from .. import hessian as H

    spec = {"data": args.data, "split": args.split, "max-samples": args.max_samples, "normalize": args.normalize}
    device = distributed.init_from_env(args.device)
    try:
        res = H.eigen_map(
            model,
            args.surface,
            data,
            tol=args.tol,
            max_iter=args.max_iter,
            relative_to=args.relative_to,
            seed=args.seed,
            points_per_pass=args.points_per_pass,
            device=device,
            data_spec=spec,
            force=args.force,
            progress=not args.no_progress,
            **opts,
        )
        rank, _ = distributed.rank_and_world()
        if rank == 0:
            lmax, lmin, ratio = res["lambda_max"], res["lambda_min"], res["eig_ratio"]
            print(
                f"{args.surface}: {res.computed} cell(s) computed in {res.seconds:.1f} s; lambda_max "
                f"{finite_summary(lmax)}, lambda_min {finite_summary(lmin)}, "
                f"|lambda_min/lambda_max| {finite_summary(ratio, '.3g')}"
            )
            if args.plot:
                from ..plot import plot_hessian_maps

                fig_path = os.path.splitext(args.surface)[0] + "-hessian.png"
                plot_hessian_maps(args.surface).savefig(fig_path, dpi=120)
                print(f"figure: {fig_path}")
    finally:
        distributed.shutdown()
    return 0


def _at_checkpoints(args, model, data, opts: dict) -> int:
    """``hessian eig|trace|density``: one line per checkpoint."""
    from .. import hessian as H
    from ..threads import small_model_threads
    from ..weights import load_checkpoint

    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    if args.hessian_action == "density" and len(weights) != 1:
        raise UsageError(f"hessian density takes one --ckpt, got {len(weights)}")
    if args.hessian_action == "density":
        if _density_file(args.out) == args.out:
            raise UsageError(f"--out {args.out!r} is the figure: pass a .png or .pdf (the .h5 file goes beside it)")
        refuse_existing(args.out, args.force)
        refuse_existing(_density_file(args.out), args.force)
    with small_model_threads(model):
        for path, w in zip(args.ckpt, weights):
            op = H.HVP(model, w, data, device=args.device, **opts)
            bar = None
            if not args.no_progress:
                from tqdm.auto import tqdm

                bar = tqdm(desc=f"HVPs {os.path.basename(path)}", unit="HVP", leave=False)
                op = _CountedOperator(op, bar)
            line = _one_checkpoint(args, path, op, w)
            if bar is not None:
                bar.close()
            sel = op.selection
            print(f"{line} [{args.loss}; {sel['count']} parameter tensors, {sel['numel']} values, by {sel['rule']}]")
    return 0


def _density_file(figure: str) -> str:
    """The result file of ``hessian density`` beside its figure: ``d.png`` -> ``d.h5``."""
    return os.path.splitext(figure)[0] + ".h5"


def _one_checkpoint(args, path: str, op, weights) -> str:
    """The result line of ``eig``, ``trace`` or ``density`` at one checkpoint."""
    import numpy as np

    from .. import hessian as H
    from ..models import describe_model
    from ..plot import plot_density

    if args.hessian_action == "eig" and args.top:
        r = H.power_iteration(op, k=args.top, tol=args.tol, max_iter=max(args.max_iter, 100), seed=args.seed)
        vals = ", ".join(f"{v:.6g}" for v in r.eigenvalues)
        return f"{path}: top-{args.top} eigenvalues {vals} (residuals {np.max(r.residuals):.2g}, {r.hvps} HVPs)"
    if args.hessian_action == "eig":
        r = H.lanczos(op, tol=args.tol, max_iter=args.max_iter, relative_to=args.relative_to, seed=args.seed)
        return (
            f"{path}: lambda_max {r.lambda_max:.6g}, lambda_min {r.lambda_min:.6g}, |lambda_min/lambda_max| "
            f"{r.ratio:.4g} (residuals {r.residuals[0]:.2g}, {r.residuals[1]:.2g}; {r.hvps} HVPs"
            f"{'' if r.converged else '; NOT converged: raise --max-iter'})"
        )
    if args.hessian_action == "trace":
        t = H.hutchinson(op, samples=args.samples, seed=args.seed)
        return f"{path}: trace {t.estimate:.6g} ± {t.stderr:.2g} (standard error, {len(t.samples)} Rademacher vectors)"
    d = H.slq(op, probes=args.probes, steps=args.steps, seed=args.seed)
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoint": {"path": weights.source, "sha256": weights.sha256},
        "data": args.data,
        "split": args.split,
        "max-samples": args.max_samples,
        "normalize": args.normalize,
        "loss": args.loss,
        "hvp-method": args.method,
        "precision": args.precision,
        "batch-size": args.batch_size,
        "probes": args.probes,
        "steps": args.steps,
        "seed": args.seed,
        **data_attrs(args),
        **recorded_config(args),
    }
    h5 = d.save(_density_file(args.out), attrs=attrs, force=args.force)
    plot_density(d).savefig(args.out, dpi=120)
    return (
        f"{path}: density from {d.probes} probes x {args.steps} steps ({d.hvps} HVPs); trace estimate "
        f"{d.moment(1) * d.n:.6g}; -> {args.out}, {h5}"
    )
