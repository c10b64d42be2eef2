"""Benchmark of the fused Lanczos step op against its pure-PyTorch reference.

The claim measured: one step of batched Lanczos with full reorthogonalisation
(``landscape.ops.lanczos_step``: recurrence, two classical Gram-Schmidt passes, norm and
scaling fused, three sweeps over the basis) is faster than ``lanczos_step_reference`` (four
gemv sweeps over the basis through BLAS, and a temporary per operation) at the sizes the
Hessian maps use: m Lanczos runs in lock step (1, one point; 8 or 49, the cells of a surface
map), n parameters (1e4: a digits MLP; 2.7e5: ResNet-20), step j of a basis of S = 41 slots.

Each time is the median of ``--repeat`` calls after a warm-up, the two functions called
alternately in the same run on the same inputs, for each thread count in ``--threads``.
Prints a markdown table (one row per configuration; ratio = reference / op; per-row
reference = the reference called on one row at a time, which replaces its batched bmm by one
BLAS gemv per row -- much faster than the bmm for m > 1 on MKL builds, so the fairer
baseline there; rel. diff = the largest difference of the outputs relative to the
reference's largest value; op basis GB/s = the three sweeps over the j + 1 basis vectors
divided by the op's time) with the device, versions and date; CUDA rows are added when a GPU
is present.

    python3 tools/bench_lanczos.py [--threads 1 2] [--repeat 7] [--dtype float32]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import time

import torch

from landscape.ops import extension_available, lanczos_step, lanczos_step_reference


def paired_median_times(fn_a, fn_b, repeat: int, sync=None) -> tuple[float, float]:
    """Median wall times of ``fn_a()`` and ``fn_b()`` over ``repeat`` calls each, alternated
    (a, b, a, b, ...) so that both see the same background load; one warm-up call each."""

    def timed(fn):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        return time.perf_counter() - start

    timed(fn_a)
    timed(fn_b)
    times_a, times_b = [], []
    for _ in range(repeat):
        times_a.append(timed(fn_a))
        times_b.append(timed(fn_b))
    return statistics.median(times_a), statistics.median(times_b)


def make_inputs(m: int, S: int, n: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random Q [m, S, n] (scaled like unit vectors), w [m, n], beta_prev [m]."""
    g = torch.Generator().manual_seed(seed)
    Q = (torch.randn(m, S, n, generator=g, dtype=dtype) / n**0.5).to(device)
    w = torch.randn(m, n, generator=g, dtype=dtype).to(device)
    beta_prev = torch.rand(m, generator=g, dtype=dtype).to(device)
    return Q, w, beta_prev


def relative_difference(out, ref) -> float:
    """max over (alpha, beta, q_next) of max |out - ref| / max |ref|."""
    return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-300)) for a, b in zip(out, ref))


def reference_row_by_row(Q, w, j, beta_prev, reorthogonalize):
    """The reference called on one row at a time (BLAS gemv per row instead of bmm)."""
    outs = [
        lanczos_step_reference(Q[i : i + 1], w[i : i + 1], j, beta_prev[i : i + 1], reorthogonalize)
        for i in range(Q.shape[0])
    ]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def bench_device(device, grid, S, dtype, repeat, reorthogonalize):
    """Rows (m, n, j, reference s, op s, per-row reference s, relative difference, op basis GB/s)."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for m, n in grid:
        Q, w, beta_prev = make_inputs(m, S, n, dtype, device)
        for j in (10, S - 1):
            args = (Q, w, j, beta_prev, reorthogonalize)
            op = functools.partial(lanczos_step, *args)
            with torch.no_grad():
                diff = relative_difference(op(), lanczos_step_reference(*args))
                t_ref, t_op = paired_median_times(functools.partial(lanczos_step_reference, *args), op, repeat, sync)
                if m > 1:
                    t_rows, _ = paired_median_times(functools.partial(reference_row_by_row, *args), op, repeat, sync)
                else:
                    t_rows = t_ref
            sweeps = 3 if reorthogonalize == "full" else 0
            basis_bytes = sweeps * (j + 1) * m * n * Q.element_size()
            rows.append((m, n, j, t_ref, t_op, t_rows, diff, basis_bytes / t_op / 1e9))
        del Q, w, beta_prev
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 8, 49], help="values of m")
    parser.add_argument("--params", type=int, nargs="+", default=[10_000, 270_000], help="values of n")
    parser.add_argument("--slots", type=int, default=41, help="S, the basis slots (j = 10 and S - 1)")
    parser.add_argument("--reorthogonalize", choices=["full", "none"], default="full")
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    grid = [(m, n) for n in args.params for m in args.points]
    print(
        f"lanczos_step benchmark, {args.dtype}, S={args.slots}, reorthogonalize={args.reorthogonalize}, "
        f"median of {args.repeat}; {datetime.date.today().isoformat()}"
    )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"extension available: {extension_available()}"
    )
    print()
    print(
        "| device | threads | m | n | j | reference (ms) | op (ms) | ratio | "
        "per-row reference (ms) | ratio | rel. diff | op basis GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def print_rows(device_name, threads, rows):
        for m, n, j, t_ref, t_op, t_rows, diff, bandwidth in rows:
            print(
                f"| {device_name} | {threads} | {m} | {n} | {j} | {t_ref * 1e3:.3f} | {t_op * 1e3:.3f} | "
                f"{t_ref / t_op:.2f}x | {t_rows * 1e3:.3f} | {t_rows / t_op:.2f}x | {diff:.1e} | {bandwidth:.1f} |"
            )

    for threads in args.threads:
        torch.set_num_threads(threads)
        print_rows("cpu", threads, bench_device("cpu", grid, args.slots, dtype, args.repeat, args.reorthogonalize))
    if torch.cuda.is_available():
        rows = bench_device("cuda", grid, args.slots, dtype, args.repeat, args.reorthogonalize)
        print_rows(torch.cuda.get_device_name(), "-", rows)


if __name__ == "__main__":
    main()
