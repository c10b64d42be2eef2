"""Benchmark: building and evaluating distribution-based connections of a 512-unit MLP.

Two choices made for explicit paths (every point its own weight vector), each timed against
the alternative on the same work, with the results checked to agree:

1. **Engine path for large bases.** OT's stage 2 between two 64-512-10 digits MLPs is ~500
   swaps, ~1,000 points over a basis of ~500 states. ``auto`` now sends it to the loop; the
   fused kernel (what ``auto`` chose before) mixes all ``J`` basis products per point.
2. **Least squares of weight adjustment.** One WA problem per path point (1,257 x 513 float64
   features): ``torch.linalg.lstsq(driver="gelsd")`` (what WA used before) against SciPy's
   ``gelsy`` (used now), and OT + WA's reuse of the solution for reordered layers (only swap
   midpoints are solved).

    python tools/bench_connect.py             # CPU, one thread
    python tools/bench_connect.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import landscape as ls
from landscape.connect import lstsq as lstsq_mod
from landscape.connect import ot_path, wa_path
from landscape.demo import train_classifier


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ls.load_data("digits", "train")
    kwargs = {"in_features": 64, "widths": [args.width], "num_classes": 10}
    nets = []
    for s in (1, 2):
        torch.manual_seed(s)
        m = ls.build_model("mlp", kwargs)
        train_classifier(m, train, epochs=args.epochs, seed=s)
        nets.append(ls.Weights.from_module(m))
    model = ls.build_model("mlp", kwargs)
    A, B = nets
    rows = []

    # 1. engine path for OT stage 2 ------------------------------------------------
    path = ot_path(A, B, model, np.linspace(0, 1, 21))
    pts = path.stage2
    t_fused, r_fused = timed(lambda: ls.evaluate(model, pts, train, path="fused", progress=False))
    t_auto, r_auto = timed(lambda: ls.evaluate(model, pts, train, progress=False))
    err = float(np.max(np.abs(r_fused["loss"] - r_auto["loss"]) / np.abs(r_fused["loss"])))
    rows.append(
        {
            "case": f"OT stage 2: {pts.K} points, basis J={pts.J}, {len(train)} samples",
            "before": ("fused", t_fused),
            "after": (f"auto -> {r_auto.path}", t_auto),
            "max_rel_err": err,
        }
    )

    # 2. WA least squares ----------------------------------------------------------
    H = torch.relu(train.x.double() @ A["1.weight"].double().T + A["1.bias"].double())
    H = torch.cat([H, torch.ones(len(H), 1, dtype=torch.float64)], 1)
    Y = train.x.double() @ torch.randn(64, 10, dtype=torch.float64)
    t_gelsd, s1 = timed(lambda: torch.linalg.lstsq(H, Y, driver="gelsd").solution, repeat=5)
    t_gelsy, s2 = timed(lambda: lstsq_mod._lstsq_cpu(H, Y), repeat=5)
    rows.append(
        {
            "case": f"one WA least-squares problem, {H.shape[0]} x {H.shape[1]}",
            "before": ("torch gelsd", t_gelsd),
            "after": ("SciPy gelsy", t_gelsy),
            "max_rel_err": float((s1 - s2).abs().max() / s1.abs().max()),
        }
    )
    t_wa, (tm, wa_pts) = timed(lambda: wa_path(A, B, model, train, np.linspace(0, 1, 21), method="ot"))
    n_pts = len(tm)
    n_mid = len(path.swaps)
    rows.append(
        {
            "case": f"OT + WA path: {n_pts} points ({n_mid} swap midpoints solved, the rest reordered)",
            "before": ("one gelsd per point (estimate)", n_pts * t_gelsd),
            "after": ("gelsy, reordered layers reuse", t_wa),
            "max_rel_err": None,
        }
    )

    env = {
        "torch": torch.__version__,
        "landscape": ls.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
    }
    print(f"torch {env['torch']}, {env['cpu']}, {args.threads} thread(s)")
    print("| case | before | s | after | s | speed-up | max rel. err |")
    print("|---|---|---:|---|---:|---:|---:|")
    for r in rows:
        (bn, bt), (an, at) = r["before"], r["after"]
        e = "" if r["max_rel_err"] is None else f"{r['max_rel_err']:.1e}"
        print(f"| {r['case']} | {bn} | {bt:.2f} | {an} | {at:.2f} | {bt / at:.1f}x | {e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
