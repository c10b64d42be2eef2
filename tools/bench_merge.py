"""Benchmark: 256 merges of one base through the engine against one merge at a time.

The merges are the lambda-plane of task arithmetic with two task vectors (16 x 16 values of
(lambda_1, lambda_2) in [0, 1.5]^2: ``base + l1 * tau_1 + l2 * tau_2``), as
:func:`landscape.merge.task_arithmetic_plane` writes them: coefficients over
``[base, ft_1, ft_2]``, which :func:`landscape.merge.evaluate_merges` evaluates many per pass.
Two one-at-a-time baselines run in the same process on the same merges and data, with the same
metrics (mean cross-entropy and accuracy):

``single``
    a loop of single-point evaluations: each merge built as Weights (``base + l1 tau_1 +
    l2 tau_2`` tensor by tensor) and evaluated alone with :func:`landscape.evaluate`;
``torch``
    plain PyTorch as a user would write it: ``load_state_dict`` of each merge, then the data in
    batches of 128 (loss-landscape's loop).

The script checks that all three agree (loss to 1e-5 relative, accuracy to 1e-9: the same
predictions) and prints seconds, merges per second and the ratios. Each method runs once
untimed first. Time it with one thread::

    OMP_NUM_THREADS=1 python tools/bench_merge.py                 # every case
    OMP_NUM_THREADS=1 python tools/bench_merge.py --cases mlp3 --grid 8
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

import landscape as ls
from landscape import merge

CASES = {
    # name: (model spec, data spec, samples)
    "mlp2": (("mlp", {"in_features": 64, "widths": [128], "num_classes": 10}), "digits", None),
    "mlp3": (("mlp", {"in_features": 64, "widths": [64, 64], "num_classes": 10}), "digits", None),
    "mlp-wide": (("mlp", {"in_features": 784, "widths": [1024, 1024], "num_classes": 10}), "synthetic:mnist", 2048),
    "cnn": (("small_cnn", {"width": 16, "batch_norm": False}), "digits:image", None),
}


def checkpoints(spec, seed=0, spread=0.05):
    """A base and two 'fine-tunes' (base + Gaussian noise): timing does not depend on training."""
    torch.manual_seed(seed)
    model = ls.build_model(*spec).eval()
    base = ls.Weights.from_module(model)
    fts = []
    for _ in range(2):
        t = {k: v + spread * torch.randn_like(v) if v.is_floating_point() else v for k, v in base.tensors.items()}
        fts.append(ls.Weights(t, base.layout))
    return model, base, fts


def merged(base, fts, a, b):
    out = {}
    for name, v in base.tensors.items():
        if v.is_floating_point():
            out[name] = v + a * (fts[0][name] - v) + b * (fts[1][name] - v)
        else:
            out[name] = v
    return ls.Weights(out, base.layout)


def run_engine(model, grid, data):
    res = merge.evaluate_merges(model, grid, {"d": data}, metrics=("loss", "acc"), progress=False)
    return res["d_loss"].ravel(), res["d_acc"].ravel(), res.path


def run_single(model, base, fts, cells, data):
    loss, acc = [], []
    for a, b in cells:
        r = ls.evaluate(model, [merged(base, fts, a, b)], data, ["loss", "acc"], progress=False)
        loss.append(float(r["loss"][0]))
        acc.append(float(r["acc"][0]))
    return np.array(loss), np.array(acc)


def run_torch(model, base, fts, cells, data, batch_size=128):
    loss, acc = [], []
    x, y = data.x, data.y
    with torch.no_grad():
        for a, b in cells:
            model.load_state_dict(merged(base, fts, a, b).state_dict())
            total, correct = 0.0, 0
            for i in range(0, len(y), batch_size):
                out = model(x[i : i + batch_size])
                total += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
                correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
            loss.append(total / len(y))
            acc.append(correct / len(y))
    return np.array(loss), np.array(acc)


def timed(fn):
    fn()  # untimed warm-up
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(name: str, grid_n: int) -> dict:
    spec, data_spec, samples = CASES[name]
    model, base, fts = checkpoints(spec)
    data = ls.load_data(data_spec, "test", max_samples=samples)
    lam = np.linspace(0.0, 1.5, grid_n)
    grid = merge.task_arithmetic_plane(base, fts, lam, lam)
    cells = [(a, b) for a in lam for b in lam]
    t_engine, (l_e, a_e, path) = timed(lambda: run_engine(model, grid, data))
    t_single, (l_s, a_s) = timed(lambda: run_single(model, base, fts, cells, data))
    t_torch, (l_t, a_t) = timed(lambda: run_torch(model, base, fts, cells, data))
    for label, lv, av in (("single", l_s, a_s), ("torch", l_t, a_t)):
        np.testing.assert_allclose(l_e, lv, rtol=1e-5, err_msg=f"{name}: engine against {label}")
        np.testing.assert_allclose(a_e, av, atol=1e-9, err_msg=f"{name}: accuracy, engine against {label}")
    k = len(cells)
    return {
        "case": name,
        "merges": k,
        "samples": len(data),
        "weights": base.layout.size,
        "engine_path": path,
        "engine_s": t_engine,
        "single_s": t_single,
        "torch_s": t_torch,
        "ratio_single": t_single / t_engine,
        "ratio_torch": t_torch / t_engine,
        "max_rel_loss_diff": float(np.max(np.abs(l_e - l_s) / np.abs(l_s))),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--grid", type=int, default=16, help="lambda values per axis (default 16: 256 merges)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    print(
        f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    rows = []
    print("| case | merges | samples | weights | engine path | engine s | single-point loop s | torch loop s | "
          "ratio vs single | ratio vs torch |")  # fmt: skip
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in args.cases.split(","):
        r = bench(name.strip(), args.grid)
        rows.append(r)
        print(
            f"| {r['case']} | {r['merges']} | {r['samples']} | {r['weights']} | {r['engine_path']} | "
            f"{r['engine_s']:.2f} | {r['single_s']:.2f} | {r['torch_s']:.2f} | {r['ratio_single']:.1f}x | "
            f"{r['ratio_torch']:.1f}x |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
