"""``landscape wa-ensemble``: ensembles sharing one backbone by weight adjustment, against
the ordinary ensemble (Anokhin & Yarotsky 2020; :func:`landscape.connect.wa_ensemble_curve`)."""

from __future__ import annotations

from . import options
from .common import UsageError, checkpoint_records, open_data, plot_if_asked, recorded_config, several_checkpoints


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "wa-ensemble",
        help="ensembles of networks sharing one backbone by weight adjustment, against the ordinary ensemble",
        description="Move every checkpoint onto the backbone of the first one by weight adjustment (Anokhin & "
        "Yarotsky 2020) and report ensemble accuracy against the number of networks for every head size, with "
        "the parameters and compute saved.",
    )
    p.add_argument("--ckpt", action="append", default=[], help="checkpoints of independently trained networks (repeat)")
    p.add_argument("--head-layers", default="all", help="comma-separated head sizes, or all (default)")
    p.add_argument("--fit-split", default="train", help="split the adjusted layers are fitted on (default train)")
    options.add_split(p, "test", "split the ensembles are evaluated on (default test)")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge term of the weight adjustment (default 0)")
    options.add_plot(p, "also write the figure next to the file")
    options.add_model(p)
    options.add_data(p)
    options.add_trust(p)
    options.add_output(p, help="write the curve to this HDF5 file")
    options.add_progress(p)
    p.set_defaults(run=main)


def head_sizes(text: str, n_layers: int) -> list[int]:
    """``--head-layers``: ``all`` (1..L) or comma-separated sizes in 1..L."""
    if text.strip().lower() == "all":
        return list(range(1, n_layers + 1))
    try:
        heads = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--head-layers {text!r}: expected integers or all") from None
    bad = [n for n in heads if not 1 <= n <= n_layers]
    if bad or not heads:
        raise UsageError(f"--head-layers {bad or heads}: expected values in 1..{n_layers} for this model")
    return heads


def main(args) -> int:
    from ..connect.adjust import wa_layer_count
    from ..connect.ensemble import wa_ensemble_curve
    from ..models import build_model, describe_model
    from ..weights import load_checkpoint

    several_checkpoints(args, "wa-ensemble", "two --ckpt")
    model = build_model(args.model, args.model_kwargs)
    try:
        n_layers = wa_layer_count(model)
    except ValueError as e:
        raise UsageError(f"wa-ensemble works on MLPs and sequential convnets: {str(e).splitlines()[0]}") from None
    heads = head_sizes(args.head_layers, n_layers)
    members = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    curve = wa_ensemble_curve(
        model,
        members,
        open_data(args, args.fit_split),
        open_data(args, args.split),
        head_layers=heads,
        ridge=args.ridge,
        progress=not args.no_progress,
    )
    curve.attrs.update(
        model=describe_model(args.model, args.model_kwargs),
        checkpoints=checkpoint_records(members),
        data=args.data,
        split=args.split,
        fit_split=args.fit_split,
        **recorded_config(args),
    )
    curve.save(args.out, force=args.force)
    print(f"{args.split} accuracy (%) of ensembles of the first m networks; WA(n): n layers in each head")
    print(curve.markdown())
    print(f"-> {args.out}")
    return plot_if_asked(args)
