"""Benchmark: the batched engine against the per-point loop of the loss-landscape code.

The baseline is how the reference loss-landscape code evaluates a plane: for each point,
copy ``w + a*d1 + b*d2`` into the model's parameters and evaluate the dataset at batch 128.
Both run in this one process on the same points; the script checks that they agree to
1e-5 (relative) and prints time per point, the ratio and the path the engine chose. Every
method runs once untimed first: the compiled path's warm-up (compilation) is excluded from
its time and printed beside it.

    python tools/bench_engine.py                 # all cases, CPU
    python tools/bench_engine.py --cases mlp2000 --points 64
    python tools/bench_engine.py --device cuda   # on a GPU machine
    OMP_NUM_THREADS=1 python tools/bench_engine.py --cases compiled-resnet20   # compiled fp32/bf16

The compiled cases (``compiled-resnet20``, ``compiled-resnet56``, ``compiled-vgg16bn``) time
the compiled path at fp32 and bf16 on a plane of ``--compiled-points`` points for each of
``--compiled-samples`` CIFAR-shaped image counts; their error column is against the fp64 loop
(the loop row's too), and the bf16 row adds its loss error over PyTorch's own bf16 error (the
eager model cast to bf16).
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


def filter_normalized_direction(model: torch.nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random direction, each filter scaled to the norm of the weights' filter; biases and
    BatchNorm zero (loss-landscape's default)."""
    d = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or t.dim() <= 1:
            d[name] = torch.zeros_like(t) if t.is_floating_point() else t.clone()
            continue
        r = torch.randn(t.shape, generator=gen, dtype=t.dtype)
        for i in range(t.shape[0]):
            r[i] *= t[i].norm() / (r[i].norm() + 1e-10)
        d[name] = r
    return d


def loop_baseline(model, w0, d1, d2, coords, x, y, batch_size=128):
    """loss-landscape style: copy weights into the model per point, evaluate at batch 128."""
    model.eval()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    losses, accs = [], []
    with torch.no_grad():
        for a, b in coords:
            for name, p in list(params.items()) + list(buffers.items()):
                if p.is_floating_point():
                    p.copy_(w0[name] + a * d1[name] + b * d2[name])
            loss, correct = 0.0, 0
            for i in range(0, x.shape[0], batch_size):
                out = model(x[i : i + batch_size]).float()
                loss += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
                correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
            losses.append(loss / x.shape[0])
            accs.append(correct / x.shape[0])
    return np.array(losses), np.array(accs)


def plane_points(model, n_points, device):
    """A filter-normalized plane through ``model``: (w0, d1, d2, coords, points), a square grid
    of about ``n_points`` on [-1, 1]^2."""
    gen = torch.Generator().manual_seed(0)
    model = model.to(device).eval()
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d1 = filter_normalized_direction(model.cpu(), gen)
    d2 = filter_normalized_direction(model.cpu(), gen)
    model.to(device)
    d1 = {k: v.to(device) for k, v in d1.items()}
    d2 = {k: v.to(device) for k, v in d2.items()}
    side = int(round(np.sqrt(n_points)))
    grid = np.linspace(-1, 1, side)
    coords = [(a, b) for a in grid for b in grid]
    basis = [ls.Weights.from_module(model)]
    for d in (d1, d2):
        basis.append(ls.Weights(d, basis[0].layout))
    points = ls.PointSet.from_weights(basis, [[1.0, a, b] for a, b in coords], names=["w", "d1", "d2"])
    return w0, d1, d2, coords, points


def best_of(fn, repeats, device, warm=None):
    """(best time of ``repeats`` calls, the last output), after one untimed warm-up call
    (``warm()`` when given: a large grid warms up on one point, not all of them)."""
    (warm or fn)()
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_case(name, model, x, y, n_points, device, paths, repeats):
    model = model.to(device).eval()
    w0, d1, d2, coords, points = plane_points(model, n_points, device)
    x, y = x.to(device), y.to(device)

    def timed(fn):
        return best_of(fn, repeats, device)

    t_loop, (loss_ref, acc_ref) = timed(lambda: loop_baseline(model, w0, d1, d2, coords, x, y))
    rows = [
        {"case": name, "method": "loop (batch 128, copy weights)", "s_per_point": t_loop / len(coords), "ratio": 1.0}
    ]
    for path in paths:
        warmups = []  # compile seconds of each call (the first, untimed call pays them)

        def engine(path=path, warmups=warmups):
            res = ls.evaluate(model, points, (x, y), device=device, path=path, progress=False)
            warmups.append(res.info.get("compile_seconds", 0.0))
            return res

        try:
            t_eng, res = timed(engine)
        except ValueError as e:  # path not applicable to this model
            rows.append({"case": name, "method": f"engine path={path}", "error": str(e)[:80]})
            continue
        rel = float(np.max(np.abs(res["loss"] - loss_ref) / np.abs(loss_ref)))
        acc_diff = float(np.max(np.abs(res["acc"] - acc_ref)))
        if rel > 1e-5:
            raise SystemExit(f"{name}: engine path={path} disagrees with the loop: max relative loss error {rel:.2e}")
        rows.append(
            {
                "case": name,
                "method": f"engine path={path} -> {res.path}",
                "s_per_point": t_eng / len(coords),
                "ratio": t_loop / t_eng,
                "max_rel_err": rel,
                "max_acc_diff": acc_diff,
                "points_per_pass": res.points_per_pass,
                "batch_size": res.batch_size,
                "compile_s": max(warmups),
            }
        )
    return rows


def _reference_points(n: int, most: int = 16) -> np.ndarray:
    """Indices of at most ``most`` points spread over a run of ``n``: where a large grid is
    checked against the float64 loop (all of a small one)."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64))


def compiled_case(name, model, x, y, n_points, device, repeats, precisions=("fp32", "bf16")):
    """The compiled path at ``precisions`` against the loss-landscape loop (fp32, batch 128)
    on one plane, all in this process: time per point (best of ``repeats``, the warm-up call
    excluded and its compilation reported), the fp32 loss's relative error against the fp64
    loop, and the bf16 loss's error against the fp64 loop over PyTorch's own bf16 error (the
    eager model and inputs cast to bf16, the same loop). On a grid of more than 16 points the
    errors are measured at 16 points spread over it."""
    import copy

    model = model.to(device).eval()
    w0, d1, d2, coords, points = plane_points(model, n_points, device)
    x, y = x.to(device), y.to(device)
    t_loop, (loss_loop, _) = best_of(
        lambda: loop_baseline(model, w0, d1, d2, coords, x, y),
        repeats,
        device,
        warm=lambda: loop_baseline(model, w0, d1, d2, coords[:1], x, y),
    )
    sub = _reference_points(len(coords))
    ref = ls.evaluate(model, points.subset(sub), (x, y), device=device, precision="fp64", path="loop", progress=False)
    ref = ref["loss"]
    pt16_err = None
    if "bf16" in precisions:
        low = copy.deepcopy(model).to(torch.bfloat16)
        loss_pt16, _ = loop_baseline(low, w0, d1, d2, [coords[i] for i in sub], x.to(torch.bfloat16), y)
        pt16_err = float(np.max(np.abs(loss_pt16 - ref)))
    loop_err = float(np.max(np.abs(loss_loop[sub] - ref) / np.abs(ref)))
    return _compiled_rows(
        name, model, points, (x, y), "loss", ref, t_loop, loop_err, pt16_err, device, repeats, sub, precisions
    )


def _compiled_rows(
    name,
    model,
    points,
    data,
    metric,
    ref,
    t_loop,
    loop_err,
    pt16_err,
    device,
    repeats,
    sub,
    precisions=("fp32", "bf16"),
):
    """The loop's row and the compiled rows of one case (see :func:`compiled_case`); ``ref``
    holds the float64 loop's values at the points ``sub``."""
    rows = [
        {
            "case": name,
            "method": "loop (batch 128, copy weights)",
            "s_per_point": t_loop / points.K,
            "ratio": 1.0,
            "max_rel_err": loop_err,
            "total_s": t_loop,
        }
    ]
    for precision in precisions:
        warmups = []

        def engine(precision=precision, warmups=warmups, pts=points):
            res = ls.evaluate(
                model, pts, data, (metric,), device=device, precision=precision, path="compiled", progress=False
            )
            warmups.append(res.info.get("compile_seconds", 0.0))
            return res

        t_eng, res = best_of(engine, repeats, device, warm=lambda e=engine: e(pts=points.subset([0])))
        if res.path != "compiled":
            raise SystemExit(f"{name}: the compiled path fell back to {res.path} at {precision}")
        err = np.abs(res[metric][sub] - ref)
        row = {
            "case": name,
            "method": f"compiled {precision}",
            "s_per_point": t_eng / points.K,
            "ratio": t_loop / t_eng,
            "max_rel_err": float(np.max(err / np.abs(ref))),
            "compile_s": max(warmups),
            "batch_size": res.batch_size,
            "total_s": t_eng,
        }
        if precision == "fp32" and row["max_rel_err"] > 1e-5:
            raise SystemExit(f"{name}: compiled fp32 is {row['max_rel_err']:.2e} from the fp64 loop (more than 1e-5)")
        if precision == "bf16":
            row["bf16_err_ratio"] = float(np.max(err)) / pt16_err
        rows.append(row)
    return rows


def lm_loop_baseline(model, points, ids, batch_size=128):
    """loss-landscape style for a causal LM: load each point's tensors into the model
    (``load_state_dict``), next-token cross-entropy over every predicted token, batch 128."""
    import torch.nn.functional as F

    losses = []
    with torch.no_grad():
        for k in range(points.K):
            model.load_state_dict(points.point(k), strict=False)
            total, count = 0.0, 0
            for i in range(0, ids.shape[0], batch_size):
                b = ids[i : i + batch_size]
                logits = model(input_ids=b).logits.float()[:, :-1]
                total += float(
                    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum")
                )
                count += b[:, 1:].numel()
            losses.append(total / count)
    return np.array(losses)


def compiled_lm_case(n_seq, n_points, device, repeats):
    """The small GPT-2 language model of RESULTS.md (vocabulary 256, 128 positions, width 128,
    4 layers, 4 heads, tied head; random weights) on ``n_seq`` sequences of 128 bytes of the
    standard library's ``json`` sources: a filter-normalized plane through the
    compiled path at fp32 and bf16 against the loss-landscape loop, as :func:`compiled_case`."""
    import copy
    import os

    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=256, n_positions=128, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).to(device).eval()
    root = os.path.dirname(os.__file__)
    ids = ls.load_data(f"text:{root}/json:seq=128:ext=py", "train").x[:n_seq].to(device)
    w = ls.Weights.from_module(model)
    side = int(round(np.sqrt(n_points)))
    grid = np.linspace(-1, 1, side)
    points = ls.directions.random_plane(w, seed=0).grid(grid, grid)
    base = copy.deepcopy(model)
    t_loop, loss_loop = best_of(
        lambda: lm_loop_baseline(base, points, ids),
        repeats,
        device,
        warm=lambda: lm_loop_baseline(base, points.subset([0]), ids),
    )
    data = (ids, ids)
    ref = ls.evaluate(
        model, points, data, ("token_loss",), device=device, precision="fp64", path="loop", progress=False
    )
    ref = ref["token_loss"]
    low = copy.deepcopy(model).to(torch.bfloat16)
    pt16_err = float(np.max(np.abs(lm_loop_baseline(low, points.to(dtype=torch.bfloat16), ids) - ref)))
    loop_err = float(np.max(np.abs(loss_loop - ref) / np.abs(ref)))
    name = f"GPT-2 LM (4x128), {n_seq} x 128 bytes, {points.K} pts"
    sub = np.arange(points.K)
    return _compiled_rows(
        name, model, points, data, "token_loss", ref, t_loop, loop_err, pt16_err, device, repeats, sub
    )


def plane_case(grid: int, repeats: int):
    """A whole grid x grid filter-normalized plane of the digits MLP 64-2000-10, train and test
    splits: ``compute_surface`` end to end (HDF5 file written) against the loss-landscape loop."""
    import tempfile

    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [2000], "num_classes": 10}).eval()
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    w = ls.Weights.from_module(model)
    plane = ls.directions.random_plane(w, seed=0)
    xs = np.linspace(-1, 1, grid)
    d1, d2 = plane.basis[1].tensors, plane.basis[2].tensors
    coords = [(a, b) for a in xs for b in xs]
    t = time.perf_counter()
    ref = {s: loop_baseline(model, w.tensors, d1, d2, coords, d.x, d.y) for s, d in (("train", train), ("test", test))}
    t_loop = time.perf_counter() - t
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            t = time.perf_counter()
            res = ls.compute_surface(
                model, plane, xs, xs, splits={"train": train, "test": test}, out=f"{tmp}/plane{r}.h5", progress=False
            )
            best = min(best, time.perf_counter() - t)
    rel = max(float(np.max(np.abs(res[f"{s}_loss"].reshape(-1) - ref[s][0]) / ref[s][0])) for s in ref)
    if rel > 1e-5:
        raise SystemExit(f"plane: engine disagrees with the loop: max relative loss error {rel:.2e}")
    name = f"digits MLP 64-2000-10, {grid}x{grid} plane"
    return [
        {
            "case": name,
            "method": "loop (batch 128, copy weights)",
            "s_per_point": t_loop / len(coords),
            "ratio": 1.0,
            "total_s": t_loop,
        },
        {
            "case": name,
            "method": f"compute_surface -> {res.path} (+ HDF5)",
            "s_per_point": best / len(coords),
            "ratio": t_loop / best,
            "max_rel_err": rel,
            "total_s": best,
        },
    ]


#: the compiled path's cases: fp32 and bf16 rows against the loop (tools/bench_engine.py --cases ...)
COMPILED_CASES = {"compiled-resnet20": "resnet20", "compiled-resnet56": "resnet56", "compiled-vgg16bn": "vgg16_bn"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="mlp2000,mlp3,plane51,resnet20")
    ap.add_argument("--points", type=int, default=64, help="points of the plane (a square grid)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resnet-samples", type=int, default=512, help="synthetic CIFAR samples for ResNet-20")
    ap.add_argument("--compiled-samples", default="256,512", help="CIFAR-shaped samples of the compiled cases")
    ap.add_argument("--compiled-points", type=int, default=16, help="points of the compiled cases' plane")
    ap.add_argument("--compiled-repeats", type=int, default=3, help="timed repetitions of the compiled cases")
    ap.add_argument("--compiled-precisions", default="fp32,bf16", help="precisions of the compiled conv-net cases")
    ap.add_argument("--lm-sequences", type=int, default=64, help="128-byte sequences of the compiled-gpt2 case")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    digits = ls.load_data("digits", "all")
    rows = []
    for case in args.cases.split(","):
        if case == "mlp2000":
            model = ls.build_model("mlp", {"in_features": 64, "widths": [2000], "num_classes": 10})
            rows += run_case(
                "digits MLP 64-2000-10",
                model,
                digits.x,
                digits.y,
                args.points,
                device,
                ["auto", "vmap", "loop"],
                args.repeats,
            )
        elif case == "mlp3":
            model = ls.build_model("mlp", {"in_features": 64, "widths": [512, 512], "num_classes": 10})
            rows += run_case(
                "digits MLP 64-512-512-10",
                model,
                digits.x,
                digits.y,
                args.points,
                device,
                ["auto", "vmap", "loop"],
                args.repeats,
            )
        elif case == "plane51":
            rows += plane_case(51, max(1, args.repeats - 1))
        elif case == "resnet20":
            data = ls.load_data("synthetic:cifar10", "test", max_samples=args.resnet_samples)
            model = ls.build_model("resnet20")
            n = min(args.points, 16) if device.type == "cpu" else args.points
            rows += run_case(
                f"ResNet-20, {len(data)} synthetic CIFAR",
                model,
                data.x,
                data.y,
                n,
                device,
                ["auto", "compiled", "vmap"],
                max(1, args.repeats - 2),
            )
        elif case == "compiled-gpt2":
            rows += compiled_lm_case(args.lm_sequences, args.compiled_points, device, args.compiled_repeats)
        elif case in COMPILED_CASES:
            for n in (int(v) for v in args.compiled_samples.split(",")):
                data = ls.load_data("synthetic:cifar10", "test", max_samples=n)
                torch.manual_seed(0)
                model = ls.build_model(COMPILED_CASES[case])
                label = f"{COMPILED_CASES[case]}, {len(data)} CIFAR, {args.compiled_points} pts"
                precisions = tuple(args.compiled_precisions.split(","))
                rows += compiled_case(
                    label, model, data.x, data.y, args.compiled_points, device, args.compiled_repeats, precisions
                )
        else:
            raise SystemExit(
                f"unknown case {case!r}; expected some of mlp2000, mlp3, plane51, resnet20, compiled-gpt2, {', '.join(COMPILED_CASES)}"
            )
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"landscape {ls.__version__}, compiled ops: {ls.ops.extension_available()}, device {device}"
    )
    print(f"{'case':34s} {'method':36s} {'ms/point':>9s} {'vs loop':>8s}  {'max rel err':>11s}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:34s} {r['method']:36s} {'n/a':>9s}  ({r['error']})")
            continue
        err = f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else ""
        total = f"  (total {r['total_s']:.1f} s)" if "total_s" in r else ""
        total += f"  (error {r['bf16_err_ratio']:.2f}x PyTorch bf16's)" if "bf16_err_ratio" in r else ""
        total += f"  (warm-up {r['compile_s']:.1f} s, excluded)" if r.get("compile_s") else ""
        print(f"{r['case']:34s} {r['method']:36s} {1e3 * r['s_per_point']:9.2f} {r['ratio']:7.2f}x  {err:>11s}{total}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
