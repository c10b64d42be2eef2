"""Connections of convolutional networks and WA-ensembles on scikit-learn's digits.

Part two of the Anokhin & Yarotsky (ICML 2020) reproduction (``tools/repro_connections.py``
is part one, dense networks):

1. **Convnet table.** ``small_cnn`` (Conv 3x3 (8) - BN - ReLU - Conv 3x3 (16) - BN - ReLU -
   MaxPool - Linear) on ``digits:image``. For each seed pair: Linear, Arc, OT (channels
   matched through the traced channel groups), Linear/Arc/OT + WA (transitional networks,
   the pseudo-inverse over patches), Flow (IAF) and Bijection (RealNVP) connection models
   learned from ``--pool`` *other* networks (a global connection model applied to a new
   pair; by default on the pool aligned to a template, from a Gaussian base, with the
   path between ``A`` and ``B`` matched to ``A`` followed by OT's swaps), a trained Bezier
   curve with 3 points, and the endpoints; BatchNorm statistics recomputed at every point.
2. **WA-ensembles.** Ensembles of ``--members`` networks sharing the first network's
   backbone (MLPs 64-128-128-10 and the same ``small_cnn``): test accuracy against the
   number of networks for every head size (all layers = the ordinary ensemble), with the
   parameters and compute kept.

Prints the tables, says where they agree with the paper, and writes ``results.md`` /
``results.json`` and the per-pair reports to ``--out-dir``. Checkpoints, curves and
connection models are cached there (``--force`` starts over).

Usage::

    python3 tools/repro_conv_connections.py              # 3 seed pairs, pool of 4, 5 members
    python3 tools/repro_conv_connections.py --quick      # smoke run
    python3 tools/repro_conv_connections.py --methods ot,ot+wa --no-curves --no-flows --no-ensembles

The last form reruns part of the convnet table (rows a changed default acts on) without
training curves, pool networks, connection models or ensemble members.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime

import numpy as np
import torch

import landscape as ls
from landscape.connect import METHODS, compare_connections, wa_ensemble_curve
from landscape.connect.flows import (
    align_pool,
    fit_bijection,
    fit_flows_for,
    flow_groups,
    load_connection_model,
    save_connection_model,
)
from landscape.connect.registry import row_label
from landscape.demo import train_classifier

CNN = ("small_cnn", {"width": 8, "batch_norm": True})
MLP = ("mlp", {"in_features": 64, "widths": [128, 128], "num_classes": 10})
TRAIN = {"epochs": 20, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64}
FIT = {"epochs": 60, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64, "t_per_batch": 1}
ROWS = [
    "linear",
    "arc",
    "linear+wa",
    "arc+wa",
    "ot",
    "ot+wa",
    "Flow (IAF)",
    "Bijection (RealNVP)",
    "Bezier (3)",
    "End points",
]


def row_name(row: str, args) -> str:
    """The table's label of ``row`` (a method, a curve, a connection model or an OT stage)."""
    if row.startswith("ot stage"):
        return row.replace("ot", row_label("ot", wa_form=args.wa_form, neuron=args.ot_neuron), 1)
    return row_label(row, wa_form=args.wa_form, neuron=args.ot_neuron)


def trained(out_dir: str, spec, data, seed: int, cfg: dict, force: bool) -> ls.Weights:
    name, kwargs = spec
    path = os.path.join(out_dir, f"{name}-seed{seed}.pt")
    torch.manual_seed(seed)  # before the model is built: its initial weights come from the seed
    model = ls.build_model(name, kwargs)
    if not os.path.exists(path) or force:
        train_classifier(model, data, seed=seed, **cfg)
        ls.save_weights(model.state_dict(), path, force=True)
    return ls.load_checkpoint(path, model)


def connection_models(args, model, pool: list[ls.Weights], train, log) -> dict:
    """Flow (IAF, maximum likelihood) and Bijection (RealNVP, then the path loss) from the pool.

    By default the pool is first aligned to a template (``align_pool``), the flows start from
    the Gaussian base (mean and Ledoit-Wolf correlation of the pooled neurons) and stop
    early on the neurons of the last pool network (``--flow-holdout``); the paths then run
    between ``A`` and ``B`` matched to ``A`` and end with OT's swaps (``aligned_flow_path``).
    ``--flow-base diagonal --no-align --flow-holdout 0`` is the recipe of the first results.
    """
    groups = flow_groups(model)
    template = None
    if args.align:
        pool, template = align_pool(model, pool, neuron=args.ot_neuron)
    recipe = (
        f"{args.flow_base}{'-aligned' if args.align else ''}{f'-h{args.flow_holdout}' if args.flow_holdout else ''}"
    )
    if args.align and args.ot_neuron == "blc":  # models cached before (b, l, c) was the default were aligned on (b, l)
        recipe += "-blc"
    out = {}
    for label, kind, bijection in (("Flow (IAF)", "iaf", False), ("Bijection (RealNVP)", "realnvp", True)):
        path = os.path.join(args.out_dir, f"{kind}{'-bijection' if bijection else ''}-{recipe}.pt")
        if os.path.exists(path) and not args.force:
            flows, groups, meta = load_connection_model(path)
            template = meta.get("template")
        else:
            t0 = time.perf_counter()
            flows = fit_flows_for(
                model,
                pool,
                groups,
                kind=kind,
                epochs=args.flow_epochs,
                seed=0,
                base=args.flow_base,
                holdout=args.flow_holdout,
            )
            hist = []
            if bijection:
                hist = fit_bijection(model, pool, groups, flows, train, epochs=args.bijection_epochs, seed=0)
            meta = {"bijection": bijection, "recipe": recipe}
            save_connection_model(path, flows, groups, kind=kind, meta=meta, template=template, force=True)
            log(f"  {label}: fitted in {time.perf_counter() - t0:.0f}s" + (f", path loss {hist}" if hist else ""))
        out[label] = (flows, groups, template)
    return out


def conv_table(args, log) -> tuple[list[dict], str]:
    train, test = ls.load_data("digits:image", "train"), ls.load_data("digits:image", "test")
    splits = {"train": train, "test": test}
    model = ls.build_model(*CNN)
    tr = dict(TRAIN, epochs=3) if args.quick else TRAIN
    fit = dict(FIT, epochs=3) if args.quick else FIT
    n_pairs = 1 if args.quick else args.seeds
    models = {}
    if args.flows:
        pool = [trained(args.out_dir, CNN, train, 100 + s, tr, args.force) for s in range(args.pool)]
        models = connection_models(args, model, pool, train, log)
    records = []
    for pair in range(args.first_pair, args.first_pair + n_pairs):
        A, B = (trained(args.out_dir, CNN, train, s, tr, args.force) for s in (2 * pair + 1, 2 * pair + 2))
        curves = {}
        if args.curves:
            curve = ls.curves.Curve(A, B, n_bends=1, kind="bezier")
            ls.curves.fit_curve(
                model,
                curve,
                train,
                seed=pair,
                checkpoint=os.path.join(args.out_dir, f"cnn-bezier3-pair{pair}.pt"),
                resume=not args.force,
                force=args.force,
                progress=False,
                **fit,
            )
            curves["Bezier (3)"] = curve
        t0 = time.perf_counter()
        rep = compare_connections(
            model,
            A,
            B,
            splits,
            methods=args.methods,
            connection_models=models,
            curves=curves,
            points=args.points,
            wa_form=args.wa_form,
            neuron=args.ot_neuron,
            bn="recompute",
            bn_data=train,
            out=os.path.join(args.out_dir, f"cnn-pair{pair}.h5"),
            resume=not args.force,
            force=args.force,
        )
        rec = {m: {s: rep.worst_acc(m, s) for s in rep.splits} for m in rep.computed}
        rec["End points"] = {s: rep.endpoint_acc(s) for s in rep.splits}
        if "ot" in rep.computed:
            rec["ot stage 1"] = {s: rep.worst_acc("ot", s, 1) for s in rep.splits}
            rec["ot stage 2"] = {s: rep.worst_acc("ot", s, 2) for s in rep.splits}
        if args.align and models:
            for label in ("Flow (IAF)", "Bijection (RealNVP)"):
                rec[f"{label} stage 1"] = {s: rep.worst_acc(label, s, 1) for s in rep.splits}
        records.append(rec)
        log(
            f"  [cnn pair {pair}] {time.perf_counter() - t0:.0f}s: "
            + ", ".join(f"{row_name(m, args)} {100 * v['test']:.2f}" for m, v in rec.items())
        )
    lines = ["| Method | train | test |", "|---|---:|---:|"]
    flow_rows = [ROWS[6], f"{ROWS[6]} stage 1", ROWS[7], f"{ROWS[7]} stage 1"] if args.align else ROWS[6:8]
    for row in [*ROWS[:5], "ot stage 1", "ot stage 2", ROWS[5], *flow_rows, *ROWS[8:]]:
        if any(row not in r for r in records):  # left out by --methods, --no-curves or --no-flows
            continue
        cells = []
        for s in ("train", "test"):
            v = 100 * np.array([r[row][s] for r in records])
            cells.append(f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}")
        lines.append(f"| {row_name(row, args)} | " + " | ".join(cells) + " |")
    return records, "\n".join(lines)


def ensemble_table(args, log) -> tuple[dict, str]:
    tr = dict(TRAIN, epochs=3) if args.quick else TRAIN
    out, text = {}, []
    for spec, data in ((MLP, "digits"), (CNN, "digits:image")):
        train, test = ls.load_data(data, "train"), ls.load_data(data, "test")
        members = [trained(args.out_dir, spec, train, 200 + s, tr, args.force) for s in range(args.members)]
        model = ls.build_model(*spec)
        curve = wa_ensemble_curve(model, members, train, test)
        curve.save(os.path.join(args.out_dir, f"wa-ensemble-{spec[0]}.h5"), force=True)
        log(f"  WA-ensemble curve of {spec[0]} done")
        out[spec[0]] = {"acc": curve.acc.tolist(), "cost": curve.cost, "member_acc": curve.member_acc}
        text.append(f"{spec[0]} {spec[1]} on {data}:\n\n{curve.markdown()}")
    return out, "\n\n".join(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seed pairs of the convnet table (default 3)")
    p.add_argument("--pool", type=int, default=4, help="networks the connection models learn from (default 4)")
    p.add_argument("--members", type=int, default=5, help="networks of the WA-ensembles (default 5)")
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--flow-epochs", type=int, default=200)
    p.add_argument("--bijection-epochs", type=int, default=5)
    p.add_argument(
        "--flow-base",
        choices=("diagonal", "gaussian"),
        default="gaussian",
        help="fixed transform in front of the flows",
    )
    p.add_argument(
        "--flow-holdout", type=int, default=1, help="pool networks held out for the flows' early stopping (default 1)"
    )
    p.add_argument(
        "--no-align", dest="align", action="store_false", help="fit and apply the flows without matching the neurons"
    )
    p.add_argument("--wa-form", choices=("paper", "bias"), default="paper", help="weight adjustment (default paper)")
    p.add_argument("--ot-neuron", choices=("blc", "bl"), default="blc", help="what OT matches (default blc)")
    p.add_argument("--methods", default="all", help=f"comma-separated subset of {', '.join(METHODS)} (default all)")
    p.add_argument("--no-curves", dest="curves", action="store_false", help="leave out the Bezier curve (no training)")
    p.add_argument(
        "--no-flows", dest="flows", action="store_false", help="leave out Flow and Bijection (no pool, no fitting)"
    )
    p.add_argument("--no-ensembles", dest="ensembles", action="store_false", help="leave out the WA-ensemble tables")
    p.add_argument("--first-pair", type=int, default=0, help="index of the first seed pair (pair k: seeds 2k+1, 2k+2)")
    p.add_argument("--out-dir", default="repro-conv-connections")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    args.methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in args.methods):
        p.error(f"--methods {args.methods}: expected some of {', '.join(METHODS)} or all")
    if args.quick:
        args.pool, args.members, args.flow_epochs, args.bijection_epochs, args.points = 2, 3, 5, 1, 5
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(os.path.join(args.out_dir, "log.txt"), "a") as f:
            f.write(msg + "\n")

    t0 = time.perf_counter()
    log(
        f"repro_conv_connections {datetime.now(UTC).isoformat(timespec='seconds')}: "
        f"{1 if args.quick else args.seeds} pair(s) from {args.first_pair}, methods {args.methods}, "
        f"curves {args.curves}, flows {args.flows}, ensembles {args.ensembles}, wa-form {args.wa_form}, "
        f"ot-neuron {args.ot_neuron}"
    )
    conv, conv_md = conv_table(args, log)
    ens, ens_md = ensemble_table(args, log) if args.ensembles else ({}, "")
    env = {
        "landscape": ls.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "threads": args.threads,
        "seconds": time.perf_counter() - t0,
        "quick": args.quick,
    }
    parts = [
        f"Worst accuracy (%) along the path, small_cnn with BatchNorm on digits:image, "
        f"{1 if args.quick else args.seeds} seed pair(s) from pair {args.first_pair}"
        + (f", connection models from {args.pool} other networks:" if args.flows else ":"),
        conv_md,
    ]
    if args.ensembles:
        parts += [f"WA-ensembles of {args.members} networks, test accuracy (%) of the first m networks:", ens_md]
    parts.append(f"torch {env['torch']}, {args.threads} thread(s), {env['seconds']:.0f} s in all")
    text = "\n\n".join(parts)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"env": env, "conv": conv, "ensemble": ens}, f, indent=1)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
