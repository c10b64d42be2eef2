"""Reproduce mode connectivity (Garipov et al., NeurIPS 2018) on scikit-learn's digits.

For each seed pair and architecture: train two endpoint networks from different seeds,
measure the train-loss barrier of the straight line between them, then train a Bezier curve
and a polygonal chain with 1 and 3 bends between the same endpoints (``fit_curve`` with its
defaults, those of dnn-mode-connectivity: loss averaged over t ~ U(0, 1), the "garipov"
learning-rate schedule at epoch e of E set to f(e/E), weight decay on phi(t), endpoints
fixed) and evaluate all of them at 61 values of t (``evaluate_curve``; BatchNorm statistics
recomputed at every t; lengths and integrated losses as DMC's ``eval_curve.py``). Prints a
markdown table (mean +- sample std over seed pairs) and writes it, with the per-run numbers,
the endpoints, the curves and the profiles, to ``--out-dir``.

Only the public API is used: ``ls.load_data``, ``ls.build_model``, ``ls.Weights``,
``ls.save_weights``, ``ls.curves.Curve / fit_curve / evaluate_curve`` and
``landscape.demo.train_classifier``.

Architectures (``--archs``):

``mlp``  ``Flatten-Linear(64,64)-ReLU-Linear(64,64)-ReLU-Linear(64,10)`` on flat digits.
         (One wide hidden layer, 64-256-10 or 64-512-10, gives line barriers of only
         0.08-0.2 nats on digits once trained to low loss, below the 0.3 asked for.)
``cnn``  ``landscape.models.small:small_cnn`` (width 8): Conv3x3(8)-BN-ReLU-Conv3x3(16)-BN-
         ReLU-MaxPool2-Linear(256,10) on ``digits:image``.

Usage::

    python3 tools/repro_curves.py                      # 3 seed pairs, both architectures
    python3 tools/repro_curves.py --quick              # smoke run (1 pair, few epochs)
    python3 tools/repro_curves.py --seeds 5 --archs cnn --out-dir /tmp/curves

Runs on the CPU with ``--threads`` torch threads (default 1: on a shared 2-core machine a
second thread is often slower, because its spin-waits compete with other processes).
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
from landscape.demo import train_classifier

CURVES = (("bezier", 1), ("bezier", 3), ("polychain", 1), ("polychain", 3))

# Settings per architecture. ``train``: endpoints (train_classifier, SGD + cosine);
# ``fit``: the curves (fit_curve, SGD + "garipov" schedule).
ARCHS = {
    "mlp": {
        "data": "digits",
        "model": ("mlp", {"in_features": 64, "widths": [64, 64], "num_classes": 10}),
        "label": "MLP 64-64-64-10 (ReLU), flat digits",
        "train": {"epochs": 30, "lr": 0.1, "weight_decay": 1e-4, "batch_size": 64},
        "fit": {"epochs": 300, "lr": 0.1, "weight_decay": 0.0, "batch_size": 128, "t_per_batch": 4},
        "bn": "running",  # no BatchNorm: "running" is exact
    },
    "cnn": {
        "data": "digits:image",
        "model": ("landscape.models.small:small_cnn", {"num_classes": 10, "in_channels": 1, "width": 8}),
        "label": "small CNN with BatchNorm (conv 8-16, maxpool, linear), digits:image",
        "train": {"epochs": 15, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 64},
        # t_per_batch 1, as in the recorded RESULTS.md table (made before fit_curve supported
        # t_per_batch > 1 on BatchNorm networks)
        "fit": {"epochs": 200, "lr": 0.05, "weight_decay": 0.0, "batch_size": 128, "t_per_batch": 1},
        "bn": "recompute",
    },
}

QUICK = {"train_epochs": 3, "fit_epochs": 3, "points": 11}


def curve_name(kind: str, n_bends: int) -> str:
    return f"{'Bezier' if kind == 'bezier' else 'Polychain'}, {n_bends} bend{'s' if n_bends > 1 else ''}"


def profile_numbers(profile, row: str) -> dict:
    """Barrier and errors of one row ("curve" or "line") of a CurveProfile."""
    t = profile.t
    train_loss = profile.metrics["train_loss"][0 if row == "curve" else 1]
    test_err = 1.0 - profile.metrics["test_acc"][0 if row == "curve" else 1]
    i = int(np.nanargmax(train_loss))
    r = 0 if row == "curve" else 1
    return {
        "length": float(profile.lengths[row]),
        "int_train_loss": float(profile.stats[row]["train_loss"]["int"]),
        "int_test_err": float(profile.stats[row]["test_err"]["int"]),
        "segment_lengths": [float(v) for v in profile.segment_lengths[r]],
        "barrier_train": float(profile.barriers[row]["train"]),
        "barrier_test": float(profile.barriers[row]["test"]),
        "barrier_t": float(profile.barriers[f"{row}-t"]["train"]),
        "max_train_loss": float(train_loss[i]),
        "test_err_at_barrier": float(test_err[i]),
        "max_test_err": float(np.nanmax(test_err)),
        "t_max_test_err": float(t[int(np.nanargmax(test_err))]),
        "train_loss": [float(v) for v in train_loss],
        "test_err": [float(v) for v in test_err],
    }


def run_pair(arch: str, pair: int, args, log) -> dict:
    cfg = ARCHS[arch]
    spec, kwargs = cfg["model"]
    train = ls.load_data(cfg["data"], "train")
    test = ls.load_data(cfg["data"], "test")
    splits = {"train": train, "test": test}
    tr_cfg = dict(cfg["train"])
    fit_cfg = dict(cfg["fit"])
    fit_cfg["epochs"] = max(1, round(fit_cfg["epochs"] * args.fit_scale))
    if args.quick:
        tr_cfg["epochs"], fit_cfg["epochs"] = QUICK["train_epochs"], QUICK["fit_epochs"]
    pair_dir = os.path.join(args.out_dir, arch, f"pair{pair}")
    os.makedirs(pair_dir, exist_ok=True)
    seeds = (2 * pair + 1, 2 * pair + 2)
    rec: dict = {"arch": arch, "pair": pair, "seeds": list(seeds), "train": tr_cfg, "fit": fit_cfg}

    # endpoints ------------------------------------------------------------------
    t0 = time.perf_counter()
    end_models = []
    for s in seeds:
        torch.manual_seed(s)
        model = ls.build_model(spec, kwargs)
        train_classifier(model, train, seed=s, **tr_cfg)
        ls.save_weights(model.state_dict(), os.path.join(pair_dir, f"end-seed{s}.pt"), force=True)
        end_models.append(model)
    rec["train_seconds"] = time.perf_counter() - t0
    model = ls.build_model(spec, kwargs)

    # curves (the line is row 1 of every profile; it is taken from the first one) -----
    rec["curves"] = {}
    for kind, n_bends in CURVES:
        name = f"{kind}{n_bends}"
        # Fresh copies of the endpoints for every curve: fit_curve (t_per_batch=1) increments
        # the start's BatchNorm num_batches_tracked in place.
        ends = [ls.Weights.from_module(m) for m in end_models]
        curve = ls.curves.Curve(ends[0], ends[1], n_bends=n_bends, kind=kind)
        fit = ls.curves.fit_curve(
            model, curve, train, schedule="garipov", seed=pair, device="cpu", progress=False, **fit_cfg
        )
        t1 = time.perf_counter()
        prof = ls.curves.evaluate_curve(
            model,
            curve,
            splits,
            points=args.points,
            bn=cfg["bn"],
            device="cpu",
            out=os.path.join(pair_dir, f"profile-{name}.h5"),
            force=True,
            attrs={"model": {"spec": spec, "kwargs": kwargs}},
            progress=False,
        )
        eval_seconds = time.perf_counter() - t1
        curve.save(os.path.join(pair_dir, f"curve-{name}.pt"), force=True, history=fit.history)
        if "line" not in rec:
            rec["t"] = [float(v) for v in prof.t]
            rec["line"] = profile_numbers(prof, "line")
            tl, te = prof.metrics["train_loss"][1], 1.0 - prof.metrics["test_acc"][1]
            rec["endpoints"] = {
                "train_loss": [float(tl[0]), float(tl[-1])],
                "test_err": [float(te[0]), float(te[-1])],
            }
        c = profile_numbers(prof, "curve")
        c.update(
            fit_seconds=fit.seconds,
            eval_seconds=eval_seconds,
            final_fit_loss=fit.history[-1]["loss"],
        )
        c["length_ratio"] = c["length"] / rec["line"]["length"]
        c["ratio_to_line"] = c["barrier_train"] / rec["line"]["barrier_train"]
        rec["curves"][name] = c
        log(
            f"  [{arch} pair {pair}] {curve_name(kind, n_bends):18s} barrier {c['barrier_train']:.4f} "
            f"(line {rec['line']['barrier_train']:.3f}, ratio {c['ratio_to_line']:.3f}), "
            f"max test err {100 * c['max_test_err']:.2f}%, fit {fit.seconds:.1f}s, eval {eval_seconds:.1f}s"
        )
    return rec


def mean_std(values, scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray(values, dtype=np.float64) * scale
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def table(records: list[dict], arch: str) -> str:
    """Markdown table for one architecture (mean ± sample std over seed pairs)."""
    rs = [r for r in records if r["arch"] == arch]
    n = len(rs)
    end_loss = [x for r in rs for x in r["endpoints"]["train_loss"]]
    end_err = [x for r in rs for x in r["endpoints"]["test_err"]]
    lines = [
        f"**{ARCHS[arch]['label']}** — {n} seed pair{'s' if n > 1 else ''}, "
        f"endpoints ({2 * n} networks): train loss {mean_std(end_loss, digits=4)}, "
        f"test error {mean_std(end_err, 100, 2)} %",
        "",
        "| path | train-loss barrier (nats) | barrier / line's | max train loss | test err at barrier (%) "
        "| max test err (%) | length / line's | train loss, int (DMC) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [("Straight line", [r["line"] for r in rs])]
    rows += [(curve_name(k, b), [r["curves"][f"{k}{b}"] for r in rs]) for k, b in CURVES]
    for label, cs in rows:
        is_line = label == "Straight line"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    mean_std([c["barrier_train"] for c in cs], digits=3 if is_line else 4),
                    "1" if is_line else mean_std([c["ratio_to_line"] for c in cs], digits=4),
                    mean_std([c["max_train_loss"] for c in cs], digits=4),
                    mean_std([c["test_err_at_barrier"] for c in cs], 100, 2),
                    mean_std([c["max_test_err"] for c in cs], 100, 2),
                    "1" if is_line else mean_std([c["length_ratio"] for c in cs], digits=2),
                    mean_std([c["int_train_loss"] for c in cs], digits=4),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def checks(records: list[dict], arch: str) -> list[str]:
    rs = [r for r in records if r["arch"] == arch]
    out = []
    lb = [r["line"]["barrier_train"] for r in rs]
    out.append(f"line barrier >= 0.3 nats in {sum(b >= 0.3 for b in lb)}/{len(rs)} pairs (min {min(lb):.3f})")
    for k, b in CURVES:
        ratios = [r["curves"][f"{k}{b}"]["ratio_to_line"] for r in rs]
        out.append(
            f"{curve_name(k, b)} barrier <= line/10 in {sum(x <= 0.1 for x in ratios)}/{len(rs)} pairs "
            f"(worst ratio {max(ratios):.3f})"
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seed pairs (default 3)")
    p.add_argument("--archs", default="mlp,cnn", help="comma-separated: mlp, cnn (default both)")
    p.add_argument(
        "--out-dir", default="repro-curves", help="where results.json, table.md, checkpoints, curves and profiles go"
    )
    p.add_argument("--points", type=int, default=None, help="values of t evaluated (default 61; 11 with --quick)")
    p.add_argument("--fit-scale", type=float, default=1.0, help="multiply the curve-fitting epochs (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed pair unless --seeds is given, 3 epochs, 11 points"
    )
    args = p.parse_args(argv)
    if args.quick and "--seeds" not in " ".join(sys.argv if argv is None else argv):
        args.seeds = 1
    if args.points is None:
        args.points = QUICK["points"] if args.quick else 61
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    for a in archs:
        if a not in ARCHS:
            p.error(f"unknown arch {a!r}; expected some of {sorted(ARCHS)}")
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)

    t_start = time.perf_counter()
    command = "python3 tools/repro_curves.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def log(msg):
        print(msg, flush=True)

    records = []
    for arch in archs:
        for pair in range(args.seeds):
            records.append(run_pair(arch, pair, args, log))
    total = time.perf_counter() - t_start

    meta = {
        "command": command.strip(),
        "library_version": ls.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} torch thread(s), no GPU",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "total_seconds": total,
        "quick": args.quick,
        "points": args.points,
        "fit_scale": args.fit_scale,
        "archs": {a: {k: v for k, v in ARCHS[a].items()} for a in archs},
    }
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": records}, f, indent=1)
    md = [
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; landscape {meta['library_version']}, torch {meta['torch_version']}, "
        f"Python {meta['python']}; {meta['date']}; total run time {total:.0f} s.",
        "",
    ]
    for arch in archs:
        md += [table(records, arch), "", *[f"- {c}" for c in checks(records, arch)], ""]
    text = "\n".join(md)
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"wrote {args.out_dir}/results.json and {args.out_dir}/table.md ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
