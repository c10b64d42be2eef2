"""Reproduce the fast-ensembles and variance-network results of the seeds on scikit-learn's digits.

Parts (``--parts``, default all):

``budgets``      Table 1 of the FGE paper (Garipov et al. 2018; seeds 000, 004): test error and
                 NLL of independent (Ind), snapshot (SSE), FGE and SWA ensembles at budgets
                 1B, 2B and 3B (``landscape.ensembles.run_at_budget``: every column spends the
                 same number of epochs), mean +- std over ``--seeds`` seeds, per architecture.
``swa``          SWA against SGD (Izmailov et al. 2018; seed 002): from a network trained for
                 one budget, SGD continues at a constant rate while SWA averages an iterate
                 per epoch; test accuracy of both and the loss along the line through the two
                 solutions (the "width" figure, ``swa_width``), with its figure.
``variational``  Variance networks (Neklyudov et al. 2018; seed 002): a variational-dropout
                 network and a variance network (zero means) with the same architecture,
                 trained by the ELBO; accuracy of the deterministic, stochastic and ensemble
                 prediction schemes, mean +- std over seeds, and their SNR histograms.

Only the public API is used. Prints markdown tables and writes them, with the per-seed
numbers and figures, to ``--out-dir``.

Usage::

    python3 tools/repro_ensembles.py                    # everything (a few minutes on 2 cores)
    python3 tools/repro_ensembles.py --quick            # smoke run
    python3 tools/repro_ensembles.py --parts budgets --seeds 5 --out-dir /tmp/ens
    python3 tools/repro_ensembles.py --parts budgets,swa --methods swa   # the SWA rows only
    python3 tools/repro_ensembles.py --swa-restart      # SWA after cosine training, fresh optimizer
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
from landscape import ensembles as E
from landscape.demo import train_classifier
from landscape.plot import plot_ensembles, plot_snr

# Table 1 settings per architecture; B = epochs of one network.
ARCHS = {
    "mlp": {
        "data": "digits",
        "model": ("mlp", {"in_features": 64, "widths": [256, 256], "num_classes": 10}),
        "label": "MLP 64-256-256-10, flat digits",
        "budget": {"budget_epochs": 20, "lr": 0.1, "weight_decay": 0.0, "batch_size": 64, "cycles": 4},
    },
    "cnn": {
        "data": "digits:image",
        "model": ("small_cnn", {"width": 16}),
        "label": "small_cnn (Conv16-BN-Conv32-BN-Linear), digits as 8x8 images",
        "budget": {"budget_epochs": 10, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64, "cycles": 4},
    },
}
METHOD_NAMES = {"ind": "Ind", "sse": "SSE", "fge": "FGE", "swa": "SWA"}


def _mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def _within(c, i: int, limit: float, name: str) -> float:
    """The metric of the ensemble of row ``i``'s members available within ``limit`` epochs."""
    b, v = c.per_member["budget"][i], c.per_member[name][i]
    ok = np.isfinite(b) & (b <= limit + 1e-9)
    return float(v[ok][-1])


def part_budgets(args, out: dict) -> str:
    lines = []
    for arch in args.archs:
        cfg = ARCHS[arch]
        spec, kwargs = cfg["model"]
        train = ls.load_data(cfg["data"], "train")
        test = ls.load_data(cfg["data"], "test")
        model = ls.build_model(spec, kwargs)
        settings = dict(cfg["budget"])
        if args.quick:
            settings["budget_epochs"] = 5
        B = settings["budget_epochs"]
        methods = [m for m in METHOD_NAMES if m in args.methods]
        settings["swa_restart"] = args.swa_restart
        err = {m: [] for m in methods}
        nll = {m: [] for m in methods}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            runs = [E.run_at_budget(model, train, m, n=3, seed=seed, **settings) for m in methods]
            c = E.compare_ensembles(model, runs, test)
            for i, m in enumerate(methods):
                err[m].append([100 * (1 - _within(c, i, n * B, "cumulative_acc")) for n in (1, 2, 3)])
                nll[m].append([_within(c, i, n * B, "cumulative_nll") for n in (1, 2, 3)])
            if seed == 0:
                c.save(os.path.join(args.out_dir, f"budgets-{arch}-seed0.h5"), force=True)
                plot_ensembles(c).savefig(os.path.join(args.out_dir, f"budgets-{arch}-seed0.png"), dpi=120)
            print(f"  {arch} seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out[f"budgets-{arch}"] = {"settings": settings, "error": err, "nll": nll}
        lines += [
            f"**{cfg['label']}**, B = {B} epochs, {args.seeds} seeds; test error (%) | test NLL (nats)",
            "",
            "| Method | 1B | 2B | 3B | NLL 1B | NLL 2B | NLL 3B |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in methods:
            name = METHOD_NAMES[m]
            e, n = np.asarray(err[m]), np.asarray(nll[m])
            cells = [_mean_std(e[:, k]) for k in range(3)] + [f"{n[:, k].mean():.4f}" for k in range(3)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def part_swa(args, out: dict) -> str:
    cfg = ARCHS["mlp"]
    spec, kwargs = cfg["model"]
    train, test = ls.load_data(cfg["data"], "train"), ls.load_data(cfg["data"], "test")
    B = 5 if args.quick else cfg["budget"]["budget_epochs"]
    rows, tables = [], []
    for seed in range(args.seeds):
        model = E.fresh_copy(ls.build_model(spec, kwargs), 100 + seed)
        fit = dict(weight_decay=0.0, batch_size=64, seed=seed)
        if args.swa_restart:  # the earlier procedure: cosine training, then a fresh optimizer
            train_classifier(model, train, epochs=B, lr=0.1, **fit)
            start = ls.Weights.from_module(model)
            res = E.swa(model, start, train, epochs=B // 2, lr=0.05, include_start=False, **fit)
        else:  # the SWA repository's: one optimizer, its schedule, averaging from epoch B
            start = ls.Weights.from_module(model)
            res = E.swa(model, start, train, epochs=B + B // 2, swa_start=B, lr=0.1, swa_lr=0.05, **fit)
        path = os.path.join(args.out_dir, f"swa-width-seed{seed}.h5")
        width = E.swa_width(model, res, {"train": train, "test": test}, weight_decay=0.0, out=path, force=True)
        x = width.x
        dist = float(x[np.argmin(abs(x - E.swa_line(res.weights, res.sgd).anchors[1]))])
        i_swa, i_sgd = int(np.argmin(abs(x))), int(np.argmin(abs(x - dist)))
        tl, te = width["train_loss+l2"], width["test_err"]
        rows.append(
            {
                "seed": seed,
                "distance": dist,
                "train_loss": [float(tl[i_swa]), float(tl[i_sgd])],
                "test_err": [float(te[i_swa]), float(te[i_sgd])],
                "argmin_train_loss": float(x[int(np.argmin(tl))]),
                "argmin_test_err": float(x[int(np.argmin(te))]),
            }
        )
        if seed == 0:
            from landscape.plot import plot_file

            plot_file(path, args.out_dir, formats=("png",), force=True)
    out["swa"] = rows
    r = {k: np.array([row[k] for row in rows]) for k in rows[0] if k != "seed"}
    if args.swa_restart:
        how = (
            f"SGD {B} epochs (lr 0.1, cosine), then {B // 2} epochs at lr 0.05 with a fresh optimizer: the last "
            f"iterate (SGD) and the average of one iterate per epoch after the first {B} (SWA)"
        )
    else:
        how = (
            f"SGD {B + B // 2} epochs with one optimizer (the SWA repository's schedule: lr 0.1, decaying linearly "
            f"to 0.05 from 50% to 90% of the first {B} epochs, then 0.05): the last iterate (SGD) and the average "
            f"of the weights after epochs {B}, {B + 1}, ..., {B + B // 2} (SWA)"
        )
    tables += [
        f"**{cfg['label']}**: {how}, {args.seeds} seeds",
        "",
        "| | SWA | SGD |",
        "|---|---:|---:|",
        f"| test error (%) | {_mean_std(r['test_err'][:, 0])} | {_mean_std(r['test_err'][:, 1])} |",
        f"| train loss | {_mean_std(r['train_loss'][:, 0])} | {_mean_std(r['train_loss'][:, 1])} |",
        "",
        f"Distance SWA-SGD {_mean_std(r['distance'])}; along the line (x = 0 at SWA, x = distance at SGD) the "
        f"train loss is lowest at x = {_mean_std(r['argmin_train_loss'])} and the test error at "
        f"x = {_mean_std(r['argmin_test_err'])}.",
        "",
    ]
    return "\n".join(tables)


# Variational networks: MLP 64-1024-10, Adam, full KL (the ELBO), K weight samples per ensemble.
VARIATIONAL = {"widths": [1024], "epochs": 100, "lr": 1e-2, "batch_size": 128, "samples": 50}
NETWORKS = {  # label -> convert() arguments
    "Dropout (Gaussian, p = 0.5)": {"parameterization": "layer", "alpha": 1.0, "train_alpha": False},
    "Variance (hidden), plain output": {"parameterization": "variance", "layers": {"3": None}},
}
PARAMETERIZATIONS = {  # the seed's "different parameterizations" table; alpha learned from 0.01
    "Layer": "layer",
    "Neuron": "neuron",
    "Weight": "weight",
    "Additive": "additive",
}


def _train_variational(base, train, test, seed: int, cfg: dict, convert_kwargs: dict):
    from landscape import variational as V

    vnet = V.convert(base, **convert_kwargs)
    hist = V.fit_elbo(vnet, train, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=seed)
    res = V.predict(vnet, test, samples=cfg["samples"], seed=seed)
    elbo = -(len(train) * hist["nll"][-1] + hist["kl"][-1])  # over the last epoch's minibatches
    return vnet, res, elbo, hist["seconds"]


def part_variational(args, out: dict) -> str:
    from landscape import variational as V

    cfg = dict(VARIATIONAL)
    if args.quick:
        cfg.update(epochs=10, samples=10)
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    schemes = ("stochastic", "deterministic", "ensemble")
    lines = [
        f"MLP 64-{cfg['widths'][0]}-10 on digits, Adam lr {cfg['lr']}, {cfg['epochs']} epochs, full KL; ensemble of "
        f"{cfg['samples']} weight samples; test accuracy (%), {args.seeds} seeds",
        "",
        "| Network | Stoch. | Det. | Ens. |",
        "|---|---:|---:|---:|",
    ]
    rows: dict = {}
    for label, kw in NETWORKS.items():
        acc = []
        for seed in range(args.seeds):
            base = E.fresh_copy(ls.build_model("mlp", {"in_features": 64, "widths": cfg["widths"]}), seed)
            vnet, res, _, _ = _train_variational(base, train, test, seed, cfg, kw)
            acc.append([100 * res[s].acc for s in schemes])
            if seed == 0:
                tag = kw["parameterization"]
                plot_snr(V.snr(vnet), title=label).savefig(os.path.join(args.out_dir, f"snr-{tag}.png"), dpi=120)
        a = np.asarray(acc)
        rows[label] = acc
        lines.append(f"| {label} | " + " | ".join(_mean_std(a[:, k]) for k in range(3)) + " |")
    lines += ["", "Parameterizations of q (variational dropout, alpha learned from 0.01), same network:", ""]
    lines += ["| | " + " | ".join(PARAMETERIZATIONS) + " |", "|---|" + "---:|" * len(PARAMETERIZATIONS)]
    table: dict = {}
    for label, p in PARAMETERIZATIONS.items():
        for seed in range(args.seeds):
            base = E.fresh_copy(ls.build_model("mlp", {"in_features": 64, "widths": cfg["widths"]}), seed)
            _, res, elbo, _ = _train_variational(base, train, test, seed, cfg, {"parameterization": p, "alpha": 0.01})
            table.setdefault(label, []).append([elbo, 100 * res["deterministic"].acc, 100 * res["ensemble"].acc])
    t = {k: np.asarray(v) for k, v in table.items()}
    lines.append("| ELBO | " + " | ".join(f"{t[k][:, 0].mean():.3g}" for k in t) + " |")
    lines.append("| Det. accuracy | " + " | ".join(_mean_std(t[k][:, 1]) for k in t) + " |")
    lines.append("| Ens. accuracy | " + " | ".join(_mean_std(t[k][:, 2]) for k in t) + " |")
    lines.append("")
    out["variational"] = {"settings": cfg, "networks": rows, "parameterizations": table}
    return "\n".join(lines)


PARTS = {"budgets": part_budgets, "swa": part_swa, "variational": part_variational}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--archs", default="mlp,cnn", help="architectures of the budget table: mlp, cnn")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: short budgets, 2 seeds")
    ap.add_argument("--methods", default=",".join(METHOD_NAMES), help="rows of the budget table: ind, sse, fge, swa")
    ap.add_argument(
        "--swa-restart",
        action="store_true",
        help="SWA after cosine training with a fresh optimizer (the earlier procedure) instead of the repository's",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default="repro-ensembles")
    args = ap.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if m not in METHOD_NAMES:
            ap.error(f"--methods: {m!r} is not one of {', '.join(METHOD_NAMES)}")
    if args.quick:
        args.seeds = min(args.seeds, 2)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    out: dict = {}
    text = [
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, landscape {ls.__version__}, torch "
        f"{torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s).",
        "",
    ]
    t0 = time.perf_counter()
    for part in args.parts.split(","):
        if part not in PARTS:
            ap.error(f"--parts: {part!r} is not one of {', '.join(PARTS)}")
        print(f"[{part}]", file=sys.stderr)
        text.append(PARTS[part](args, out))
    text.append(f"Total {time.perf_counter() - t0:.0f} s.")
    report = "\n".join(text)
    print(report)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
