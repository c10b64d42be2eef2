"""Benchmark: the cost of one Hessian-vector product, with and without the kept gradient graph.

Four ways to compute ``Hv`` of the mean cross-entropy over the same in-memory data, at the same
weights, timed interleaved in one process (medians of ``--repeats`` products each):

1. **fresh pass**: ``HVP(method="double-backward", reuse_graph=False)``: a forward pass, the
   gradient with ``create_graph=True`` and one backward pass through it, per product (the
   library before graphs were kept);
2. **kept graph**: ``HVP(reuse_graph=True)``: the gradient's graph is built by the first
   product and kept; later products are one backward pass through it;
3. **forward-over-reverse**: ``HVP(method="forward-over-reverse")`` (``torch.func.jvp`` of
   ``torch.func.grad``; what ``auto`` uses on GPUs);
4. **PyHessian's scheme**, written out here in plain PyTorch as its ``hessian`` class does for
   one batch: parameters with ``requires_grad``, ``loss.backward(create_graph=True)`` once,
   then ``torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)`` per product.

The products of 1, 2 and 4 are checked against each other before timing.

    OMP_NUM_THREADS=1 python tools/bench_hvp.py            # MLP on digits + ResNet-20 (CPU)
    python tools/bench_hvp.py --device cuda --resnet-samples 512
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import landscape as ls
from landscape import hessian as H


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def workload(name, args):
    torch.manual_seed(0)
    if name == "mlp":
        model = ls.build_model("mlp", {"in_features": 64, "widths": [128], "num_classes": 10})
        train = ls.load_data("digits", "train", max_samples=args.samples)
        return f"MLP 64-128-10, digits, {len(train.y)} samples", model, (train.x, train.y)
    model = ls.build_model("resnet20", {"num_classes": 10}).eval()
    x = torch.randn(args.resnet_samples, 3, 32, 32)
    y = torch.randint(0, 10, (args.resnet_samples,))
    return f"ResNet-20, CIFAR-shaped, {args.resnet_samples} samples", model, (x, y)


class PyHessianScheme:
    """One batch, gradient graph built once, one ``autograd.grad`` per product."""

    def __init__(self, model, data, device):
        self.model = model.to(device).eval()
        x, y = (t.to(device) for t in data)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        loss = F.cross_entropy(self.model(x), y)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)

    def __call__(self, v):
        parts, pos = [], 0
        for p in self.params:
            parts.append(v[pos : pos + p.numel()].view_as(p))
            pos += p.numel()
        hv = torch.autograd.grad(self.grads, self.params, grad_outputs=parts, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])


def bench(name, args):
    label, model, data = workload(name, args)
    dev = args.device
    w = ls.Weights.from_module(model)
    # one batch for every way (PyHessian's single-batch mode): batch_size = N
    n = len(data[1])
    ways = {
        "fresh pass (double-backward, reuse_graph=False)": H.HVP(
            model, w, data, device=dev, method="double-backward", reuse_graph=False, batch_size=n
        ),
        "kept graph (reuse_graph=True)": H.HVP(
            model, w, data, device=dev, method="double-backward", reuse_graph=True, batch_size=n
        ),
        "forward-over-reverse": H.HVP(model, w, data, device=dev, method="forward-over-reverse", batch_size=n),
        "PyHessian's scheme (plain PyTorch)": PyHessianScheme(model, data, dev),
    }
    n_params = ways["kept graph (reuse_graph=True)"].n
    g = torch.Generator().manual_seed(1)
    vs = [torch.randn(n_params, generator=g).to(dev) for _ in range(args.repeats)]
    ref = ways["fresh pass (double-backward, reuse_graph=False)"](vs[0])
    for key, op in ways.items():  # warm-up (builds the kept graph) and agreement
        out = op(vs[0])
        err = float((out - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, (key, err)
    times = {k: [] for k in ways}
    for v in vs:  # interleaved, so that load on the machine hits every way alike
        for key, op in ways.items():
            _sync(dev)
            t = time.perf_counter()
            op(v)
            _sync(dev)
            times[key].append(time.perf_counter() - t)
    return label, n_params, {k: statistics.median(t) for k, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp,resnet20")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=512, help="digits samples of the MLP loss")
    ap.add_argument("--resnet-samples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    print(f"device {args.device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| Workload | Parameters | Way | ms per HVP | x the kept graph |")
    print("|---|---:|---|---:|---:|")
    for name in args.models.split(","):
        label, n_params, med = bench(name, args)
        kept = med["kept graph (reuse_graph=True)"]
        for key, t in med.items():
            print(f"| {label} | {n_params:,} | {key} | {1e3 * t:.3f} | {t / kept:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
