"""Micro-benchmark of ``fused_mlp2`` against its reference and a per-point loop.

The claim measured: evaluating a two-layer MLP at the K points of a plane (J=3 basis
vectors) with the fused kernel is several times faster than the per-point loop that
loss-landscape code runs (synthesise the weights of a point, then run the model over the
data in batches of 128).

Default problem: the digits MLP 64-2000-10, N=1797 samples (float32), K=64 points.

    python3 tools/bench_ops.py [--points 64] [--hidden 2000] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from landscape.ops import extension_available, fused_mlp2, fused_mlp2_reference


def per_point_loop(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, batch_size):
    """Baseline: one point at a time, synthesised weights, the data in batches."""
    J = coeffs.shape[1]
    outputs = []
    for c in coeffs:
        w1 = (c.view(J, 1, 1) * w1_basis).sum(0)
        b1 = c @ b1_basis
        w2 = (c.view(J, 1, 1) * w2_basis).sum(0)
        b2 = c @ b2_basis
        logits = [F.linear(torch.relu(F.linear(xb, w1, b1)), w2, b2) for xb in x.split(batch_size)]
        outputs.append(torch.cat(logits))
    return torch.stack(outputs)


def best_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1797)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=2000)
    parser.add_argument("--outputs", type=int, default=10)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--basis", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    J, H = args.basis, args.hidden
    x = torch.randn(args.samples, args.inputs, dtype=dtype)
    w1 = torch.randn(J, H, args.inputs, dtype=dtype) / args.inputs**0.5
    b1 = torch.randn(J, H, dtype=dtype) * 0.1
    w2 = torch.randn(J, args.outputs, H, dtype=dtype) / H**0.5
    b2 = torch.randn(J, args.outputs, dtype=dtype) * 0.1
    grid = torch.linspace(-1, 1, int(round(args.points**0.5)), dtype=dtype)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    coeffs = torch.stack([torch.ones_like(a), a, b], -1).reshape(-1, 3)
    if J != 3 or coeffs.shape[0] != args.points:
        coeffs = torch.randn(args.points, J, dtype=dtype)

    inputs = (x, w1, b1, w2, b2, coeffs)
    with torch.inference_mode():
        expected = per_point_loop(*inputs, args.batch_size)
        fused = fused_mlp2(*inputs, "relu")
        error = (fused - expected).abs().max().item()
        t_loop = best_time(lambda: per_point_loop(*inputs, args.batch_size), args.repeat)
        t_ref = best_time(lambda: fused_mlp2_reference(*inputs, "relu"), args.repeat)
        t_fused = best_time(lambda: fused_mlp2(*inputs, "relu"), args.repeat)

    print(
        f"fused_mlp2 benchmark: MLP {args.inputs}-{H}-{args.outputs}, N={args.samples}, "
        f"K={args.points} points, J={J}, {args.dtype}, {torch.get_num_threads()} threads"
    )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"extension available: {extension_available()}"
    )
    print(f"max |fused - loop| = {error:.3g}")
    print(f"{'method':<34}{'time (ms)':>12}{'vs loop':>10}")
    for name, t in [
        (f"per-point loop (batch {args.batch_size})", t_loop),
        ("fused_mlp2_reference (PyTorch)", t_ref),
        ("fused_mlp2 (kernel)", t_fused),
    ]:
        print(f"{name:<34}{t * 1e3:>12.1f}{t_loop / t:>9.2f}x")


if __name__ == "__main__":
    main()
