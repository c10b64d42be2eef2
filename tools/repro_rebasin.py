"""Git Re-Basin and REPAIR/RESET on scikit-learn's digits: the width sweep and the barrier table.

Two parts (issue 22, "Must show"), each resumable:

``--sweep``
    The claim of Ainsworth et al. (ICLR 2023) that the loss barrier left after weight matching
    falls as the networks get wider: one-hidden-layer ReLU MLPs ``64-w-10`` for ``w`` in
    ``--widths`` (default 32 to 2048), two networks trained from different seeds per width
    (``--sweep-pairs`` pairs, default 3; ``--sweep-epochs``, default 300), and for each pair
    the train-loss barrier of the plain line, of the line after weight matching, after
    activation matching and after weight matching + REPAIR (activations and statistics on the
    training set).
``--table``
    The linear-interpolation barriers between independently trained networks of each of
    ``--archs`` (``mlp``: ``64-256-256-10`` on flat digits; ``cnn``: ``small_cnn`` with
    BatchNorm on ``digits:image``; ``resnet20``: CIFAR ResNet-20 of width 8 on
    ``digits:image``), ``--seeds`` seed pairs: plain linear, our OT, weight
    matching and activation matching, each with REPAIR and RESET (Jordan et al., ICLR 2023;
    for OT, of its stage 1, the line to ``B`` permuted) where it applies, and a trained
    Bezier curve with 3 points (networks: ``--epochs``, default 20; curve: ``--fit-epochs``,
    default 100). RESET recomputes BatchNorm statistics: the MLP has none, so its ``+reset``
    rows are left out. The linear-type rows are evaluated with BatchNorm's running
    statistics interpolated with the weights (what "plain" means in the REPAIR paper); the
    Bezier curve of a network with BatchNorm (CNN, ResNet-20), trained with batch
    statistics, is evaluated with its statistics recomputed on the training set at every
    point (a second report per pair). ``resnet20`` is cheaper to connect with fewer points
    and statistics: 15 epochs, 11 points and the first 256 training images as matching and
    REPAIR/RESET data (``--epochs`` and ``--points`` override its epochs and points).
    ``gpt2``: a byte-level Hugging Face GPT-2 (2 layers, width 64, 4 heads, context 128)
    built from its config and trained with AdamW (600 steps of 16 sequences) on the ``json`` and ``email`` packages of the Python standard
    library (``text:<dir>:seq=128:ext=py``), evaluated with the next-token loss and accuracy;
    11 points; its rows: linear, OT's stage 1 alone, weight matching, activation matching
    (stream and MLP by activations, attention groups by weights: the attention internals
    have no activation of their own), each but OT with REPAIR (attention values and MLP
    hidden units; no BatchNorm, no RESET), and a quadratic Bezier curve fitted with
    ``loss="token_loss"`` (2 epochs); ``--epochs``/``--fit-epochs`` do not apply to it.

The barrier of a path is ``max_t [loss(t) - ((1 - t) loss(A) + t loss(B))]`` of the mean
cross-entropy on the training set (1,257 images), over ``--points`` values of ``t``
(default 21); the tables also give the worst test accuracy along ``t`` (540 images). Rows
are mean ± sample std over the pairs.

Usage::

    python3 tools/repro_rebasin.py --sweep                 # widths 32..2048, 3 pairs each
    python3 tools/repro_rebasin.py --table --archs mlp,cnn # 3 seed pairs each
    PYTHONPATH=. python3 tools/repro_rebasin.py --table --archs gpt2 --out-dir repro-gpt2
    python3 tools/repro_rebasin.py --sweep --table --quick # smoke run of both parts

Trained networks, curves and the per-pair reports (HDF5) are cached in ``--out-dir``, in a
folder per number of epochs (``--quick`` runs in its ``quick`` subfolder); a rerun reuses them
and recomputes only what is missing (``--force`` starts over). Results go to ``sweep.json`` /
``sweep.md`` in ``sweep/epochs<E>/`` and ``table.json`` / ``table.md`` in
``table/epochs<E>-fit<F>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime

import numpy as np
import torch

import landscape as ls
from landscape.bn import has_batchnorm
from landscape.connect import compare_connections
from landscape.demo import train_classifier

WIDTHS = (32, 64, 128, 256, 512, 1024, 2048)
SWEEP_METHODS = ("linear", "weight-matching", "activation-matching", "weight-matching+repair")
ARCHS = {
    "mlp": {
        "spec": ("mlp", {"in_features": 64, "widths": [256, 256], "num_classes": 10}),
        "data": "digits",
        "label": "ReLU MLP 64-256-256-10, digits",
    },
    "cnn": {
        "spec": ("small_cnn", {"width": 16, "batch_norm": True}),
        "data": "digits:image",
        "label": "small_cnn (Conv 16 - BN - ReLU - Conv 32 - BN - ReLU - MaxPool - Linear), digits:image",
    },
    "resnet20": {
        "spec": ("resnet20", {"in_channels": 1, "width": 8}),
        "data": "digits:image",
        "label": "CIFAR ResNet-20 with 8-16-32 channels and BatchNorm, digits:image",
        # REPAIR and RESET cost a pass per corrected level per point: fewer of both
        "epochs": 15,
        "points": 11,
        "stats_samples": 256,
    },
    "gpt2": {
        "label": "byte-level GPT-2 (Hugging Face GPT2LMHeadModel from config: 2 layers, width 64, 4 heads, "
        "context 128, vocabulary 256, no dropout), trained with AdamW on the json + email packages of the Python "
        "standard library (tools/example_lm.py's fine-tuning part); token loss and accuracy",
        "points": 11,
        # networks and everything after them are built by gpt2_pair (below), not table_pair
    },
}
BASES = ("linear", "ot", "weight-matching", "activation-matching")
SUFFIXES = {"linear": True, "ot": True, "weight-matching": True, "activation-matching": True}
CURVE = "Bezier (3)"
ENDS = "End points"
TRAIN = {"epochs": 20, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64}
SWEEP_EPOCHS = 300
FIT = {"epochs": 100, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64, "t_per_batch": 1}
QUICK = {"epochs": 2, "fit_epochs": 2, "points": 6, "widths": (32, 128)}


def trained(path: str, spec, data, seed: int, cfg: dict, force: bool) -> ls.Weights:
    """The network ``spec`` trained on ``data`` from ``seed``, cached at ``path``."""
    name, kwargs = spec
    torch.manual_seed(seed)  # before the model is built: its initial weights come from the seed
    model = ls.build_model(name, kwargs)
    if force or not os.path.exists(path):
        train_classifier(model, data, seed=seed, **cfg)
        ls.save_weights(model.state_dict(), path, force=True)
    return ls.load_checkpoint(path, model)


def recipe(args, part: str, arch: str | None = None) -> str:
    """The folder of a part's networks and results under ``--out-dir``/``part``: its epochs.

    For the table, ``arch`` gives its own training epochs; without it, the table's results
    go under the epochs of all of ``--archs`` (joined by ``+`` when they differ).
    """
    if part == "sweep":
        return f"epochs{args.sweep_train['epochs']}"
    archs = [arch] if arch is not None else args.archs
    lm = [gpt2_recipe(args)["name"]] if "gpt2" in archs else []  # its own steps and curve
    epochs = sorted({arch_train(args, a)["epochs"] for a in archs if a != "gpt2"})
    return "+".join(([f"epochs{'+'.join(map(str, epochs))}-fit{args.fit['epochs']}"] if epochs else []) + lm)


def barrier(t, loss, loss_a: float, loss_b: float) -> float:
    """``max_t [loss(t) - ((1 - t) loss_a + t loss_b)]``, in float64."""
    t, loss = np.asarray(t, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    return float(np.max(loss - ((1.0 - t) * loss_a + t * loss_b)))


def summarize(rep, rows: list[str]) -> dict[str, dict[str, float]]:
    """Per row: train-loss barrier, largest train loss, worst train and test accuracy."""
    e = rep.endpoints["train"]
    out = {}
    for m in rows:
        if m in rep.skipped:
            continue
        out[m] = {
            "barrier": barrier(rep.t[m], rep.loss[m]["train"], e["A_loss"], e["B_loss"]),
            "max_train_loss": rep.max_loss(m, "train"),
            "worst_train_acc": rep.worst_acc(m, "train"),
            "worst_test_acc": rep.worst_acc(m, "test"),
        }
    return out


def endpoints(rep) -> dict[str, float]:
    e = rep.endpoints
    return {
        "barrier": 0.0,
        "max_train_loss": rep.endpoint_loss("train"),
        "mean_train_loss": 0.5 * (e["train"]["A_loss"] + e["train"]["B_loss"]),
        "worst_train_acc": rep.endpoint_acc("train"),
        "worst_test_acc": rep.endpoint_acc("test"),
    }


def mean_std(values, scale: float = 1.0, digits: int = 3) -> str:
    v = scale * np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


# ---------------------------------------------------------------------------- the sweep
def sweep_pair(width: int, pair: int, args, splits, log) -> dict:
    spec = ("mlp", {"in_features": 64, "widths": [width], "num_classes": 10})
    folder = os.path.join(args.out_dir, "sweep", recipe(args, "sweep"), f"w{width}")
    os.makedirs(folder, exist_ok=True)
    seeds = (2 * pair + 1, 2 * pair + 2)
    t0 = time.perf_counter()
    A, B = (
        trained(os.path.join(folder, f"seed{s}.pt"), spec, splits["train"], s, args.sweep_train, args.force)
        for s in seeds
    )
    t1 = time.perf_counter()
    model = ls.build_model(*spec)
    rep = compare_connections(
        model,
        A,
        B,
        splits,
        methods=list(SWEEP_METHODS),
        points=args.points,
        wa_data=splits["train"],
        device="cpu",
        out=os.path.join(folder, f"pair{pair}.h5"),
        resume=not args.force,
        force=args.force,
        attrs={"model": {"spec": spec[0], "kwargs": spec[1]}, "seeds": list(seeds), "train": args.sweep_train},
    )
    rec = {
        "width": width,
        "pair": pair,
        "seeds": list(seeds),
        "rows": summarize(rep, list(SWEEP_METHODS)),
        ENDS: endpoints(rep),
        "seconds": {"train": t1 - t0, "connect": time.perf_counter() - t1},
    }
    log(
        f"  [width {width} pair {pair}] train {rec['seconds']['train']:.0f}s, connect {rec['seconds']['connect']:.0f}s:"
        + "".join(f" {m} barrier {v['barrier']:.4f}" for m, v in rec["rows"].items())
    )
    return rec


def sweep_table(records: list[dict], widths, what: str) -> str:
    """One row per width: the end points' mean train loss and every method's train-loss
    barrier (``what="barrier"``), or every method's worst test accuracy along the path and the
    end points' (``what="worst_test_acc"``)."""
    barrier_cols = what == "barrier"
    word = "barrier" if barrier_cols else "worst test acc (%)"
    cols = [f"{row_name(m)} {word}" for m in SWEEP_METHODS]
    cols = ["End-point train loss", *cols] if barrier_cols else [*cols, "End points test acc (%)"]
    lines = ["| Width | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
    for w in widths:
        rs = [r for r in records if r["width"] == w]
        if not rs:
            continue
        scale, digits = (1.0, 4) if barrier_cols else (100.0, 2)
        cells = [mean_std([r["rows"][m][what] for r in rs], scale, digits) for m in SWEEP_METHODS]
        if barrier_cols:
            cells.insert(0, mean_std([r[ENDS]["mean_train_loss"] for r in rs], digits=4))
        else:
            cells.append(mean_std([r[ENDS]["worst_test_acc"] for r in rs], 100, 2))
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(args, log) -> dict:
    splits = {"train": ls.load_data("digits", "train"), "test": ls.load_data("digits", "test")}
    records = [sweep_pair(w, k, args, splits, log) for w in args.widths for k in range(args.sweep_pairs)]
    text = "\n\n".join(
        [
            f"Train-loss barrier of the line between two one-hidden-layer ReLU MLPs 64-w-10 on digits, "
            f"plain, after weight matching, after activation matching and after weight matching + REPAIR "
            f"(matching and REPAIR statistics on the 1,257 training images), {args.sweep_pairs} pair(s) per "
            f"width, {args.points} points, training {args.sweep_train}:",
            sweep_table(records, args.widths, "barrier"),
            "Worst test accuracy along the same paths:",
            sweep_table(records, args.widths, "worst_test_acc"),
        ]
    )
    return {"records": records, "text": text}


# ---------------------------------------------------------------------------- the table
def arch_train(args, arch: str) -> dict:
    """The training recipe of ``arch``'s networks: ``--epochs`` if given, else the arch's own epochs."""
    if arch == "gpt2":
        return gpt2_recipe(args)["train"]
    epochs = args.epochs if args.epochs is not None else ARCHS[arch].get("epochs", TRAIN["epochs"])
    return dict(TRAIN, epochs=epochs)


def arch_points(args, arch: str) -> int:
    """Values of ``t`` per path of ``arch``: ``--points`` if given, else the arch's own number."""
    return args.points if args.points_given else ARCHS[arch].get("points", args.points)


def table_methods(arch: str, model) -> list[str]:
    """The linear-type rows of ``arch``: each base, then its REPAIR and (with BatchNorm) RESET."""
    bn = has_batchnorm(model)
    out = []
    for base in ARCHS[arch].get("bases", BASES):
        out.append(base)
        if SUFFIXES[base]:
            out.append(f"{base}+repair")
            if bn:
                out.append(f"{base}+reset")
    return out


def fitted_curve(model, A, B, train, path: str, pair: int, args):
    curve = ls.curves.Curve(A, B, n_bends=1, kind="bezier")
    ls.curves.fit_curve(
        model,
        curve,
        train,
        schedule="garipov",
        seed=pair,
        device="cpu",
        checkpoint=path,
        resume=not args.force,
        force=args.force,
        progress=False,
        **args.fit,
    )
    return curve


def table_pair(arch: str, pair: int, args, log) -> dict:
    cfg = ARCHS[arch]
    spec = cfg["spec"]
    splits = {s: ls.load_data(cfg["data"], s) for s in ("train", "test")}
    train = splits["train"]
    cfg_train = arch_train(args, arch)
    folder = os.path.join(args.out_dir, "table", recipe(args, "table", arch), arch, f"pair{pair}")
    os.makedirs(folder, exist_ok=True)
    seeds = (2 * pair + 1, 2 * pair + 2)
    t0 = time.perf_counter()
    A, B = (trained(os.path.join(folder, f"seed{s}.pt"), spec, train, s, cfg_train, args.force) for s in seeds)
    model = ls.build_model(*spec)
    methods = table_methods(arch, model)
    t1 = time.perf_counter()
    use_curve = cfg.get("curve", True)
    curve = fitted_curve(model, A, B, train, os.path.join(folder, "bezier3.pt"), pair, args) if use_curve else None
    t2 = time.perf_counter()
    attrs = {"model": {"spec": spec[0], "kwargs": spec[1]}, "seeds": list(seeds), "train": cfg_train}
    stats = train.subset(cfg.get("stats_samples"))  # matching, REPAIR and RESET statistics
    points = arch_points(args, arch)
    common = dict(points=points, wa_data=stats, device="cpu", resume=not args.force, force=args.force)
    bn = has_batchnorm(model)
    rep = compare_connections(
        model,
        A,
        B,
        splits,
        methods=methods,
        curves=None if bn or not use_curve else {CURVE: curve},
        out=os.path.join(folder, "connections.h5"),
        attrs=attrs,
        **common,
    )
    rows = summarize(rep, [*methods, *([] if bn or not use_curve else [CURVE])])
    if bn and use_curve:  # the curve was trained with batch statistics: recompute them at every point
        crep = compare_connections(
            model,
            A,
            B,
            splits,
            methods=[],
            curves={CURVE: curve},
            bn="recompute",
            bn_data=train,
            out=os.path.join(folder, "curve.h5"),
            attrs=dict(attrs, fit=args.fit),
            **common,
        )
        rows.update(summarize(crep, [CURVE]))
    rec = {
        "arch": arch,
        "pair": pair,
        "seeds": list(seeds),
        "train": cfg_train,
        "points": points,
        "stats_samples": len(stats),
        "rows": rows,
        "skipped": dict(rep.skipped),
        ENDS: endpoints(rep),
        "seconds": {"train": t1 - t0, "fit": t2 - t1, "connect": time.perf_counter() - t2},
    }
    log(
        f"  [{arch} pair {pair}] train {t1 - t0:.0f}s, curve {t2 - t1:.0f}s, connect {rec['seconds']['connect']:.0f}s:"
        + ",".join(f" {m} {v['barrier']:.3f}/{100 * v['worst_test_acc']:.1f}%" for m, v in rows.items())
    )
    return rec


# ---------------------------------------------------------------------------- the GPT-2 rows
STDLIB = os.path.dirname(os.__file__)
GPT2_PACKAGES = ("json", "email")  # tools/example_lm.py's "json_email" part of the standard library
GPT2 = {
    "model": {"n_embd": 64, "n_layer": 2, "n_head": 4},
    "seq_len": 128,
    "train": {"steps": 600, "batch_size": 16, "lr": 2e-3, "warmup": 30, "weight_decay": 0.1},
    "fit": {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    "eval_train": 256,  # train sequences (evenly spaced) of the barrier, and of matching and REPAIR
}
GPT2_QUICK = {
    "model": {"n_embd": 32, "n_layer": 2, "n_head": 2},
    "seq_len": 32,
    "train": {"steps": 30, "batch_size": 16, "lr": 3e-3, "warmup": 3, "weight_decay": 0.1},
    "fit": {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    "eval_train": 32,
}
#: activation matching of GPT-2's stream and MLP groups, its attention groups by weights (gpt2_activation_matching)
GPT2_AM = "activation-matching-stream-mlp"
GPT2_BASES = ("linear", "weight-matching", GPT2_AM)  # OT: its stage 1 alone (gpt2_ot_stage1)


def gpt2_activation_matching(A, B, model, data, *, t, **options):
    """The activation-matching row of GPT-2: the registry's ``activation-matching`` skips
    GPT-2, whose attention groups (heads, query/key and value dimensions) have no activation
    of their own; here the groups that have one (the residual stream, the MLP hidden units)
    are matched by activations (:func:`~landscape.connect.rebasin.activation_matching`), then
    the attention groups by weight matching of ``A`` and ``B`` so aligned (the groups are
    disjoint: the two matchings compose)."""
    from landscape.connect.graph import permute_groups
    from landscape.connect.rebasin import activation_matching, aligned_path, weight_matching
    from landscape.connect.structure import structure

    s = structure(model)
    active = {grp for grp, _ in s.activation_modules.values()}
    by_activation = [g for g in s.groups if g.name in active]
    perms = activation_matching(A, B, model, data, groups=by_activation)
    rest = [g for g in s.groups if g.name not in active]
    perms.update(weight_matching(A, permute_groups(B, by_activation, perms), model, groups=rest))
    return aligned_path(A, B, model, perms, t, method=GPT2_AM)


def register_gpt2_rows() -> None:
    """Register :data:`GPT2_AM` and its ``+repair``/``+reset`` rows (once)."""
    if GPT2_AM not in ls.connect.registry.names():
        label = "Activation matching (stream, MLP; attention by weights)"
        ls.connect.registry.register(GPT2_AM, gpt2_activation_matching, label=label, needs_data=True)
        ls.connect.registry.register_renormalized(GPT2_AM)


def gpt2_recipe(args) -> dict:
    """The GPT-2 settings (``--quick``: a tiny model and few steps) and their folder name."""
    cfg = json.loads(json.dumps(GPT2_QUICK if args.quick else GPT2))
    m, tr = cfg["model"], cfg["train"]
    cfg["name"] = f"gpt2-w{m['n_embd']}-l{m['n_layer']}-steps{tr['steps']}-fit{cfg['fit']['epochs']}"
    return cfg


def gpt2_corpus(seq_len: int) -> tuple[dict, dict]:
    """``({"train", "test"}: TensorData of token ids, info)``: the packages of
    :data:`GPT2_PACKAGES` read by ``ls.load_data("text:<dir>:seq=T:ext=py", split)``
    (every 10th sequence of a package is test), concatenated in that order."""
    splits, info = {}, {"packages": list(GPT2_PACKAGES), "stdlib": STDLIB, "python": platform.python_version()}
    for split in ("train", "test"):
        parts = [ls.load_data(f"text:{os.path.join(STDLIB, p)}:seq={seq_len}:ext=py", split) for p in GPT2_PACKAGES]
        x = torch.cat([d.x for d in parts])
        info["text_sha256"] = [d.info["text_sha256"] for d in parts]
        splits[split] = ls.TensorData(
            x, x.clone(), spec=f"stdlib:{'+'.join(GPT2_PACKAGES)}:seq={seq_len}", num_classes=256, split=split
        )
        info[f"{split}_sequences"] = len(x)
    return splits, info


def evenly(data: ls.TensorData, n: int) -> ls.TensorData:
    """``n`` sequences evenly spaced over ``data`` (all when it has fewer)."""
    idx = torch.as_tensor(np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(np.int64)))
    return ls.TensorData(data.x[idx], data.y[idx], spec=data.spec, num_classes=256, split=data.split)


def gpt2_model(folder: str, cfg: dict):
    """A GPT-2 built from the ``config.json`` written to ``folder`` (``ls.build_model("hf:DIR")``)."""
    import transformers

    if not os.path.exists(os.path.join(folder, "config.json")):
        config = transformers.GPT2Config(
            vocab_size=256,
            n_positions=cfg["seq_len"],
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            architectures=["GPT2LMHeadModel"],
            **cfg["model"],
        )
        config.save_pretrained(folder)
    return ls.build_model(f"hf:{folder}")


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr`` (tools/example_lm.py's schedule)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup))))


def train_gpt2(model, data, opts: dict, seed: int) -> None:
    """AdamW on the token loss (decay on matrices only, betas 0.9/0.95, gradient norm clipped
    at 1), ``opts["steps"]`` minibatches in the order of ``seed`` (``TrainBatches.stream``)."""
    from landscape.train import TrainBatches, loss_of

    batches = TrainBatches.for_module(model, data, opts["batch_size"], torch.Generator().manual_seed(seed)).stream()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": opts["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=opts["lr"], betas=(0.9, 0.95))
    model.train()
    for step in range(opts["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, opts["steps"], opts["lr"], opts["warmup"])
        loss = loss_of(model, None, next(batches), "token_loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()


def trained_gpt2(path: str, folder: str, cfg: dict, train, seed: int, force: bool) -> ls.Weights:
    """The GPT-2 of ``cfg`` initialised and trained from ``seed``, cached at ``path``."""
    torch.manual_seed(seed)  # before the model is built: its initial weights come from the seed
    model = gpt2_model(folder, cfg)
    if force or not os.path.exists(path):
        train_gpt2(model, train, cfg["train"], seed)
        ls.save_weights(model.state_dict(), path, force=True)
    return ls.load_checkpoint(path, model)


def gpt2_pair(arch: str, pair: int, args, log) -> dict:
    """One seed pair of GPT-2s: train both, fit the Bezier curve, connect by every row."""
    cfg = gpt2_recipe(args)
    data, corpus = gpt2_corpus(cfg["seq_len"])
    folder = os.path.join(args.out_dir, "table", cfg["name"], arch, f"pair{pair}")
    os.makedirs(folder, exist_ok=True)
    config_dir = os.path.join(args.out_dir, "table", cfg["name"], arch, "config")
    seeds = (2 * pair + 1, 2 * pair + 2)
    t0 = time.perf_counter()
    A, B = (
        trained_gpt2(os.path.join(folder, f"seed{s}.pt"), config_dir, cfg, data["train"], s, args.force) for s in seeds
    )
    model = gpt2_model(config_dir, cfg)
    t1 = time.perf_counter()
    curve = ls.curves.Curve(A, B, n_bends=1, kind="bezier")
    ls.curves.fit_curve(
        model, curve, data["train"], schedule="garipov", seed=pair, device="cpu", loss="token_loss",
        checkpoint=os.path.join(folder, "bezier3.pt"), resume=not args.force, force=args.force, progress=False,
        **cfg["fit"],
    )  # fmt: skip
    t2 = time.perf_counter()
    evals = evenly(data["train"], cfg["eval_train"])
    register_gpt2_rows()
    methods = [m for b in GPT2_BASES for m in (b, f"{b}+repair")]
    points = args.points if args.points_given else ARCHS[arch]["points"]
    rep = compare_connections(
        model, A, B, {"train": evals, "test": data["test"]}, methods=methods, curves={CURVE: curve},
        points=points, wa_data=evals, device="cpu", resume=not args.force, force=args.force,
        out=os.path.join(folder, "connections.h5"),
        attrs={"model": cfg["model"], "seq_len": cfg["seq_len"], "seeds": list(seeds), "train": cfg["train"],
               "fit": cfg["fit"], "corpus": corpus},
    )  # fmt: skip
    rows = {m.replace(GPT2_AM, "activation-matching"): v for m, v in summarize(rep, [*methods, CURVE]).items()}
    rows["ot"] = gpt2_ot_stage1(model, A, B, {"train": evals, "test": data["test"]}, rep, folder, args)
    rec = {
        "arch": arch,
        "pair": pair,
        "seeds": list(seeds),
        "train": cfg["train"],
        "points": points,
        "stats_samples": len(evals),
        "corpus": corpus,
        "metrics": list(rep.metrics),
        "rows": rows,
        "skipped": dict(rep.skipped),
        ENDS: endpoints(rep),
        "seconds": {"train": t1 - t0, "fit": t2 - t1, "connect": time.perf_counter() - t2},
    }
    log(
        f"  [{arch} pair {pair}] train {t1 - t0:.0f}s, curve {t2 - t1:.0f}s, connect {rec['seconds']['connect']:.0f}s:"
        + ",".join(f" {m} {v['barrier']:.3f}/{100 * v['worst_test_acc']:.1f}%" for m, v in rows.items())
    )
    return rec


def gpt2_ot_stage1(model, A, B, splits: dict, rep, folder: str, args) -> dict:
    """The OT row of a GPT-2 pair: stage 1 of :func:`~landscape.connect.ot_path` alone (the
    line from ``A`` to ``B`` permuted by OT's matching of the paper's neurons), at the
    report's ``t`` and metrics, each split's profile in its own result file. Stage 2 (the
    swaps from ``B'`` back to ``B``) has two points per transposition, about a thousand on
    this model: too many to evaluate here."""
    t = np.asarray(rep.t["linear"], dtype=np.float64)
    path = ls.connect.ot_path(A, B, model, t)
    loss_name, acc_name = rep.metrics
    res = {
        s: ls.evaluate(
            model,
            path.stage1,
            data,
            (loss_name, acc_name),
            device="cpu",
            progress=False,
            out=os.path.join(folder, f"ot-stage1-{s}.h5"),
            resume=not args.force,
            force=args.force,
        )  # fmt: skip
        for s, data in splits.items()
    }
    e = rep.endpoints["train"]
    return {
        "barrier": barrier(path.t1, res["train"][loss_name], e["A_loss"], e["B_loss"]),
        "max_train_loss": float(np.max(res["train"][loss_name])),
        "worst_train_acc": float(np.min(res["train"][acc_name])),
        "worst_test_acc": float(np.min(res["test"][acc_name])),
        "stage2_points": int(path.stage2.K),
    }


def gpt2_notes(records: list[dict], args) -> list[str]:
    """The table's notes on the GPT-2 column: settings, data, the rows it cannot have."""
    cfg = gpt2_recipe(args)
    rs = [r for r in records if r["arch"] == "gpt2"]
    out = [
        f"gpt2: {cfg['model']}, context {cfg['seq_len']}; training {cfg['train']} (AdamW, cosine to lr/10); "
        f"Bezier curve fitted with loss='token_loss', {cfg['fit']} (SGD, garipov schedule) on all training sequences",
        f"gpt2: barrier of the next-token loss on {cfg['eval_train']} training sequences evenly spaced over the "
        f"{rs[0]['corpus']['train_sequences'] if rs else '?'} (the data of activation matching and REPAIR too); "
        f"worst next-token accuracy on all {rs[0]['corpus']['test_sequences'] if rs else '?'} test sequences",
        "gpt2: REPAIR corrects each block's attention value channels and MLP hidden channels; no BatchNorm, so "
        "no RESET rows",
        "gpt2: the activation-matching rows match the residual stream and MLP hidden units by activations and "
        "the attention groups (heads, query/key and value dimensions, which have no activation of their own) by "
        "weight matching after them; the registry's activation-matching skips GPT-2",
        "gpt2: the OT row is OT's stage 1 alone (A to B permuted by OT's matching); its stage 2, "
        f"{rs[0]['rows']['ot']['stage2_points'] if rs else '?'} points of swaps back to B, was not evaluated (cost)",
    ]
    for why in sorted({w for r in rs for m, w in r["skipped"].items()}):
        out.append(f"gpt2: skipped rows ({', '.join(sorted({m for r in rs for m in r['skipped']}))}): {why}")
    return out


def row_name(row: str) -> str:
    names = {"linear": "Linear", "ot": "OT", "weight-matching": "Weight matching"}
    names["activation-matching"] = "Activation matching"
    base, _, suffix = row.partition("+")
    if base not in names:
        return row
    return names[base] + {"": "", "repair": " + REPAIR", "reset": " + RESET"}[suffix]


def barrier_table(records: list[dict], archs: list[str]) -> str:
    head = "| Method | " + " | ".join(f"{a}: train-loss barrier | {a}: worst test acc (%)" for a in archs) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(archs)]
    canonical = [f"{b}{s}" for b in BASES for s in ("", "+repair", "+reset")] + [CURVE]
    order = [m for m in canonical if any(m in r["rows"] for r in records)]
    for row in [*order, ENDS]:
        cells = []
        for a in archs:
            rs = [r for r in records if r["arch"] == a]
            vals = [r[ENDS] if row == ENDS else r["rows"].get(row) for r in rs]
            if not rs or any(v is None for v in vals):
                cells += ["-", "-"]
                continue
            cells += [mean_std([v["barrier"] for v in vals]), mean_std([v["worst_test_acc"] for v in vals], 100, 2)]
        lines.append(f"| {row_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_table(args, log) -> dict:
    records = [
        (gpt2_pair if a == "gpt2" else table_pair)(a, k, args, log) for a in args.archs for k in range(args.seeds)
    ]
    notes = [f"{a}: {ARCHS[a]['label']}" for a in args.archs]
    points = ", ".join(f"{a} {arch_points(args, a)}" for a in args.archs)
    trains = "; ".join(f"{a} {arch_train(args, a)}" for a in args.archs)
    for a in args.archs:
        if "stats_samples" in ARCHS[a]:
            notes.append(
                f"{a}: matching, REPAIR and RESET statistics on the first {ARCHS[a]['stats_samples']} training images"
            )
        if not ARCHS[a].get("curve", True):
            notes.append(f"{a}: no Bezier curve row")
    if "mlp" in args.archs:
        notes.append("mlp: no BatchNorm, so no RESET rows (RESET would return the plain line)")
    if "gpt2" in args.archs:
        notes += gpt2_notes(records, args)
    text = "\n\n".join(
        [
            f"Train-loss barrier and worst test accuracy along each path, mean ± std over {args.seeds} seed "
            f"pair(s), {points} points, training {trains}"
            + (f", Bezier curve {args.fit}:" if set(args.archs) - {"gpt2"} else ":"),
            barrier_table(records, args.archs),
            "\n".join(f"- {n}" for n in notes),
        ]
    )
    return {"records": records, "text": text}


# ---------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", action="store_true", help="the width sweep of weight matching")
    p.add_argument("--table", action="store_true", help="the barrier table of --archs")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="hidden widths of the sweep")
    p.add_argument("--sweep-pairs", type=int, default=3, help="seed pairs per width (default 3)")
    p.add_argument("--archs", default="mlp,cnn", help=f"comma-separated subset of {', '.join(ARCHS)}")
    p.add_argument("--seeds", type=int, default=3, help="seed pairs of the table (default 3)")
    p.add_argument("--points", type=int, default=None, help="values of t per path (default 21; resnet20: 11)")
    p.add_argument(
        "--epochs", type=int, default=None, help="training epochs of the table's networks (default 20; resnet20: 15)"
    )
    p.add_argument("--sweep-epochs", type=int, default=SWEEP_EPOCHS, help="training epochs of the sweep's networks")
    p.add_argument("--fit-epochs", type=int, default=FIT["epochs"], help="epochs of the Bezier curve")
    p.add_argument("--out-dir", default="repro-rebasin")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 pair, 2 widths, few epochs, 6 points")
    p.add_argument("--force", action="store_true", help="retrain and recompute everything")
    args = p.parse_args(argv)
    if not (args.sweep or args.table):
        p.error("nothing to do: give --sweep, --table or both")
    try:
        args.widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        p.error(f"--widths {args.widths!r}: expected comma-separated integers")
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bad = [a for a in args.archs if a not in ARCHS]
    if bad:
        p.error(f"unknown --archs {bad}; expected some of {sorted(ARCHS)}")
    args.points_given = args.points is not None
    if not args.points_given:
        args.points = 21
    args.sweep_train = dict(TRAIN, epochs=args.sweep_epochs)
    args.fit = dict(FIT, epochs=args.fit_epochs)
    if args.quick:
        args.seeds, args.sweep_pairs, args.points, args.points_given = 1, 1, QUICK["points"], True
        args.widths = list(QUICK["widths"])
        args.epochs, args.fit["epochs"] = QUICK["epochs"], QUICK["fit_epochs"]
        args.sweep_train["epochs"] = QUICK["epochs"]
        args.out_dir = os.path.join(args.out_dir, "quick")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    log_path = os.path.join(args.out_dir, "log.txt")

    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    env = {
        "landscape": ls.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "quick": args.quick,
    }
    log(f"repro_rebasin {datetime.now(UTC).isoformat(timespec='seconds')}: {env}")
    for part, run in (("sweep", run_sweep), ("table", run_table)):
        if not getattr(args, part):
            continue
        t0 = time.perf_counter()
        res = run(args, log)
        seconds = time.perf_counter() - t0
        foot = f"torch {env['torch']}, landscape {env['landscape']}, {env['cpus']} CPUs, {args.threads} thread(s), "
        text = res["text"] + f"\n\n{foot}{seconds:.0f} s"
        folder = os.path.join(args.out_dir, part, recipe(args, part))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{part}.json"), "w") as f:
            json.dump({"env": dict(env, seconds=seconds), "records": res["records"]}, f, indent=1)
        with open(os.path.join(folder, f"{part}.md"), "w") as f:
            f.write(text + "\n")
        print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
