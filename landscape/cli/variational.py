"""``landscape variational``: train a variational network by the ELBO and save it
(:func:`landscape.variational.convert`, :func:`~landscape.variational.fit_elbo`)."""

from __future__ import annotations

import os

from . import options
from .common import UsageError, comma_list, num_samples, open_data, refuse_existing


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "variational",
        help="train a variational network (variational dropout, variance layers) by the ELBO and save it",
        description="Make the model's Linear/Conv2d layers variational (--parameterization), initialise the means "
        "from --ckpt or the model's initialisation, maximise the ELBO on the train split and save a file that "
        "`landscape predict` reads.",
    )
    options.add_model(p)
    options.add_data(p)
    p.add_argument("--ckpt", default=None, help="checkpoint whose weights initialise the means (default: fresh)")
    options.add_trust(p)
    p.add_argument(
        "--parameterization",
        default="weight",
        choices=["layer", "neuron", "weight", "additive", "variance"],
        help="q(w): layer/neuron/weight-wise alpha, additive sigma, or variance layers with zero mean",
    )
    p.add_argument("--alpha", type=float, default=0.01, help="initial alpha (fixed with --fixed-alpha)")
    p.add_argument("--fixed-alpha", action="store_true", help="keep alpha fixed (layer-wise: Gaussian dropout)")
    p.add_argument(
        "--plain-layers",
        default="",
        help="comma-separated module names kept deterministic, e.g. the output layer of a variance network",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    p.add_argument("--fit-batch-size", type=int, default=128)
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of the KL term (default 1, the ELBO)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="epochs of linear KL warm-up")
    p.add_argument("--seed", type=int, default=0)
    options.add_output(p, help="the variational network (.pt)")
    options.add_plot(p, "also draw the SNR histograms next to --out")
    options.add_progress(p)
    p.set_defaults(run=main)


def _plain_layers(args, model) -> list[str]:
    """``--plain-layers``: names of Linear/Conv2d modules of ``model`` kept deterministic."""
    from torch import nn

    plain = comma_list(args.plain_layers)
    layers = dict(model.named_modules())
    bad = [n for n in plain if not isinstance(layers.get(n), (nn.Linear, nn.Conv2d))]
    if bad:
        choices = [n for n, m in layers.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise UsageError(f"--plain-layers {','.join(bad)}: not Linear/Conv2d modules; this model has {choices}")
    return plain


def main(args) -> int:
    from .. import variational as vi
    from ..models import build_model
    from ..threads import small_model_threads
    from ..weights import load_checkpoint

    refuse_existing(args.out, args.force)
    for name, v in (("--epochs", args.epochs), ("--fit-batch-size", args.fit_batch_size)):
        if v < 1:
            raise UsageError(f"{name} {v}: expected a positive integer")
    model = build_model(args.model, args.model_kwargs)
    if args.ckpt:
        model.load_state_dict(load_checkpoint(args.ckpt, model, trust=args.trust_checkpoint).state_dict())
    plain = _plain_layers(args, model)
    vnet = vi.convert(
        model, args.parameterization, alpha=args.alpha, train_alpha=not args.fixed_alpha, layers=dict.fromkeys(plain)
    )
    train = open_data(args, "train")
    with small_model_threads(vnet):
        hist = vi.fit_elbo(
            vnet,
            train,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.fit_batch_size,
            kl_weight=args.kl_weight,
            warmup_epochs=args.warmup_epochs,
            seed=args.seed,
            progress=not args.no_progress,
        )
    spec = {
        "model": args.model,
        "model_kwargs": args.model_kwargs,
        "data": args.data,
        "normalize": bool(args.normalize),
        "alpha": args.alpha,
        "epochs": args.epochs,
        "lr": args.lr,
        "kl_weight": args.kl_weight,
        "seed": args.seed,
        "init": os.path.abspath(args.ckpt) if args.ckpt else None,
    }
    vi.save_variational(vnet, args.out, spec=spec, force=args.force)
    print(
        f"{args.parameterization} network, {args.epochs} epochs in {hist['seconds']:.1f} s: train NLL "
        f"{hist['nll'][-1]:.4f}, KL/N {hist['kl'][-1] / num_samples(train):.4f}, train acc (one sample per batch) "
        f"{100 * hist['acc'][-1]:.2f}% -> {args.out}"
    )
    if args.plot:
        from ..plot import plot_snr

        fig_path = os.path.splitext(args.out)[0] + "-snr.png"
        plot_snr(vi.snr(vnet)).savefig(fig_path, dpi=120)
        print(f"figure: {fig_path}")
    return 0
