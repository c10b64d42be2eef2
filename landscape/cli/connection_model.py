"""``landscape connection-model``: a Flow (or Bijection) connection model learnt from several
checkpoints (Anokhin & Yarotsky 2020; :mod:`landscape.connect.flows`)."""

from __future__ import annotations

from . import options
from .common import UsageError, checkpoint_records, open_data, several_checkpoints


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "connection-model",
        help="learn a Flow (or Bijection) connection model from several trained checkpoints",
        description="Fit one normalizing flow (RealNVP or IAF) per layer to the neurons pooled over the "
        "checkpoints (Flow connection of Anokhin & Yarotsky 2020); with --bijection, then train it so that the "
        "paths between pairs of the checkpoints have low loss (Bijection). Use it with `landscape connect "
        "--connection-model FILE`.",
    )
    p.add_argument("--ckpt", action="append", default=[], help="trained checkpoints of one architecture (repeat)")
    p.add_argument("--kind", default="realnvp", choices=["realnvp", "iaf"])
    p.add_argument("--hidden", type=int, default=64, help="width of the flows' conditioner networks")
    p.add_argument("--epochs", type=int, default=200, help="maximum-likelihood epochs")
    p.add_argument("--bijection", action="store_true", help="then train the flows on the path loss (Bijection)")
    p.add_argument("--bijection-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--base",
        default="diagonal",
        choices=["diagonal", "gaussian"],
        help="the flows' base map: per-dimension standardisation (default) or a Gaussian fit with shrinkage "
        "(recommended for convnets and deep networks)",
    )
    p.add_argument("--holdout", type=int, default=0, help="last checkpoints held out for early stopping (default 0)")
    p.add_argument(
        "--align",
        action="store_true",
        help="align the checkpoints' neurons to a template first (saved with the model; `landscape connect` then "
        "matches B to A and ends with OT's swaps); recommended for convnets and deep networks",
    )
    options.add_model(p)
    options.add_data(p)
    options.add_trust(p)
    options.add_output(p, help="write the connection model here (.pt)")
    options.add_progress(p)
    p.set_defaults(run=main)


def main(args) -> int:
    from ..connect.flows import align_pool, fit_bijection, fit_flows_for, flow_groups, save_connection_model
    from ..models import build_model, describe_model
    from ..weights import load_checkpoint

    several_checkpoints(args, "connection-model", "two --ckpt (more is better)")
    if not 0 <= args.holdout <= len(args.ckpt) - 2:
        raise UsageError(
            f"--holdout {args.holdout}: expected 0..{max(0, len(args.ckpt) - 2)} "
            "(at least two checkpoints stay for fitting)"
        )
    model = build_model(args.model, args.model_kwargs)
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    loaded, template = weights, None
    if args.align:
        weights, template = align_pool(model, weights)
    groups = flow_groups(model)
    flows = fit_flows_for(
        model,
        weights,
        groups,
        kind=args.kind,
        hidden=args.hidden,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        base=args.base,
        holdout=args.holdout,
        progress=not args.no_progress,
    )
    history = []
    if args.bijection:
        history = fit_bijection(
            model,
            weights,
            groups,
            flows,
            open_data(args, "train"),
            epochs=args.bijection_epochs,
            lr=args.lr,
            seed=args.seed,
            progress=not args.no_progress,
        )
    meta = {
        "kind": args.kind,
        "bijection": bool(args.bijection),
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": checkpoint_records(loaded),
        "bijection_history": [float(v) for v in history],
        "base": args.base,
        "aligned": bool(args.align),
    }
    save_connection_model(args.out, flows, groups, kind=args.kind, meta=meta, template=template, force=args.force)
    what = "Bijection" if args.bijection else "Flow"
    dims = ", ".join(f"{g.name}: {g.dim(weights[0])}" for g in groups)
    print(
        f"{what} connection model ({args.kind}, {len(groups)} flows; neuron dims {dims}) from {len(weights)} networks"
    )
    if history:
        print(f"path loss per bijection epoch: {', '.join(f'{v:.4f}' for v in history)}")
    print(f"-> {args.out}")
    return 0
