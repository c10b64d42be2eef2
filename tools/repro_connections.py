"""Reproduce the connection tables of Anokhin & Yarotsky (ICML 2020) on scikit-learn's digits.

For each architecture and seed pair: train two ReLU MLPs from different seeds, train Bezier
curves with 3 and 5 control points (1 and 3 bends, the paper's "Garipov (3)" and
"Garipov (5)") between them, then build every distribution-based connection (Linear, Arc,
Linear + WA, Arc + WA, OT, OT + WA) with :func:`landscape.connect.compare_connections` and
record the worst train and test accuracy along each path. Prints the paper's table (mean ±
sample std over seed pairs), says which of the paper's orderings hold, and writes the
per-pair reports (HDF5), the checkpoints, the curves and ``results.json`` / ``results.md`` to
``--out-dir``.

Architectures (``--archs``):

``two-layer``    ``64-512-10`` (one hidden layer of 512 ReLU units, as the paper's two-layer
                 networks with 2000 units on MNIST), flat digits.
``three-layer``  ``64-512-512-10`` (the paper's three-layer MLP; WA methods go through the
                 transitional networks, :func:`~landscape.connect.multilayer_wa_path`).

Weight adjustment fits on the 1,257 training images: more samples than hidden units, so
WA paths start and end exactly at the two networks.

Usage::

    python3 tools/repro_connections.py                    # 3 seed pairs, both architectures
    python3 tools/repro_connections.py --quick            # smoke run (1 pair, few epochs)
    python3 tools/repro_connections.py --seeds 5 --archs two-layer

Everything is cached in ``--out-dir``: a rerun reuses trained networks and curves and
resumes unfinished reports (``--force`` starts over).
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
from landscape.connect import METHODS, compare_connections
from landscape.connect.registry import row_label
from landscape.demo import train_classifier

ARCHS = {
    "two-layer": {"widths": [512], "label": "two-layer ReLU MLP 64-512-10"},
    "three-layer": {"widths": [512, 512], "label": "three-layer ReLU MLP 64-512-512-10"},
}
CURVES = {"Bezier (3)": 1, "Bezier (5)": 3}  # label -> bends
TRAIN = {"epochs": 40, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64}
FIT = {"epochs": 100, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64, "t_per_batch": 4}
QUICK = {"train_epochs": 4, "fit_epochs": 3, "points": 6}
ROWS = [*METHODS, *CURVES]
# The paper's worst accuracies (%, mean over runs): Table 1 (two-layer MNIST, 2000 units) and
# Table 2 (three-layer CIFAR10, 6144 and 2000 units), train and test.
PAPER = {
    "two-layer": {
        "linear": (96.54, 95.87),
        "arc": (97.89, 97.03),
        "linear+wa": (98.76, 97.86),
        "arc+wa": (98.75, 97.86),
        "ot": (98.78, 97.87),
        "ot+wa": (98.92, 97.91),
        "Bezier (3)": (99.10, 97.98),
        "Bezier (5)": (99.03, 97.93),
        "End points": (99.14, 98.01),
    },
    "three-layer": {
        "linear": (47.81, 38.38),
        "arc": (60.60, 49.63),
        "linear+wa": (60.93, 51.87),
        "arc+wa": (71.10, 58.86),
        "ot": (81.95, 59.11),
        "ot+wa": (87.53, 61.67),
        "Bezier (3)": (94.56, 61.38),
        "Bezier (5)": (90.32, 60.75),
        "End points": (95.13, 63.25),
    },
}


#: The formulations the tables were computed with (set from --wa-form / --ot-neuron).
FORMS = {"wa_form": "paper", "neuron": "blc"}


def label(row: str) -> str:
    return row_label(row, wa_form=FORMS["wa_form"], neuron=FORMS["neuron"])


def train_or_load(path: str, model_kwargs: dict, train, seed: int, cfg: dict, force: bool) -> ls.Weights:
    if os.path.exists(path) and not force:
        return ls.load_checkpoint(path, ls.build_model("mlp", model_kwargs))
    torch.manual_seed(seed)  # before the model is built: its initial weights come from the seed
    model = ls.build_model("mlp", model_kwargs)
    train_classifier(model, train, seed=seed, **cfg)
    ls.save_weights(model.state_dict(), path, force=True)
    return ls.load_checkpoint(path, model)


def run_pair(arch: str, pair: int, args, log) -> dict:
    cfg = ARCHS[arch]
    kwargs = {"in_features": 64, "widths": cfg["widths"], "num_classes": 10}
    model = ls.build_model("mlp", kwargs)
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    splits = {"train": train, "test": test}
    tr_cfg, fit_cfg, points = dict(TRAIN), dict(FIT), args.points
    if args.quick:
        tr_cfg["epochs"], fit_cfg["epochs"], points = QUICK["train_epochs"], QUICK["fit_epochs"], QUICK["points"]
    pair_dir = os.path.join(args.out_dir, arch, f"pair{pair}")
    os.makedirs(pair_dir, exist_ok=True)
    seeds = (2 * pair + 1, 2 * pair + 2)
    t0 = time.perf_counter()
    A, B = (
        train_or_load(os.path.join(pair_dir, f"end-seed{s}.pt"), kwargs, train, s, tr_cfg, args.force) for s in seeds
    )
    t_train = time.perf_counter() - t0

    curves, fit_seconds = {}, {}
    for name, bends in CURVES.items() if not args.no_curves else ():
        path = os.path.join(pair_dir, f"bezier{bends + 2}.pt")
        curve = ls.curves.Curve(A, B, n_bends=bends, kind="bezier")
        fit = ls.curves.fit_curve(
            model,
            curve,
            train,
            schedule="garipov",
            seed=pair,
            device="cpu",
            checkpoint=path,
            resume=not args.force,
            force=args.force,
            progress=False,
            **fit_cfg,
        )
        curves[name], fit_seconds[name] = curve, fit.seconds

    t1 = time.perf_counter()
    rep = compare_connections(
        model,
        A,
        B,
        splits,
        methods=args.methods,
        points=points,
        wa_data=train,
        wa_form=args.wa_form,
        neuron=args.ot_neuron,
        curves=curves,
        device="cpu",
        out=os.path.join(pair_dir, "connections.h5"),
        resume=not args.force,
        force=args.force,
        attrs={"model": {"spec": "mlp", "kwargs": kwargs}, "seeds": list(seeds)},
    )
    t_connect = time.perf_counter() - t1
    rec = {
        "arch": arch,
        "pair": pair,
        "seeds": list(seeds),
        "points": points,
        "train": tr_cfg,
        "fit": fit_cfg,
        "seconds": {"train": t_train, "fit": fit_seconds, "connect": t_connect},
        "worst_acc": {m: {s: rep.worst_acc(m, s) for s in rep.splits} for m in rep.computed},
        "stages": {
            m: {f"{rep.stage_word(m)} {k}": {s: rep.worst_acc(m, s, k) for s in rep.splits} for k in rep.stages(m)}
            for m in rep.computed
            if rep.stages(m)
        },
        "endpoints": rep.endpoints,
        "ot_swaps": rep.attrs.get("ot_swaps"),
    }
    rec["worst_acc"]["End points"] = {s: rep.endpoint_acc(s) for s in rep.splits}
    log(
        f"  [{arch} pair {pair}] train {t_train:.0f}s, curves {sum(fit_seconds.values()):.0f}s, "
        f"connections {t_connect:.0f}s: "
        + ", ".join(f"{label(m)} {100 * rec['worst_acc'][m]['test']:.2f}" for m in rec["worst_acc"])
    )
    return rec


def mean_std(values, digits: int = 2) -> str:
    v = 100.0 * np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def means(records: list[dict], arch: str) -> dict[str, tuple[float, float]]:
    rs = [r for r in records if r["arch"] == arch]
    out = {}
    for row in [*ROWS, "End points"]:
        vals = [r["worst_acc"][row] for r in rs if row in r["worst_acc"]]
        if vals:
            out[row] = tuple(100.0 * float(np.mean([v[s] for v in vals])) for s in ("train", "test"))
    return out


def table(records: list[dict], archs: list[str]) -> str:
    """The paper's layout: rows are methods, two columns (train, test) per architecture."""
    head = "| Method | " + " | ".join(f"{a} train | {a} test" for a in archs) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(archs)]
    for row in [*ROWS, "End points"]:
        cells = []
        for a in archs:
            rs = [r for r in records if r["arch"] == a and row in r["worst_acc"]]
            for s in ("train", "test"):
                cells.append(mean_std([r["worst_acc"][row][s] for r in rs]) if rs else "-")
        lines.append(f"| {label(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_table(records: list[dict], archs: list[str]) -> str:
    """Worst test accuracy per OT stage / WA step (mean ± std)."""
    lines = ["| Path part | " + " | ".join(f"{a} train | {a} test" for a in archs) + " |"]
    lines.append("|---|" + "---:|---:|" * len(archs))
    parts = []
    for r in records:
        for m, st in r["stages"].items():
            for k in st:
                if (m, k) not in parts:
                    parts.append((m, k))
    for m, k in parts:
        cells = []
        for a in archs:
            rs = [r for r in records if r["arch"] == a and k in r["stages"].get(m, {})]
            for s in ("train", "test"):
                cells.append(mean_std([r["stages"][m][k][s] for r in rs]) if rs else "-")
        lines.append(f"| {label(m)}, {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The orderings the paper's tables show (a above b), checked on the means.
ORDERINGS = [
    ("arc", "linear", "Arc improves on Linear"),
    ("linear+wa", "linear", "WA improves Linear"),
    ("arc+wa", "arc", "WA improves Arc"),
    ("ot", "arc", "OT beats Arc"),
    ("ot+wa", "ot", "WA improves OT"),
    ("ot+wa", "linear+wa", "OT + WA beats Linear + WA"),
    ("ot+wa", "arc+wa", "OT + WA beats Arc + WA"),
    ("Bezier (3)", "ot+wa", "trained Bezier (3) beats OT + WA"),
    ("Bezier (3)", "Bezier (5)", "Bezier (3) beats Bezier (5)"),
    ("End points", "Bezier (3)", "no path beats the endpoints"),
]


def orderings(records: list[dict], archs: list[str]) -> str:
    lines = ["| Ordering (paper) | " + " | ".join(f"{a}: paper train/test, ours train/test" for a in archs) + " |"]
    lines.append("|---|" + "---|" * len(archs))
    for hi, lo, text in ORDERINGS:
        cells = []
        for a in archs:
            m, p = means(records, a), PAPER[a]
            if hi not in m or lo not in m:
                cells.append("-")
                continue
            paper = "/".join("yes" if p[hi][i] > p[lo][i] else "no" for i in (0, 1))
            ours = "/".join(
                f"{'yes' if m[hi][i] > m[lo][i] else 'no'} ({m[hi][i]:.2f} vs {m[lo][i]:.2f})" for i in (0, 1)
            )
            cells.append(f"{paper}; {ours}")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="two-layer,three-layer")
    p.add_argument("--seeds", type=int, default=3, help="seed pairs per architecture (default 3)")
    p.add_argument("--points", type=int, default=21, help="values of t per path (default 21)")
    p.add_argument("--out-dir", default="repro-connections")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 pair, few epochs")
    p.add_argument("--force", action="store_true", help="retrain and recompute everything")
    p.add_argument("--methods", default="all", help=f"comma-separated subset of {', '.join(METHODS)} (default all)")
    p.add_argument("--no-curves", action="store_true", help="leave out the Bezier curves (no curve training)")
    p.add_argument("--first-pair", type=int, default=0, help="index of the first seed pair (pair k: seeds 2k+1, 2k+2)")
    p.add_argument("--wa-form", choices=("paper", "bias"), default="paper", help="weight adjustment (default paper)")
    p.add_argument("--ot-neuron", choices=("blc", "bl"), default="blc", help="what OT matches (default blc)")
    args = p.parse_args(argv)
    args.methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in args.methods):
        p.error(f"--methods {args.methods}: expected some of {', '.join(METHODS)} or all")
    FORMS.update(wa_form=args.wa_form, neuron=args.ot_neuron)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        p.error(f"unknown --archs {bad}; expected some of {sorted(ARCHS)}")
    if args.quick:
        args.seeds = 1
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    log_path = os.path.join(args.out_dir, "log.txt")

    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    t0 = time.perf_counter()
    log(
        f"repro_connections {datetime.now(UTC).isoformat(timespec='seconds')}: archs {archs}, {args.seeds} pair(s) "
        f"from {args.first_pair}, methods {args.methods}, curves {not args.no_curves}, wa-form {args.wa_form}, "
        f"ot-neuron {args.ot_neuron}"
    )
    pairs = range(args.first_pair, args.first_pair + args.seeds)
    records = [run_pair(a, k, args, log) for a in archs for k in pairs]
    env = {
        "landscape": ls.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "seconds": time.perf_counter() - t0,
        "quick": args.quick,
    }
    text = "\n\n".join(
        [
            f"Worst accuracy (%) along the path, mean ± std over {args.seeds} seed pair(s), digits "
            f"(train 1,257 / test 540 images), {args.points if not args.quick else QUICK['points']} points per path:",
            table(records, archs),
            "Per OT stage and per WA step (three-layer WA paths run through transitional networks):",
            stage_table(records, archs),
            "The paper's orderings on our means (yes: the first beats the second):",
            orderings(records, archs),
            f"torch {env['torch']}, landscape {env['landscape']}, {env['cpus']} CPUs, {args.threads} thread(s), "
            f"{env['seconds']:.0f} s in all",
        ]
    )
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"env": env, "records": records}, f, indent=1)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
