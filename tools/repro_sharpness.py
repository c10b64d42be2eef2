"""Sharpness of small- and large-batch minima on digits (issue 24; Keskar et al. 2017's claim).

Trains an MLP on scikit-learn's digits with small batches (SB) and large batches (LB), ``--seeds``
seeds each, then computes every sharpness measure of :mod:`landscape.sharpness` at each final
point on the training set (``landscape.sharpness.compute_sharpness``: one resumable
``sharpness`` file per network) and the test error. Prints a markdown table per network, the
SB/LB means, and for each measure whether LB is sharper than SB in every seed pair and its rank
correlation with test error over all networks.

Cached and resumable: checkpoints (``<out-dir>/<regime>-s<seed>.pt``) are trained once, the
sharpness files are resumed (``resume=True``), so a killed run continues where it stopped.

Usage::

    nice -n 19 env OMP_NUM_THREADS=1 python tools/repro_sharpness.py            # a few minutes on 2 cores
    python tools/repro_sharpness.py --quick                                     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch

import landscape as ls
from landscape import sharpness as S
from landscape.train import train_classifier

MODEL = ("mlp", {"in_features": 64, "widths": [128, 128], "num_classes": 10})
#: regime -> training settings (SGD with momentum 0.9 and a cosine schedule, no weight decay);
#: LB takes more epochs so that both reach ~zero training error (same number of steps order)
REGIMES = {
    "SB": {"batch_size": 16, "lr": 0.02, "epochs": 40},
    "LB": {"batch_size": 1024, "lr": 0.1, "epochs": 1000},
}


def measures() -> tuple[list[S.Measure], list[S.Measure]]:
    """(measures on the whole training set, worst cases with m-sharpness)."""
    full = [
        S.Measure("worst-case", 0.1),
        S.Measure("worst-case", 0.5, adaptive=True),
        S.Measure("keskar", 1e-3),
        S.Measure("keskar", 5e-4),
        S.Measure("gaussian", 0.01),
        S.Measure("gaussian", 0.1, adaptive=True),
        S.Measure("sphere", 0.5),
        S.Measure("direction", 0.05),
    ]
    m_sharp = [S.Measure("worst-case", 0.1), S.Measure("worst-case", 0.5, adaptive=True)]
    return full, m_sharp


def train_or_load(regime: str, seed: int, train, out_dir: str, quick: bool) -> tuple[torch.nn.Module, ls.Weights]:
    path = os.path.join(out_dir, f"{regime}-s{seed}.pt")
    torch.manual_seed(seed)
    model = ls.build_model(*MODEL)
    if not os.path.exists(path):
        cfg = dict(REGIMES[regime])
        if quick:
            cfg["epochs"] = max(2, cfg["epochs"] // 20)
        t0 = time.perf_counter()
        train_classifier(model, train, weight_decay=0.0, seed=seed, **cfg)
        ls.save_weights(ls.Weights.from_module(model), path)
        print(f"trained {regime} seed {seed} in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return model, ls.load_checkpoint(path, model)


def one_network(regime: str, seed: int, train, test, args) -> dict:
    model, w = train_or_load(regime, seed, train, args.out_dir, args.quick)
    ev_train = ls.evaluate(model, w, train, ["loss", "err"], progress=False)
    ev_test = ls.evaluate(model, w, test, ["loss", "err"], progress=False)
    full, m_sharp = measures()
    common = dict(samples=args.samples, steps=args.steps, seed=seed, progress=False, resume=True)
    row = {
        "regime": regime,
        "seed": seed,
        "train_loss": float(ev_train["loss"][0]),
        "train_err": float(ev_train["err"][0]),
        "test_loss": float(ev_test["loss"][0]),
        "test_err": float(ev_test["err"][0]),
        "weight_norm": float(w.flatten().norm()),
    }
    # what the worst case is made of: rho ||g|| + rho^2 lambda_max / 2 to second order
    _, grad = ls.hessian.gradient(model, w, train)
    row["grad_norm"] = float(grad.norm())
    row["lambda_max"] = float(ls.hessian.lanczos(ls.hessian.HVP(model, w, train), tol=1e-4, max_iter=80).lambda_max)
    rep = S.compute_sharpness(model, w, train, full, out=os.path.join(args.out_dir, f"{regime}-s{seed}.h5"), **common)
    row.update({v.measure.label: v.value for v in rep.values})
    rep_m = S.compute_sharpness(
        model, w, train, m_sharp, m=args.m, out=os.path.join(args.out_dir, f"{regime}-s{seed}-m{args.m}.h5"), **common
    )
    row.update({f"{v.measure.label} m={args.m}": v.value for v in rep_m.values})
    return row


def _spearman(a, b) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def report(rows: list[dict], args) -> str:
    labels = [k for k in rows[0] if k not in ("regime", "seed", "train_loss", "train_err", "test_loss", "test_err")]
    lines = ["| quantity | " + " | ".join(f"{r['regime']} seed {r['seed']}" for r in rows) + " |"]
    lines.append("|" + "---|" * (1 + len(rows)))
    for k, fmt in [("train_loss", ".4f"), ("train_err", ".2f"), ("test_err", ".2f")] + [(k, ".4g") for k in labels]:
        lines.append(f"| {k} | " + " | ".join(f"{r[k]:{fmt}}" for r in rows) + " |")
    lines += ["", "| measure | SB mean ± std | LB mean ± std | LB > SB in every seed pair | Spearman with test err |"]
    lines.append("|---|---|---|---|---|")
    err = np.array([r["test_err"] for r in rows])
    for k in ["test_err", *labels]:
        sb = np.array([r[k] for r in rows if r["regime"] == "SB"])
        lb = np.array([r[k] for r in rows if r["regime"] == "LB"])
        pairs = "yes" if np.all(lb > sb) else ("no (LB < SB in every pair)" if np.all(lb < sb) else "mixed")
        rho = _spearman(np.array([r[k] for r in rows]), err) if k != "test_err" else 1.0
        lines.append(
            f"| {k} | {sb.mean():.4g} ± {sb.std(ddof=1):.2g} | {lb.mean():.4g} ± {lb.std(ddof=1):.2g} "
            f"| {pairs} | {rho:+.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/landscape-repro-sharpness")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samples", type=int, default=100, help="perturbations per random measure")
    p.add_argument("--steps", type=int, default=20, help="ascent steps of the worst cases")
    p.add_argument("--m", type=int, default=128, help="m of the m-sharpness rows")
    p.add_argument("--quick", action="store_true", help="short training, few samples (smoke run)")
    args = p.parse_args()
    if args.quick:
        args.samples, args.steps = 10, 5
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    rows = [one_network(regime, s, train, test, args) for regime in REGIMES for s in range(args.seeds)]
    table = report(rows, args)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = (
        f"{stamp}; torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(table)
    print(note)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"rows": rows, "regimes": REGIMES, "model": MODEL, "note": note}, f, indent=1)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")


if __name__ == "__main__":
    main()
