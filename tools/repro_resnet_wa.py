"""Weight adjustment of residual networks on digits: CIFAR ResNet-20 connected by every method.

Issue 6 asks for Linear, Arc, OT and their WA combinations on ResNet-20. WA hands a residual
network over at the cuts of its graph (the stem, each block's sum, the logits; see
``landscape.connect.adjust_graph``). For each seed pair this trains two ResNet-20 (``width``
channels in the first stage, ``digits:image``), runs ``compare_connections`` with BatchNorm
statistics recomputed on the train set at every point, and prints the worst accuracy along
each path (mean and spread over the pairs) and the worst WA step.

Usage::

    python3 tools/repro_resnet_wa.py --out-dir /tmp/repro-resnet      # 2 seed pairs
    python3 tools/repro_resnet_wa.py --pairs 1 --points 3 --epochs 3  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import landscape as ls
from landscape.connect import compare_connections
from landscape.connect.registry import row_label
from landscape.demo import train_classifier

METHODS = ["linear", "arc", "ot", "linear+wa", "arc+wa", "ot+wa"]


def _network(args, seed: int) -> ls.Weights:
    path = os.path.join(args.out_dir, f"resnet20-w{args.width}-e{args.epochs}-s{seed}.pt")
    torch.manual_seed(seed)
    model = ls.build_model("resnet20", {"in_channels": 1, "width": args.width})
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train_classifier(model, ls.load_data("digits:image", "train"), epochs=args.epochs, seed=seed)
        torch.save(model.state_dict(), path)
    return ls.Weights.from_module(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/repro-resnet")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--points", type=int, default=6, help="points per path (per WA step)")
    p.add_argument("--ot-neuron", choices=("blc", "bl"), default="blc", help="what OT matches (default blc)")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.time()
    splits = {"train": ls.load_data("digits:image", "train"), "test": ls.load_data("digits:image", "test")}
    model = ls.build_model("resnet20", {"in_channels": 1, "width": args.width})
    reports = []
    for i in range(args.pairs):
        a, b = _network(args, 2 * i + 1), _network(args, 2 * i + 2)
        out = os.path.join(args.out_dir, f"pair{i}-p{args.points}.h5")
        resume = os.path.exists(out)
        reports.append(
            compare_connections(
                model,
                a,
                b,
                splits,
                methods=METHODS,
                points=args.points,
                wa_form="bias",  # the only weight adjustment of residual networks
                neuron=args.ot_neuron,
                bn="recompute",
                out=out,
                resume=resume,
            )
        )
    rows = {}
    lines = ["| Method | train | test | worst WA step (test) |", "|---|---:|---:|---:|"]
    for m in METHODS:
        cells = []
        for s in ("train", "test"):
            v = 100 * np.array([r.worst_acc(m, s) for r in reports])
            rows.setdefault(m, {})[s] = v.tolist()
            cells.append(f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}")
        step = "-"
        if m.endswith("+wa"):
            worst = [min(r.stages(m), key=lambda k, r=r: r.worst_acc(m, "test", k)) for r in reports]
            step = ", ".join(str(k) for k in worst)
        lines.append(f"| {row_label(m, wa_form='bias', neuron=args.ot_neuron)} | {cells[0]} | {cells[1]} | {step} |")
    ends = [100 * r.endpoint_acc("train") for r in reports]
    ends_t = [100 * r.endpoint_acc("test") for r in reports]
    lines.append(f"| End points | {np.mean(ends):.2f} | {np.mean(ends_t):.2f} | - |")
    print("\n".join(lines))
    info = {
        "rows": rows,
        "seconds": time.time() - t0,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "args": vars(args),
    }
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(info, f, indent=1)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{time.time() - t0:.0f} s; -> {args.out_dir}/results.md")


if __name__ == "__main__":
    main()
