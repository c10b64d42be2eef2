"""``landscape demo``: the main job on bundled data (scikit-learn's digits), on the CPU.

Trains two small seeded MLPs on digits, saves their checkpoints, evaluates both and the
straight line between them with the batched engine, writes the results to HDF5 and prints
a summary. Later analyses (surfaces, curves, connections, ensembles, Hessians) extend it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["run_demo", "train_classifier"]


def train_classifier(
    model: nn.Module,
    data,
    *,
    epochs: int = 20,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place with SGD on a :class:`~landscape.data.TensorData` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    n = len(data)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def run_demo(out_dir: str = "landscape-demo", *, force: bool = False, progress: bool = True) -> dict:
    """Run the demo; returns a dict of what was written and the headline numbers."""
    from .data import load_data
    from .evaluate import evaluate
    from .models import build_model
    from .pointset import PointSet
    from .weights import load_checkpoint, save_weights

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    os.makedirs(out_dir, exist_ok=True)
    train = load_data("digits", "train")
    test = load_data("digits", "test")
    spec, kwargs = "mlp", {"in_features": 64, "widths": [256], "num_classes": 10}

    ckpts = []
    for seed in (1, 2):
        path = os.path.join(out_dir, f"mlp-seed{seed}.pt")
        if not os.path.exists(path) or force:
            torch.manual_seed(seed)
            model = build_model(spec, kwargs)
            train_classifier(model, train, epochs=15, seed=seed)
            save_weights(model.state_dict(), path, force=True)
        ckpts.append(path)
    model = build_model(spec, kwargs)
    w = [load_checkpoint(p, model) for p in ckpts]

    ts = np.linspace(0.0, 1.0, 21)
    line = PointSet.from_weights(w, np.stack([1 - ts, ts], 1), names=["seed1", "seed2"])
    out_file = os.path.join(out_dir, "line.h5")
    attrs = {
        "model": {"spec": spec, "kwargs": kwargs},
        "checkpoints": [{"path": x.source, "sha256": x.sha256} for x in w],
        "t": ts.tolist(),
    }
    results = {}
    for split, data in (("train", train), ("test", test)):
        path = out_file.replace(".h5", f"-{split}.h5")
        # an earlier demo's file is continued (nothing to recompute), replaced only with --force
        res = evaluate(model, line, data, ("loss", "acc"), out=path, resume=not force, force=force,
                       progress=progress, attrs={**attrs, "split": split})
        results[split] = (path, res)

    elapsed = time.perf_counter() - t0
    print(f"landscape demo: wrote {out_dir}/ in {elapsed:.1f} s")
    print(f"  checkpoints: {', '.join(ckpts)}")
    for split, (path, res) in results.items():
        loss, acc = res["loss"], res["acc"]
        i = int(np.nanargmax(loss))
        print(
            f"  line {split:5s} -> {path}: loss {loss[0]:.3f} (t=0) .. max {loss[i]:.3f} (t={ts[i]:.2f}) "
            f".. {loss[-1]:.3f} (t=1); accuracy {acc[0]:.3f} / min {np.nanmin(acc):.3f} / {acc[-1]:.3f}; "
            f"engine path {res.path}, {res.points_per_second:.0f} points/s"
        )
    return {"out_dir": out_dir, "checkpoints": ckpts, "files": [p for p, _ in results.values()], "seconds": elapsed}
