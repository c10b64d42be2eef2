"""Benchmark: peak memory of a whole run through two large checkpoints.

A GPT-2-small-shaped model (124M parameters; vocabulary 50,257, 12 layers, 768 wide) is saved
twice with ``save_pretrained`` (two different initialisations), then a fresh process runs what
a user runs: build the model from its folder (``hf:DIR``), load both checkpoints, evaluate a
21-point line between them on a few dict batches (``token_loss``). The peak resident memory of
that process is counted from just after ``import landscape`` to the end, and compared with

- (J + 2) x S: the J = 2 checkpoints, the model and one point (S = one checkpoint's size);
- K x S: the naive way, every point of the line built at once (K = 21).

Run once in fp32 and once in bf16 (checkpoints, model and compute).

    python tools/bench_memory.py                   # both dtypes, GPT-2 small
    python tools/bench_memory.py --layers 2        # a smaller model, for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak counts from here."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(args) -> None:
    """The measured run (in its own process)."""
    import torch

    import landscape as ls

    torch.set_num_threads(args.threads)
    _reset_peak()
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    model = ls.build_model(f"hf:{args.a}")
    wa = ls.load_checkpoint(args.a, model)
    wb = ls.load_checkpoint(args.b, model)
    ts = [i / 20 for i in range(21)]
    line = ls.PointSet.from_weights([wa, wb], [[1 - t, t] for t in ts])
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    precision = "bf16" if args.dtype == "bfloat16" else "fp32"
    res = ls.evaluate(model, line, batches, ("token_loss",), precision=precision, progress=False)
    seconds = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    S = sum(t.numel() * t.element_size() for t in wa.values() if t.is_floating_point() and t is not None)
    S -= sum(wa[n].numel() * wa[n].element_size() for n in wa.layout.aliases())  # a tied tensor once
    print(
        json.dumps(
            {
                "dtype": args.dtype,
                "checkpoint_bytes": S,
                "peak_bytes_after_import": (peak - base) * 1024,
                "points_per_pass": res.points_per_pass,
                "path": res.path,
                "seconds": seconds,
                "token_loss_ends": [float(res["token_loss"][0]), float(res["token_loss"][-1])],
                "passes": res.info["data_passes"],
            }
        )
    )


def import_cost() -> int:
    """Bytes of resident memory that ``import transformers`` adds after ``import landscape``."""
    code = (
        "import landscape, sys\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])\n"
        "a = rss()\nfrom transformers import GPT2Config, GPT2LMHeadModel\nprint((rss() - a) * 1024)\n"
    )
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def save_checkpoints(root: str, dtype: str, layers: int) -> tuple[str, str]:
    import torch
    import transformers

    cfg = transformers.GPT2Config(n_layer=layers)  # GPT-2 small: 50,257 x 768, 12 heads, 1,024 positions
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(cfg).to(getattr(torch, dtype))
        path = os.path.join(root, f"{dtype}-{seed}")
        model.save_pretrained(path)
        paths.append(path)
        del model
    return paths[0], paths[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--a", help=argparse.SUPPRESS)
    ap.add_argument("--b", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch
    import transformers

    rows = []
    with tempfile.TemporaryDirectory() as root:
        for dtype in args.dtypes.split(","):
            a, b = save_checkpoints(root, dtype, args.layers)
            cmd = [sys.executable, __file__, "--child", "--a", a, "--b", b, "--dtype", dtype]
            cmd += ["--batches", str(args.batches), "--batch-size", str(args.batch_size)]
            cmd += ["--seq-len", str(args.seq_len), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    imp = import_cost()
    gb = 1 << 30
    print(
        f"# GPT-2 small shape, {args.layers} layers; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; line of 21 points on {args.batches} batches of "
        f"{args.batch_size} x {args.seq_len} tokens; import transformers adds {imp / gb:.2f} GiB"
    )
    print(
        "| dtype | checkpoint S | peak after import | (J+2) x S | peak / (J+2)S | (peak - import) / (J+2)S "
        "| K x S | peak / KS | s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        S, peak = r["checkpoint_bytes"], r["peak_bytes_after_import"]
        print(
            f"| {r['dtype']} | {S / gb:.2f} GiB | {peak / gb:.2f} GiB | {4 * S / gb:.2f} GiB | "
            f"{peak / (4 * S):.2f} | {(peak - imp) / (4 * S):.2f} | {21 * S / gb:.2f} GiB | "
            f"{peak / (21 * S):.2f} | {r['seconds']:.0f} |"
        )
    print(json.dumps(rows + [{"import_transformers_bytes": imp}]))


if __name__ == "__main__":
    main()
