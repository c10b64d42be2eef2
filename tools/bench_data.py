"""Benchmark: a plane over a DataLoader with a per-sample transform, engine against the
loss-landscape way.

The loss-landscape code evaluates a plane point by point: for each point it copies
``w + a*d1 + b*d2`` into the model and runs the whole DataLoader again, so the per-sample
transform (decoding, augmentation, normalisation...) runs once per point and per sample. The
engine reads each batch once per chunk of points and evaluates every point of the chunk on it,
so the transform runs once per chunk. Both run here in one process, on the same points and the
same loader; the script checks that they agree and prints passes over the data, transform
calls, time per point and the ratio.

    python tools/bench_data.py                      # 16 x 16 plane, digits ConvNet, CPU
    python tools/bench_data.py --grid 8 --model mlp
    python tools/bench_data.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import landscape as ls


class TransformedDigits(Dataset):
    """scikit-learn's digits as 1x8x8 images, with a per-sample transform: upsampled to 16x16
    (bilinear), standardised, and a fixed small shift per sample index (deterministic), the
    kind of work a torchvision pipeline does per sample. Counts its calls."""

    def __init__(self, split: str, flat: bool):
        data = ls.load_data("digits:image", split)
        self.x, self.y, self.flat = data.x, data.y, flat
        self.calls = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.calls += 1
        img = F.interpolate(self.x[i][None], size=(16, 16), mode="bilinear", align_corners=False)[0]
        img = (img - 0.3) / 0.35
        img = torch.roll(img, shifts=(i % 3 - 1, (i // 3) % 3 - 1), dims=(1, 2))
        return (img.reshape(-1) if self.flat else img), self.y[i]


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return ls.build_model("mlp", {"in_features": 256, "widths": [512]})
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 16, 10),
    )


def loss_landscape_way(model, w0, d1, d2, coords, loader, device):
    """Per point: copy the weights into the model, one full pass over the loader."""
    model.eval()
    named = dict(model.state_dict(keep_vars=True))
    losses, passes = [], 0
    with torch.no_grad():
        for a, b in coords:
            for name, p in named.items():
                if p.is_floating_point():
                    p.copy_(w0[name] + a * d1[name] + b * d2[name])
            total, n = 0.0, 0
            passes += 1
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                total += float(F.cross_entropy(model(x), y, reduction="sum"))
                n += len(y)
            losses.append(total / n)
    return np.array(losses), passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=16, help="points per side of the plane")
    ap.add_argument("--model", choices=("convnet", "mlp"), default="convnet")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--points-per-pass", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)

    model = build(args.model).to(device)
    w = ls.Weights.from_module(model)
    plane = ls.directions.random_plane(w, seed=1)
    grid = np.linspace(-1, 1, args.grid)
    points = plane.grid(grid, grid)
    coords = [(a, b) for a in grid for b in grid]
    w0 = {k: v.to(device) for k, v in plane.basis[0].items()}
    d1 = {k: v.to(device) for k, v in plane.basis[1].items()}
    d2 = {k: v.to(device) for k, v in plane.basis[2].items()}

    rows = []
    data = TransformedDigits("train", flat=args.model == "mlp")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)

    t = time.perf_counter()
    ref, passes = loss_landscape_way(model, w0, d1, d2, coords, loader, device)
    t_ref = time.perf_counter() - t
    rows.append(
        {
            "method": "loss-landscape way (copy weights, one loader pass per point)",
            "seconds": t_ref,
            "ms_per_point": 1e3 * t_ref / len(coords),
            "passes": passes,
            "transform_calls": data.calls,
            "ratio": 1.0,
        }
    )

    data.calls = 0
    t = time.perf_counter()
    res = ls.evaluate(
        model, points, loader, ("loss",), device=device, points_per_pass=args.points_per_pass, progress=False
    )
    t_eng = time.perf_counter() - t
    rel = float(np.max(np.abs(res["loss"] - ref) / np.abs(ref)))
    if rel > 1e-5:
        raise SystemExit(f"engine and the loss-landscape way disagree: max relative loss error {rel:.2e}")
    rows.append(
        {
            "method": f"engine ({res.path}, {res.points_per_pass} points per pass)",
            "seconds": t_eng,
            "ms_per_point": 1e3 * t_eng / len(coords),
            "passes": res.info["data_passes"],
            "transform_calls": data.calls,
            "ratio": t_ref / t_eng,
            "max_rel_err": rel,
        }
    )
    print(
        f"# {args.grid}x{args.grid} plane, {args.model}, {len(data)} digits upsampled to 16x16 per sample, "
        f"batch {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, device {device}"
    )
    print("| method | total s | ms / point | passes over the data | transform calls | vs loop | max rel. err |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        err = f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else ""
        print(
            f"| {r['method']} | {r['seconds']:.1f} | {r['ms_per_point']:.1f} | {r['passes']} | "
            f"{r['transform_calls']:,} | {r['ratio']:.2f}x | {err} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
