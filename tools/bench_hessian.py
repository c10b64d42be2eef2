"""Benchmark: lambda_max and lambda_min of the loss Hessian, per weight point, three ways.

At the same relative tolerance ``--tol`` and on the same HVP operator:

1. **ours**: Lanczos with full reorthogonalization for both ends at once
   (``landscape.hessian.lanczos``, forward-over-reverse HVPs by default), and the same
   batched over the cells of a map (``lanczos_batched`` on a ``BatchedHVP``: many points per
   vmap pass, one bookkeeping step for all), reported per point.
2. **eigsh** (the loss-landscape way): SciPy's ``eigsh(k=1, which="LM")`` over HVPs that
   round-trip through NumPy, lambda_max first, then lambda_min from the shifted operator
   ``H - 0.51 lambda_max I``; double-backward HVPs.
3. **power** (the PyHessian way): power iteration with double-backward HVPs, stopping when the
   Rayleigh quotient changes by less than ``tol`` relatively; then the same on
   ``H - lambda_max I`` for lambda_min.

A tight Lanczos run (tol 1e-9) is the reference for the reported errors.

    python tools/bench_hessian.py                    # CPU, MLP on digits + ResNet-20
    python tools/bench_hessian.py --device cuda --samples 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import landscape as ls
from landscape import hessian as H
from landscape.data import as_xy


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def eigsh_pair(op, tol):
    """loss-landscape: eigsh LM for lambda_max, then eigsh LM of H - 0.51 lambda_max I."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    A = op.to_scipy()
    lmax = float(eigsh(A, k=1, which="LM", tol=tol, return_eigenvectors=False)[0])
    shift = 0.51 * lmax
    B = LinearOperator(A.shape, matvec=lambda x: A.matvec(x) - shift * np.asarray(x).reshape(-1), dtype=A.dtype)
    lmin = float(eigsh(B, k=1, which="LM", tol=tol, return_eigenvectors=False)[0]) + shift
    return max(lmax, lmin), min(lmax, lmin)


def power_pair(op, tol, max_iter=1000, seed=0):
    """PyHessian: power iteration to a relative change below tol, then on H - lambda_max I."""
    g = torch.Generator().manual_seed(seed)

    def run(shift):
        v = torch.randn(op.n, generator=g, dtype=torch.float64).to(op.device, op.dtype)
        v /= v.norm()
        prev = None
        for _ in range(max_iter):
            hv = op(v) - shift * v
            e = float(hv @ v)
            v = hv / hv.norm()
            if prev is not None and abs(e - prev) <= tol * (abs(prev) + 1e-12):
                break
            prev = e
        return e

    lmax = run(0.0)
    lmin = run(lmax) + lmax
    return max(lmax, lmin), min(lmax, lmin)


class _Shifted:
    """``H - shift I`` as an operator (``.n``, ``op(v)``)."""

    def __init__(self, op, shift):
        self.op, self.shift, self.n = op, float(shift), op.n
        self.device, self.dtype = op.device, op.dtype

    def __call__(self, v):
        return self.op(v) - self.shift * v


def power_residual_pair(op, tol, max_iter):
    """Power iteration stopped on the residual ||Hv - lambda v|| <= tol |lambda_max| (the
    accuracy Lanczos is asked for), for lambda_max and then on H - lambda_max I."""
    top = H.power_iteration(op, k=1, tol=tol, max_iter=max_iter)
    lmax = float(top.eigenvalues[0])
    low = H.power_iteration(_Shifted(op, lmax), k=1, tol=tol, max_iter=max_iter)
    lmin = float(low.eigenvalues[0]) + lmax
    return max(lmax, lmin), min(lmax, lmin)


def workload(name, args):
    torch.manual_seed(0)
    if name == "mlp":
        model = ls.build_model("mlp", {"in_features": 64, "widths": [128], "num_classes": 10})
        train = ls.load_data("digits", "train", max_samples=args.samples)
        from landscape.demo import train_classifier

        train_classifier(model, ls.load_data("digits", "train"), epochs=12, seed=1)
        return "MLP 64-128-10, digits", model, train
    model = ls.build_model("resnet20", {"num_classes": 10}).eval()
    x = torch.randn(args.resnet_samples, 3, 32, 32)
    y = torch.randint(0, 10, (args.resnet_samples,))
    return "ResNet-20, CIFAR-shaped", model, (x, y)


def bench(name, args):
    label, model, data = workload(name, args)
    w = ls.Weights.from_module(model)
    dev = args.device
    n_samples = len(as_xy(data)[1])
    ours_op = H.HVP(model, w, data, device=dev)
    db_op = H.HVP(model, w, data, device=dev, method="double-backward")
    ref = H.lanczos(H.HVP(model, w, data, device=dev, dtype="fp64"), tol=1e-9, max_iter=min(300, ours_op.n))
    t_hvp, _ = timed(lambda: [ours_op(torch.randn(ours_op.n, device=dev)) for _ in range(3)], dev)
    t_hvp_db, _ = timed(lambda: [db_op(torch.randn(db_op.n, device=dev)) for _ in range(3)], dev)
    fr_op = H.HVP(model, w, data, device=dev, method="forward-over-reverse")
    fr_op(torch.randn(fr_op.n, device=dev))  # warm-up (forward-mode AD scripts its decompositions once)
    t_hvp_fr, _ = timed(lambda: [fr_op(torch.randn(fr_op.n, device=dev)) for _ in range(3)], dev)
    rows = {}
    c0 = ours_op.count
    t, r = timed(lambda: H.lanczos(ours_op, tol=args.tol, max_iter=args.max_iter, relative_to="spectrum"), dev)
    rows[f"ours: Lanczos ({ours_op.method} HVP)"] = (t, r.lambda_max, r.lambda_min, ours_op.count - c0)
    c0 = db_op.count
    t, (a, b) = timed(lambda: eigsh_pair(db_op, args.tol), dev)
    rows["eigsh + shift (double-backward HVP, NumPy)"] = (t, a, b, db_op.count - c0)
    c0 = db_op.count
    t, (a, b) = timed(lambda: power_pair(db_op, args.tol), dev)
    rows["power iteration + shift, PyHessian stop (double-backward HVP)"] = (t, a, b, db_op.count - c0)
    c0 = db_op.count
    t, (a, b) = timed(lambda: power_residual_pair(db_op, args.tol, args.power_max_iter), dev)
    rows[f"power iteration + shift, residual stop (at most {args.power_max_iter} each)"] = (
        t,
        a,
        b,
        db_op.count - c0,
    )
    if args.map_points:
        plane = ls.directions.random_plane(w, seed=0)
        g = np.linspace(-0.5, 0.5, 3)
        pts = plane.points(np.repeat(g, 3)[: args.map_points], np.tile(g, 3)[: args.map_points])
        op = H.BatchedHVP(model, pts, data, device=dev)
        t, runs = timed(
            lambda: H.lanczos_batched(
                op, tol=args.tol, max_iter=args.max_iter, relative_to="spectrum", step=ls.ops.lanczos_step
            ),
            dev,
        )
        hv = max(r.hvps for r in runs)
        rows[f"ours: batched Lanczos over {pts.K} map points, per point"] = (t / pts.K, np.nan, np.nan, hv)
    return label, n_samples, ours_op.n, (t_hvp / 3, t_hvp_db / 3, t_hvp_fr / 3), ref, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp,resnet20")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--samples", type=int, default=512, help="digits samples of the MLP loss")
    ap.add_argument("--resnet-samples", type=int, default=128)
    ap.add_argument("--map-points", type=int, default=8)
    ap.add_argument("--power-max-iter", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    print(
        f"device {args.device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"tol {args.tol}\n"
    )
    out = {}
    for name in args.models.split(","):
        label, n_samples, n, (t_hvp, t_hvp_db, t_hvp_fr), ref, rows = bench(name, args)
        print(
            f"**{label}**, {n} parameters, {n_samples} samples; one HVP {1e3 * t_hvp:.1f} ms "
            f"(ours, auto), {1e3 * t_hvp_db:.1f} ms (double-backward), {1e3 * t_hvp_fr:.1f} ms (forward-over-reverse); "
            f"reference lambda_max {ref.lambda_max:.6g}, "
            f"lambda_min {ref.lambda_min:.6g}\n"
        )
        ours = next(iter(rows.values()))[0]
        print("| Method | time per pair (s) | HVPs | rel. err. lambda_max | rel. err. lambda_min | ours is x faster |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, (t, a, b, hv) in rows.items():
            ea = abs(a - ref.lambda_max) / abs(ref.lambda_max) if np.isfinite(a) else np.nan
            eb = abs(b - ref.lambda_min) / abs(ref.lambda_min) if np.isfinite(b) else np.nan
            print(f"| {k} | {t:.3f} | {hv} | {ea:.1e} | {eb:.1e} | {t / ours:.2f} |")
        print()
        out[name] = {
            "rows": {k: list(map(float, v)) for k, v in rows.items()},
            "hvp_s": t_hvp,
            "hvp_db_s": t_hvp_db,
            "hvp_fr_s": t_hvp_fr,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
