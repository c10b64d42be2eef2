"""``landscape predict``: a variational network under the prediction schemes of the seeds
(deterministic, stochastic, ensemble; :func:`landscape.variational.predict`)."""

from __future__ import annotations

import os

from . import options
from .common import UsageError, comma_list, num_samples, open_data, recorded_config, refuse_existing


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="evaluate a variational network three ways: deterministic, stochastic, ensemble",
        description="Accuracy, NLL and ECE of a file written by `landscape variational` under the prediction "
        "schemes of the seeds: the means (deterministic), one weight sample (stochastic), and the average of "
        "--samples weight samples evaluated as that many points at once (ensemble).",
    )
    p.add_argument("--ckpt", required=True, help="variational network written by `landscape variational`")
    options.add_data(
        p,
        help="digits | file.npz | ... (see `landscape eval --help`)",
        max_samples_help="use at most this many samples",
        normalize_help="standardise inputs as the network was trained",
    )
    options.add_split(p)
    p.add_argument("--schemes", default="deterministic,stochastic,ensemble")
    p.add_argument("--samples", type=int, default=20, help="weight samples of the ensemble scheme (default 20)")
    p.add_argument("--seed", type=int, default=0)
    options.add_bn(p, choices=("running", "recompute"), split=False)
    options.add_device(p)
    options.add_output(
        p, help="write the table to this HDF5 file", required=False, force="overwrite existing --out / figures"
    )
    p.add_argument("--plot", default=None, metavar="DIR", help="draw the SNR histograms into DIR")
    options.add_progress(p)
    p.set_defaults(run=main)


def main(args) -> int:
    from .. import variational as vi
    from ..models import build_model

    schemes = comma_list(args.schemes)
    bad = [s for s in schemes if s not in vi.SCHEMES]
    if bad or not schemes:
        raise UsageError(f"--schemes {args.schemes!r}: expected a comma-separated subset of {', '.join(vi.SCHEMES)}")
    if args.samples < 1:
        raise UsageError(f"--samples {args.samples}: expected a positive integer")
    refuse_existing(args.out, args.force)
    vnet = vi.load_variational(args.ckpt, lambda spec: build_model(spec["model"], spec.get("model_kwargs")))
    data = open_data(args, args.split)
    bn_data = open_data(args, "train", max_samples=None) if args.bn == "recompute" else None
    res = vi.predict(
        vnet,
        data,
        schemes=schemes,
        samples=args.samples,
        seed=args.seed,
        bn=args.bn,
        bn_data=bn_data,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"{args.split} split, {num_samples(data)} samples; ensemble of {args.samples} weight samples")
    print("| Scheme | acc (%) | NLL | ECE |\n|---|---:|---:|---:|")
    for s in schemes:
        print(f"| {s} | {100 * res[s].acc:.2f} | {res[s].nll:.4f} | {res[s].ece:.4f} |")
    if args.out:
        attrs = {"checkpoint": os.path.abspath(args.ckpt), "data": args.data, "split": args.split}
        attrs.update({"max-samples": args.max_samples, "normalize": args.normalize}, **recorded_config(args))
        written = vi.save_predictions(
            {s: res[s] for s in schemes},
            args.out,
            samples=args.samples,
            seed=args.seed,
            bn=args.bn,
            attrs=attrs,
            force=args.force,
        )
        print(f"-> {written}")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        fig_path = os.path.join(args.plot, os.path.splitext(os.path.basename(args.ckpt))[0] + "-snr.png")
        refuse_existing(fig_path, args.force)
        from ..plot import plot_snr

        plot_snr(vi.snr(vnet)).savefig(fig_path, dpi=120)
        print(f"figure: {fig_path}")
    return 0
