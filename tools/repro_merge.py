"""Model merging and soups on scikit-learn's digits (issue 23): every method of
:mod:`landscape.merge` on fine-tunes of one base, per task and on their union.

Setup. The 1,257 training images are split once: the first 1,000 ("tune") train every network,
the last 257 ("held") are held out to choose each method's parameters and to select the greedy
soup; the 540 test images report. A base MLP 64-64-64-10 is trained briefly on all ten digits
of tune (``--base-epochs``, default 3). Two fine-tunes start from it, one on the digits 0-4 of
tune ("low"), one on 5-9 ("high") (``--ft-epochs``, default 20): their task vectors are what
task arithmetic, TIES, DARE and SLERP merge. Soup ingredients are fine-tunes of the same base on
all of tune with different learning rates and seeds (``--soup-lrs`` x ``--soup-seeds``, as the
hyperparameter sweeps of Wortsman et al. 2022), merged into uniform and greedy soups. WiSE-FT
interpolates the base (the "zero-shot" model) with the low fine-tune.

Every grid is evaluated through the engine into its own ``merge`` file in ``--out-dir`` on the
splits test (union), test-low, test-high and held (each with loss and acc); a rerun resumes the
files and reuses the cached checkpoints (``--force`` starts over). The summary picks, for every
method, the cell with the best held-out accuracy and reports its test accuracies; it is
written to ``summary.md`` and ``summary.json``, with the figures of each file in
``figures/``.

With ``--lm-dir DIR`` (the output folder of ``tools/example_lm.py``: its base byte-level GPT-2
pre-trained on some standard-library packages and its two fine-tunes on json+email and on
asyncio, read from ``DIR/models``), the same methods merge the two fine-tunes of the language
model (``lm/`` in ``--out-dir``): token loss and perplexity on test sequences of each part
(``--lm-sequences`` evenly spaced ones), the cell chosen by the mean token loss over train
sequences of the two fine-tuning parts (held-out from nothing: they were trained on, so the
choice is optimistic); no soups (one fine-tune per part).

Usage::

    python3 tools/repro_merge.py --out-dir /tmp/merge-digits            # about a minute on 1 core
    python3 tools/example_lm.py --out-dir /tmp/example-lm --threads 1   # 5-10 minutes, then
    python3 tools/repro_merge.py --out-dir /tmp/merge-digits --lm-dir /tmp/example-lm --lm-only
    python3 tools/repro_merge.py --out-dir /tmp/merge-digits --quick    # smoke run
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
from landscape import merge
from landscape.plot import plot_file
from landscape.train import train_classifier

SPEC = ("mlp", {"in_features": 64, "widths": [64, 64], "num_classes": 10})
LOW, HIGH = list(range(5)), list(range(5, 10))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--base-epochs", type=int, default=3)
    p.add_argument("--ft-epochs", type=int, default=20)
    p.add_argument("--soup-epochs", type=int, default=10)
    p.add_argument("--soup-lrs", default="0.003,0.01,0.03,0.1,0.3")
    p.add_argument("--soup-seeds", default="1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lm-dir", default=None, help="an output folder of tools/example_lm.py: also merge its LM")
    p.add_argument("--lm-only", action="store_true", help="only the language-model part")
    p.add_argument("--lm-sequences", type=int, default=96, help="test sequences per corpus part (default 96)")
    p.add_argument("--quick", action="store_true", help="fewer epochs and grid points (smoke run)")
    p.add_argument("--force", action="store_true", help="retrain and recompute everything")
    return p.parse_args(argv)


def _data():
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    tune = train.subset(1000)
    held = ls.TensorData(train.x[1000:], train.y[1000:], train.spec, train.num_classes, split="train[1000:]")
    splits = {
        "test": test,
        "test-low": test.select_classes(LOW),
        "test-high": test.select_classes(HIGH),
        "held": held,
    }
    return tune, splits


def _trained(path: str, start: dict | None, data, *, epochs: int, lr: float, seed: int, force: bool):
    """A network trained on ``data`` from ``start`` (a state dict) or a fresh init, cached."""
    model = ls.build_model(*SPEC)
    if os.path.exists(path) and not force:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    torch.manual_seed(seed)
    if start is None:
        model = ls.build_model(*SPEC)
    else:
        model.load_state_dict(start)
    train_classifier(model, data, epochs=epochs, lr=lr, seed=seed)
    torch.save(model.state_dict(), path + ".tmp")
    os.replace(path + ".tmp", path)
    return model


def networks(args, tune):
    d = os.path.join(args.out_dir, "checkpoints")
    os.makedirs(d, exist_ok=True)
    base = _trained(os.path.join(d, "base.pt"), None, tune, epochs=args.base_epochs, lr=0.05, seed=0, force=args.force)
    sd = base.state_dict()
    fts = {}
    for name, classes, seed in (("low", LOW, 1), ("high", HIGH, 2)):
        fts[name] = _trained(
            os.path.join(d, f"ft-{name}.pt"), sd, tune.select_classes(classes), epochs=args.ft_epochs, lr=0.05,
            seed=seed, force=args.force,
        )  # fmt: skip
    ingredients = {}
    for lr in [float(v) for v in args.soup_lrs.split(",")]:
        for seed in [int(v) for v in args.soup_seeds.split(",")]:
            label = f"lr{lr:g}-s{seed}"
            ingredients[label] = _trained(
                os.path.join(d, f"soup-{label}.pt"), sd, tune, epochs=args.soup_epochs, lr=lr, seed=100 + seed,
                force=args.force,
            )  # fmt: skip
    w = lambda m: ls.Weights.from_module(m)  # noqa: E731
    return base, w(base), {k: w(m) for k, m in fts.items()}, {k: w(m) for k, m in ingredients.items()}


def grids(args, base, fts, ingredients, model, splits):
    n = 6 if args.quick else 16
    lam = np.linspace(0.0, 1.5, n)
    lam2 = np.linspace(0.0, 2.0, 6 if args.quick else 21)
    pair = [fts["low"], fts["high"]]
    soup = merge.greedy_soup(model, list(ingredients.values()), splits["held"], metric="acc")
    out = {
        "task-arithmetic": merge.task_arithmetic_grid(base, pair, lam),
        "lambda-plane": merge.task_arithmetic_plane(base, pair, lam, lam),
        "ties": merge.ties_grid(base, pair, [0.1, 0.2, 0.5, 1.0], lam2),
        "dare": merge.dare_grid(base, pair, [0.5, 0.9], [0, 1, 2], lam2),
        "dare-ties": merge.dare_grid(base, pair, [0.5, 0.9], [0, 1, 2], lam2, combine="ties"),
        "slerp": merge.slerp_grid(fts["low"], fts["high"], np.linspace(0, 1, 11)),
        "wise-ft": merge.wise_ft_grid(base, fts["low"], np.linspace(0, 1, 11)),
        "soups": merge.soup_grid(
            list(ingredients.values()),
            {"uniform": list(range(len(ingredients))), "greedy": soup.members},
            names=list(ingredients),
            method="greedy-soup",
        ),
    }
    return out, soup


def _best(res, split="held"):
    """The cell with the best held-out accuracy (first on ties) and its parameters."""
    acc = res[f"{split}_acc"]
    idx = np.unravel_index(int(np.nanargmax(acc)), acc.shape)
    params = {}
    for (name, values), i in zip(res.grid.axes, idx, strict=True):
        params[name] = res.grid.rows[i] if name == "row" else float(values[i])
    return idx, params


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.base_epochs, args.ft_epochs, args.soup_epochs = 1, 3, 2
        args.out_dir = os.path.join(args.out_dir, "quick")
    os.makedirs(os.path.join(args.out_dir, "figures"), exist_ok=True)
    if args.lm_dir:
        lm_part(args)
        if args.lm_only:
            return 0
    t0 = time.perf_counter()
    tune, splits = _data()
    model, base, fts, ingredients = networks(args, tune)
    t_train = time.perf_counter() - t0
    all_grids, soup = grids(args, base, fts, ingredients, model, splits)
    results, rows, timings = {}, [], {}
    singles = ls.evaluate(model, [base, fts["low"], fts["high"]], splits["test"], ["acc"], progress=False)
    for name, g in all_grids.items():
        path = os.path.join(args.out_dir, f"{name}.h5")
        resume = os.path.exists(path) and not args.force
        t1 = time.perf_counter()
        res = merge.evaluate_merges(
            model, g, splits, metrics=("loss", "acc"), out=path, resume=resume, force=args.force, progress=False
        )
        timings[name] = time.perf_counter() - t1
        results[name] = res
        plot_file(path, os.path.join(args.out_dir, "figures"), formats=("png",), force=True,
                  metrics=["test_acc", "test-low_acc", "test-high_acc"])  # fmt: skip
        picks = [_best(res)]
        if name == "soups":  # the soups themselves, not the best ingredient
            picks = [((g.rows.index(r),), {"row": r}) for r in ("uniform", "greedy")]
        for idx, params in picks:
            rows.append(
                {
                    "method": name,
                    "cells": int(g.points.K),
                    "chosen on held-out": params,
                    **{f"{s}_acc": float(res[f"{s}_acc"][idx]) for s in ("test-low", "test-high", "test", "held")},
                    "seconds": round(timings[name], 2),
                    "computed": int(res.evaluated),
                }
            )
    soups = results["soups"]
    per_model = {}
    for label, w in (("base", base), ("fine-tune low", fts["low"]), ("fine-tune high", fts["high"])):
        per_model[label] = {
            s: float(ls.evaluate(model, [w], d, ["acc"], progress=False)["acc"][0]) for s, d in splits.items()
        }
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), {args.threads} thread(s)",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "args": vars(args),
        "training-seconds": round(t_train, 1),
        "models": per_model,
        "rows": rows,
        "greedy-soup": {
            "members": [list(ingredients)[i] for i in soup.members],
            "order": [list(ingredients)[i] for i in soup.order],
            "held-out individual acc": dict(zip(ingredients, map(float, soup.individual), strict=True)),
            "held-out score": soup.score,
            "passes": soup.passes,
            "history": soup.history,
        },
        "soups-table": {
            label: {s: float(soups[f"{s}_acc"][i]) for s in ("test", "held")} for i, label in enumerate(soups.grid.rows)
        },
        "lambda-plane-test-acc": results["lambda-plane"]["test_acc"].tolist(),
        "lambda-plane-lambdas": np.asarray(all_grids["lambda-plane"].axes[0][1]).tolist(),
        "single-check": singles["acc"].tolist(),
    }
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = _markdown(summary)
    with open(os.path.join(args.out_dir, "summary.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def _fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def _markdown(s: dict) -> str:
    out = ["| Model / method | Chosen on held-out | test 0-4 (%) | test 5-9 (%) | test union (%) | held-out (%) |"]
    out.append("|---|---|---:|---:|---:|---:|")
    for label, m in s["models"].items():
        out.append(
            f"| {label} | — | {100 * m['test-low']:.2f} | {100 * m['test-high']:.2f} | {100 * m['test']:.2f} | "
            f"{100 * m['held']:.2f} |"
        )
    for r in s["rows"]:
        out.append(
            f"| {r['method']} ({r['cells']} cells) | {_fmt_params(r['chosen on held-out'])} | "
            f"{100 * r['test-low_acc']:.2f} | {100 * r['test-high_acc']:.2f} | {100 * r['test_acc']:.2f} | "
            f"{100 * r['held_acc']:.2f} |"
        )
    out.append("")
    out.append("| Soup row | held-out acc (%) | test acc (%) |")
    out.append("|---|---:|---:|")
    for label, v in s["soups-table"].items():
        out.append(f"| {label} | {100 * v['held']:.2f} | {100 * v['test']:.2f} |")
    out.append("")
    lams = s["lambda-plane-lambdas"]
    acc = np.asarray(s["lambda-plane-test-acc"])
    pick = sorted(set(np.linspace(0, len(lams) - 1, min(6, len(lams))).round().astype(int).tolist()))
    out.append("| λ_low \\ λ_high | " + " | ".join(f"{lams[j]:.2f}" for j in pick) + " |")
    out.append("|---|" + "---:|" * len(pick))
    for i in pick:
        out.append(f"| {lams[i]:.2f} | " + " | ".join(f"{100 * acc[i, j]:.1f}" for j in pick) + " |")
    out.append("")
    out.append("Evaluation seconds per grid: " + ", ".join(f"{r['method']} {r['seconds']}" for r in s["rows"]))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the language model


def _spread(data, n: int):
    idx = np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(np.int64))
    x = data.x[torch.as_tensor(idx)]
    return ls.TensorData(x, x.clone(), spec=data.spec, num_classes=256, split=data.split, info={"subset": idx.tolist()})


def _lm_corpus(lm_dir: str, n: int):
    """Test sequences of every corpus part and train sequences of the fine-tuning parts, read
    with ``text:`` specs of the packages that ``example_lm.py`` recorded in settings.json."""
    with open(os.path.join(lm_dir, "settings.json")) as f:
        settings = json.load(f)
    parts, seq = settings["corpus-parts"], settings["settings"]["seq_len"]
    stdlib = os.path.dirname(os.__file__)
    splits = {}
    for part, packages in parts.items():
        for split, label, count in (("test", "test", n), ("train", "held", (2 * n) // 3)):
            if label == "held" and part == "base":
                continue
            chunks = [ls.load_data(f"text:{os.path.join(stdlib, p)}:seq={seq}:ext=py", split) for p in packages]
            x = torch.cat([c.x for c in chunks])
            whole = ls.TensorData(
                x, x.clone(), spec=f"stdlib:{'+'.join(packages)}:seq={seq}", num_classes=256, split=split
            )
            splits[f"{label}-{part}"] = _spread(whole, count)
    return splits, [p for p in parts if p != "base"]


def lm_part(args) -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    out = os.path.join(args.out_dir, "lm")
    os.makedirs(os.path.join(out, "figures"), exist_ok=True)
    models = os.path.join(args.lm_dir, "models")
    model = ls.build_model(f"hf:{os.path.join(models, 'base')}")
    base = ls.load_checkpoint(os.path.join(models, "base"), model)
    splits, tasks = _lm_corpus(args.lm_dir, args.lm_sequences if not args.quick else 16)
    fts = [ls.load_checkpoint(os.path.join(models, "ft-" + t.replace("_", "-")), model) for t in tasks]
    records = [
        {"role": r, "path": w.source, "sha256": w.sha256} for r, w in zip(["base", *tasks], [base, *fts], strict=True)
    ]
    lam = np.linspace(0.0, 1.5, 4 if args.quick else 7)
    grids = {
        "task-arithmetic": merge.task_arithmetic_grid(base, fts, lam),
        "lambda-plane": merge.task_arithmetic_plane(base, fts, lam, lam),
        "ties": merge.ties_grid(base, fts, [0.2, 0.5, 1.0], lam),
        "dare": merge.dare_grid(base, fts, [0.5, 0.9], [0], lam),
        "slerp": merge.slerp_grid(fts[0], fts[1], np.linspace(0, 1, 6 if args.quick else 11)),
        "wise-ft": merge.wise_ft_grid(base, fts[0], np.linspace(0, 1, 6)),
    }
    metrics = ("token_loss", "perplexity")
    held = [f"held-{t}_token_loss" for t in tasks]
    singles = ls.evaluate(model, [base, *fts], splits["test-base"], ["perplexity"], progress=False)  # sanity
    rows = {}
    for label, w in (("base", base), *((f"fine-tune {t}", f) for t, f in zip(tasks, fts, strict=True))):
        rows[label] = {"chosen": "—", **{s: float(ls.evaluate(model, [w], d, ["perplexity"], progress=False)["perplexity"][0]) for s, d in splits.items()}}  # fmt: skip
    timings = {}
    for name, g in grids.items():
        path = os.path.join(out, f"{name}.h5")
        t1 = time.perf_counter()
        res = merge.evaluate_merges(
            model, g, splits, metrics=metrics, out=path, resume=os.path.exists(path) and not args.force,
            force=args.force, progress=False, attrs={"checkpoints": records},
        )  # fmt: skip
        timings[name] = round(time.perf_counter() - t1, 1)
        plot_file(path, os.path.join(out, "figures"), formats=("png",), force=True,
                  metrics=[f"test-{t}_perplexity" for t in tasks])  # fmt: skip
        score = np.mean([res[h] for h in held], axis=0)
        idx = np.unravel_index(int(np.nanargmin(score)), score.shape)
        chosen = ", ".join(f"{a}={v[i]:g}" for (a, v), i in zip(g.axes, idx, strict=True))
        rows[f"{name} ({g.points.K})"] = {"chosen": chosen, **{s: float(res[f"{s}_perplexity"][idx]) for s in splits}}
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "lm-dir": os.path.abspath(args.lm_dir),
        "torch": torch.__version__,
        "threads": args.threads,
        "splits": {s: len(d) for s, d in splits.items()},
        "rows": rows,
        "seconds": timings,
        "check-base-perplexity": float(singles["perplexity"][0]),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    names = list(splits)
    lines = ["| Model / method (cells) | Chosen on train loss | " + " | ".join(f"{s} ppl" for s in names) + " |"]
    lines.append("|---|---|" + "---:|" * len(names))
    for label, r in rows.items():
        lines.append(f"| {label} | {r['chosen']} | " + " | ".join(f"{r[s]:.3f}" for s in names) + " |")
    lines.append("")
    lines.append("Evaluation seconds per grid: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    md = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
