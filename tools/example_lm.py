"""A worked example on real data that needs no download: a small byte-level GPT-2 trained on the
Python standard library's own source files, then analysed with the public API.

Corpus
    The ``*.py`` files of fixed standard-library packages, found next to ``os.__file__`` (every
    Python installation has them): a *base* part for pre-training and two *different* parts for
    two fine-tunes (``json`` + ``email`` and ``asyncio``). Each package is read with
    ``ls.load_data("text:<package dir>:seq=T:ext=py", split)`` (bytes as tokens, vocabulary 256,
    every 10th sequence of a package is test); the files (relative path, size, sha256) and the
    digest of each package's bytes are written to ``corpus.json`` and to every result file's
    attributes. Another Python version has other files: the digests say which were used.

Model
    ``transformers.GPT2Config`` (4 layers, width 128, 4 heads, byte vocabulary 256,
    ``n_positions`` = sequence length 128, no dropout; 0.84M parameters), its ``config.json``
    written by ``save_pretrained`` to ``models/init`` and the model built from that folder
    alone with ``ls.build_model("hf:DIR")``; pre-trained with AdamW on the base part, then
    fine-tuned twice from the base on the two other parts (fixed seeds, fixed step counts).
    Checkpoints are Hugging Face folders under ``models/``, read back with
    ``ls.load_checkpoint``. (Width 256 costs 3.4x more per step on two busy cores: 2.2 against
    0.65 s per batch of 16 x 128 bytes, which does not fit the ten minutes.)

Analyses (each an HDF5 file in ``--out-dir``; figures under ``figures/`` by ``landscape.plot``)
    ``line.h5``      the straight line between the two fine-tunes (token loss and perplexity on
                     the test sequences of both fine-tuning parts)
    ``plane.h5``     a filter-normalized random plane around the base (base test sequences)
    ``curve.pt``     a quadratic Bezier curve between the fine-tunes, fitted with
                     ``loss="token_loss"`` on both parts' training sequences, and
    ``curve.h5``     its profile against the straight line (barriers)
    ``hessian.h5``   lambda_max and lambda_min of the token-loss Hessian at the base (Lanczos)
    ``ensemble.h5``  the ensemble of base + fine-tunes: perplexity of the averaged next-token
                     probabilities next to each member's
                     (``landscape.ensembles.metrics.ensemble_token_metrics``)
    ``summary.json`` every number above, the training records and the seconds of each stage.

Rerunning into the same ``--out-dir`` reuses every finished file (checkpoints, results,
figures) and resumes a partly written surface (``--resume``, the default); ``--force``
recomputes everything. A run with other settings into the same folder is refused.

Usage::

    python tools/example_lm.py --out-dir /tmp/example-lm --threads 1   # 5-10 minutes on 2 cores
    python tools/example_lm.py --quick --out-dir /tmp/example-q        # tiny model, under a minute

``--threads`` (default 2) sets ``torch.set_num_threads``. On two cores that other processes
also use, one thread was 4x faster than two (0.53 against 2.1 s per training step: the second
thread's OpenMP spin-waits compete with the other processes); the results in RESULTS.md were
made with ``--threads 1`` (another thread count changes the floating-point sums, so the
numbers differ in the last digits and training drifts slightly).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

import landscape as ls
from landscape import hessian
from landscape.curves import Curve, barrier, evaluate_curve, fit_curve
from landscape.ensembles.metrics import ensemble_token_metrics
from landscape.io import open_result
from landscape.plot import plot_file
from landscape.train import TrainBatches, loss_of

STDLIB = os.path.dirname(os.__file__)
#: the corpus: part -> standard-library packages (folders next to os.py), read in this order
PARTS = {
    "base": ("collections", "concurrent", "http", "importlib", "logging", "urllib", "xml"),
    "json_email": ("json", "email"),
    "asyncio": ("asyncio",),
}
FINETUNES = ("json_email", "asyncio")
METRICS = ("token_loss", "perplexity")

FULL = {
    "model": {"n_embd": 128, "n_layer": 4, "n_head": 4},
    "seq_len": 128,
    "seed": 0,
    "pretrain": {"steps": 500, "batch_size": 16, "lr": 2e-3, "warmup": 25, "weight_decay": 0.1},
    "finetune": {"steps": 100, "batch_size": 16, "lr": 1e-3, "warmup": 0, "weight_decay": 0.1},
    "eval_sequences": 48,  # test (and train) sequences per part for every evaluation, evenly spaced
    "line_points": 21,
    "plane": {"points": 11, "range": 1.0, "seed": 1},
    "curve": {"sequences": 192, "epochs": 4, "batch_size": 16, "lr": 0.05, "points": 21, "seed": 2},
    "hessian": {"sequences": 48, "max_iter": 30, "tol": 1e-2, "seed": 0},
    "ensemble_sequences": 48,
}
QUICK = {
    "model": {"n_embd": 32, "n_layer": 2, "n_head": 2},
    "seq_len": 32,
    "seed": 0,
    "pretrain": {"steps": 30, "batch_size": 16, "lr": 3e-3, "warmup": 3, "weight_decay": 0.1},
    "finetune": {"steps": 10, "batch_size": 16, "lr": 1e-3, "warmup": 0, "weight_decay": 0.1},
    "eval_sequences": 8,
    "line_points": 5,
    "plane": {"points": 3, "range": 1.0, "seed": 1},
    "curve": {"sequences": 16, "epochs": 1, "batch_size": 8, "lr": 0.05, "points": 5, "seed": 2},
    "hessian": {"sequences": 8, "max_iter": 8, "tol": 1e-2, "seed": 0},
    "ensemble_sequences": 8,
}


# --------------------------------------------------------------------------- corpus
def _package_files(package: str) -> list[dict]:
    """The files ``text:<dir>:ext=py`` reads, in its order (sorted relative paths; hidden
    files and folders and ``__pycache__`` skipped), with their size and sha256."""
    root = os.path.join(STDLIB, package)
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            full = os.path.join(directory, name)
            if name.startswith(".") or not name.lower().endswith(".py") or not os.path.isfile(full):
                continue
            found.append((os.path.relpath(full, STDLIB).replace(os.sep, "/"), full))
    out = []
    for rel, full in sorted(found, key=lambda f: os.path.relpath(f[1], root).replace(os.sep, "/")):
        with open(full, "rb") as f:
            data = f.read()
        out.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return out


def load_corpus(seq_len: int) -> tuple[dict, dict]:
    """``({part: {"train": TensorData, "test": TensorData}}, record)``."""
    data, record = {}, {"stdlib": STDLIB, "python": platform.python_version(), "seq_len": seq_len, "parts": {}}
    for part, packages in PARTS.items():
        splits = {"train": [], "test": []}
        packs, files = [], []
        for pkg in packages:
            spec = f"text:{os.path.join(STDLIB, pkg)}:seq={seq_len}:ext=py"
            for split in splits:
                splits[split].append(ls.load_data(spec, split))
            info = splits["test"][-1].info
            listed = _package_files(pkg)
            concat = hashlib.sha256()
            for f in listed:
                with open(os.path.join(STDLIB, f["path"]), "rb") as fh:
                    concat.update(fh.read())
            if len(listed) != info["text_files"] or concat.hexdigest() != info["text_sha256"]:
                raise RuntimeError(f"the file list of {pkg} differs from what load_data read")
            packs.append(
                {
                    "package": pkg,
                    "spec": spec,
                    "files": len(listed),
                    "bytes": info["text_bytes"],
                    "sha256": info["text_sha256"],
                    "sequences": info["text_sequences"],
                }
            )
            files += listed
        data[part] = {}
        for split, chunks in splits.items():
            x = torch.cat([d.x for d in chunks])
            data[part][split] = ls.TensorData(
                x,
                x.clone(),
                spec=f"stdlib:{'+'.join(packages)}:seq={seq_len}",
                num_classes=256,
                split=split,
                info={"packages": list(packages), "text_sha256": [p["sha256"] for p in packs]},
            )
        record["parts"][part] = {
            "packages": packs,
            "bytes": sum(p["bytes"] for p in packs),
            "train_sequences": len(data[part]["train"]),
            "test_sequences": len(data[part]["test"]),
            "files": files,
        }
    return data, record


def corpus_attrs(record: dict) -> dict:
    """What every result file records about the corpus (packages, digests; the per-file list
    is in corpus.json and in the attribute ``corpus-files``: ``path sha256`` per file)."""
    return {
        "corpus-python": record["python"],
        "corpus-stdlib": record["stdlib"],
        "corpus-parts": {p: [(k["package"], k["sha256"]) for k in r["packages"]] for p, r in record["parts"].items()},
        "corpus-files": [f"{f['path']} {f['sha256']}" for r in record["parts"].values() for f in r["files"]],
    }


def spread(data: ls.TensorData, n: int, name: str) -> ls.TensorData:
    """``n`` sequences evenly spaced over ``data`` (all when it has fewer)."""
    idx = np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(np.int64))
    x = data.x[torch.as_tensor(idx)]
    info = {**data.info, "subset": name, "subset-of": len(data), "subset-indices": idx.tolist()}
    return ls.TensorData(x, x.clone(), spec=data.spec, num_classes=256, split=data.split, info=info)


# --------------------------------------------------------------------------- models and training
def write_config(folder: str, cfg: dict, seq_len: int) -> None:
    import transformers

    config = transformers.GPT2Config(
        vocab_size=256,
        n_positions=seq_len,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        architectures=["GPT2LMHeadModel"],
        **cfg,
    )
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_lm(model, data, opts: dict, seed: int) -> dict:
    """AdamW on the token loss (decay on weight matrices only), ``opts["steps"]`` minibatches
    drawn by ``TrainBatches.stream`` (fresh permutations); returns the record."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    batches = TrainBatches.for_module(model, data, opts["batch_size"], generator=gen).stream()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
        lr=opts["lr"],
        betas=(0.9, 0.95),
    )
    model.train()
    history, window, t0 = [], [], time.perf_counter()
    for step in range(opts["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, opts["steps"], opts["lr"], opts["warmup"])
        loss = loss_of(model, None, next(batches), "token_loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % max(1, opts["steps"] // 10) == 0 or step + 1 == opts["steps"]:
            history.append({"step": step + 1, "minibatch_token_loss": float(np.mean(window))})
            print(f"    step {step + 1}/{opts['steps']}: token loss {history[-1]['minibatch_token_loss']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            window = []
    model.eval()
    return {
        "steps": opts["steps"],
        "batch_size": opts["batch_size"],
        "tokens": opts["steps"] * opts["batch_size"] * int(data.x.shape[1]),
        "optimizer": f"AdamW(lr={opts['lr']}, betas=(0.9, 0.95), weight_decay={opts['weight_decay']} on matrices)",
        "schedule": f"{opts['warmup']} warm-up steps, cosine to lr/10; gradient norm clipped at 1",
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "history": history,
    }


def token_metrics(model, weights, data) -> dict:
    r = ls.evaluate(model, weights, data, METRICS, progress=False)
    return {m: float(r[m][0]) for m in METRICS}


# --------------------------------------------------------------------------- bookkeeping
class Stages:
    """Seconds of every stage, kept in ``stages.json``; a reused stage reports the seconds of
    the run that computed it."""

    def __init__(self, out_dir: str, force: bool):
        self.path = os.path.join(out_dir, "stages.json")
        self.saved = {}
        if os.path.exists(self.path) and not force:
            with open(self.path) as f:
                self.saved = json.load(f)
        self.now: dict[str, dict] = {}

    def run(self, name: str, done: bool, fn):
        t0 = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - t0
        if done and name in self.saved:
            self.now[name] = {"seconds": self.saved[name]["seconds"], "reused": True}
        else:
            self.now[name] = {"seconds": seconds, "reused": bool(done)}
        self.saved[name] = self.now[name]
        with open(self.path, "w") as f:
            json.dump(self.saved, f, indent=1)
        state = "reused" if self.now[name]["reused"] else f"{seconds:.1f} s"
        print(f"[{name}] {state}", flush=True)
        return value


def complete(path: str) -> bool:
    if not os.path.exists(path):
        return False
    try:
        with open_result(path) as rf:
            return rf.pending().size == 0
    except Exception:  # noqa: BLE001 - an unreadable file is redone
        return False


def figures(h5: str, fig_dir: str, force: bool, metrics=None) -> list[str]:
    stem = os.path.splitext(os.path.basename(h5))[0]
    have = (
        [f for f in os.listdir(fig_dir) if f.startswith(stem + "-") and f.endswith(".png")]
        if os.path.isdir(fig_dir)
        else []
    )
    if have and not force:
        return sorted(os.path.join(fig_dir, f) for f in have)
    return plot_file(h5, fig_dir, formats=("png",), metrics=metrics, force=True)


def excess_over_chord(loss: np.ndarray, t: np.ndarray) -> float:
    """Largest ``loss(t) - ((1 - t) loss(0) + t loss(1))``: how far a path rises above the
    straight interpolation of its endpoint losses (0 for a convex-looking profile)."""
    chord = (1 - t) * loss[0] + t * loss[-1]
    return float(np.max(loss - chord))


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", default="example-lm", help="output folder (default: ./example-lm)")
    p.add_argument("--quick", action="store_true", help="tiny model, few steps, small grids (under a minute)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="reuse finished files, resume partial ones (the default)")
    g.add_argument("--force", action="store_true", help="recompute everything")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    t_start = time.perf_counter()
    S = QUICK if args.quick else FULL
    out = os.path.abspath(args.out_dir)
    fig_dir = os.path.join(out, "figures")
    os.makedirs(out, exist_ok=True)
    settings = {"settings": S, "corpus-parts": PARTS, "python": platform.python_version()}
    settings_path = os.path.join(out, "settings.json")
    if os.path.exists(settings_path) and not args.force:
        with open(settings_path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(settings)):
            print(f"{out} holds a run with other settings; pass --force to replace it", file=sys.stderr)
            return 2
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=1)
    force, resume = args.force, not args.force
    stages = Stages(out, force)

    def finished(path: str) -> bool:
        return not force and complete(path)

    def reuse_figures(h5: str, metrics=None) -> list[str]:
        return figures(h5, fig_dir, False, metrics)

    T = S["seq_len"]

    # 1. corpus
    data, corpus = stages.run("corpus", False, lambda: load_corpus(T))
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump(corpus, f, indent=1)
    cattrs = corpus_attrs(corpus)
    evals = {part: spread(data[part]["test"], S["eval_sequences"], "eval") for part in PARTS}
    evals_train = {part: spread(data[part]["train"], S["eval_sequences"], "eval-train") for part in PARTS}
    for part, r in corpus["parts"].items():
        print(
            f"  {part:10s} {'+'.join(PARTS[part]):62s} {sum(k['files'] for k in r['packages']):4d} files "
            f"{r['bytes']:8d} bytes  {r['train_sequences']} train / {r['test_sequences']} test sequences"
        )

    # 2. pre-training and 3. fine-tunes
    models_dir = os.path.join(out, "models")
    folder = {"base": os.path.join(models_dir, "base")}
    folder.update({part: os.path.join(models_dir, "ft-" + part.replace("_", "-")) for part in FINETUNES})
    records: dict[str, dict] = {}

    def trained(name: str) -> bool:
        return not force and os.path.exists(os.path.join(folder[name], "train.json"))

    def train_one(name: str, part: str, start: str | None, opts: dict, seed: int) -> dict:
        rec_path = os.path.join(folder[name], "train.json")
        if trained(name):
            with open(rec_path) as f:
                return json.load(f)
        if start is None:  # from the config alone: the architecture folder holds config.json only
            init = os.path.join(models_dir, "init")
            write_config(init, S["model"], T)
            torch.manual_seed(seed)
            model = ls.build_model(f"hf:{init}")
        else:
            model = ls.build_model(f"hf:{folder[start]}")
            model.load_state_dict(dict(ls.load_checkpoint(folder[start], model)))
        assert model.lm_head.weight is model.transformer.wte.weight
        rec = train_lm(model, data[part]["train"], opts, seed)
        model.save_pretrained(folder[name])
        rebuilt = ls.build_model(f"hf:{folder[name]}")
        w = ls.load_checkpoint(folder[name], rebuilt)
        rec.update(
            part=part,
            start=start or "random initialisation (config.json alone)",
            parameters=sum(p.numel() for p in model.parameters()),
            sha256=w.sha256,
            train_eval=token_metrics(rebuilt, w, evals_train[part]),
            test_eval=token_metrics(rebuilt, w, evals[part]),
        )
        with open(rec_path, "w") as f:
            json.dump(rec, f, indent=1)
        return rec

    records["base"] = stages.run(
        "pretrain", trained("base"), lambda: train_one("base", "base", None, S["pretrain"], S["seed"])
    )
    ft_done = all(trained(p) for p in FINETUNES)
    stages.run(
        "finetune",
        ft_done,
        lambda: records.update(
            {p: train_one(p, p, "base", S["finetune"], S["seed"] + 1 + i) for i, p in enumerate(FINETUNES)}
        ),
    )
    model = ls.build_model(f"hf:{folder['base']}")
    W = {name: ls.load_checkpoint(path, model) for name, path in folder.items()}
    names = ["base", *FINETUNES]
    model_attrs = {
        "model": f"hf:{folder['base']}",
        "model-config": S["model"] | {"vocab_size": 256, "n_positions": T},
        "checkpoints": {n: {"path": folder[n], "sha256": W[n].sha256} for n in names},
        "eval-sequences-per-part": S["eval_sequences"],
        **cattrs,
    }

    # every model on every part (test subsets)
    eval_path = os.path.join(out, "evaluation.json")

    def evaluate_models():
        if not force and os.path.exists(eval_path):
            with open(eval_path) as f:
                return json.load(f)
        table = {n: {part: token_metrics(model, W[n], evals[part]) for part in PARTS} for n in names}
        with open(eval_path, "w") as f:
            json.dump(table, f, indent=1)
        return table

    table = stages.run("evaluate", not force and os.path.exists(eval_path), evaluate_models)

    # 4a. the line between the fine-tunes
    line_path = os.path.join(out, "line.h5")
    xs = np.linspace(0.0, 1.0, S["line_points"])
    ft_splits = {part: evals[part] for part in FINETUNES}

    def line():
        plane = ls.directions.line_through(W[FINETUNES[0]], W[FINETUNES[1]])
        ls.compute_surface(
            model, plane, xs, splits=ft_splits, metrics=METRICS, out=line_path, resume=resume, force=force,
            attrs=model_attrs | {"endpoints": list(FINETUNES)}, progress=False,
        )  # fmt: skip
        return figures(line_path, fig_dir, True)

    line_figs = stages.run(
        "line", finished(line_path), lambda: reuse_figures(line_path) if finished(line_path) else line()
    )

    # 4b. a filter-normalized random plane around the base
    plane_path = os.path.join(out, "plane.h5")
    grid = np.linspace(-S["plane"]["range"], S["plane"]["range"], S["plane"]["points"])

    def plane():
        pl = ls.directions.random_plane(W["base"], seed=S["plane"]["seed"])
        ls.compute_surface(
            model, pl, grid, grid, splits={"base": evals["base"]}, metrics=METRICS, out=plane_path, resume=resume,
            force=force, attrs=model_attrs | {"center": "base"}, progress=False,
        )  # fmt: skip
        return figures(plane_path, fig_dir, True)

    plane_figs = stages.run(
        "plane", finished(plane_path), lambda: reuse_figures(plane_path) if finished(plane_path) else plane()
    )

    # 4c. a quadratic Bezier curve between the fine-tunes, and its profile against the line
    curve_pt, curve_path = os.path.join(out, "curve.pt"), os.path.join(out, "curve.h5")
    C = S["curve"]
    curve_train = {part: spread(data[part]["train"], C["sequences"], "curve-train") for part in FINETUNES}
    mixed = torch.cat([curve_train[p].x for p in FINETUNES])
    curve_data = ls.TensorData(mixed, mixed.clone(), spec="+".join(FINETUNES), num_classes=256, split="train")
    fit_info: dict = {}

    def curve():
        c = Curve(W[FINETUNES[0]], W[FINETUNES[1]], n_bends=1, kind="bezier")
        fit = fit_curve(
            model, c, curve_data, epochs=C["epochs"], batch_size=C["batch_size"], lr=C["lr"], momentum=0.9,
            weight_decay=0.0, schedule="garipov", seed=C["seed"], checkpoint=curve_pt, resume=resume, force=force,
            progress=False, loss="token_loss",
        )  # fmt: skip
        fit_info.update(history=fit.history, fit_seconds=fit.seconds)
        evaluate_curve(
            model, c, ft_splits, points=C["points"], metrics=METRICS, bn="running", out=curve_path, resume=resume,
            force=force, progress=False, attrs=model_attrs | {"curve-fit": C | {"loss": "token_loss"}},
        )  # fmt: skip
        return figures(curve_path, fig_dir, True, metrics=[f"{p}_token_loss" for p in FINETUNES])

    curve_figs = stages.run(
        "curve",
        finished(curve_path),
        lambda: reuse_figures(curve_path, [f"{p}_token_loss" for p in FINETUNES]) if finished(curve_path) else curve(),
    )

    # 4d. extreme eigenvalues of the token-loss Hessian at the base
    hess_path = os.path.join(out, "hessian.h5")
    Hs = S["hessian"]
    hess_data = spread(data["base"]["test"], Hs["sequences"], "hessian")

    def eig():
        op = hessian.HVP(model, W["base"], hess_data, loss="token_loss", dtype=torch.float32)
        r = hessian.lanczos(op, tol=Hs["tol"], max_iter=Hs["max_iter"], seed=Hs["seed"])
        attrs = model_attrs | {
            "point": "base",
            "data": hess_data.describe(),
            "loss": "token_loss",
            "precision": "fp32",
            "method": "lanczos",
            "tol": Hs["tol"],
            "max-iter": Hs["max_iter"],
            "seed": Hs["seed"],
            "hvps": int(r.hvps),
            "converged": bool(r.converged),
            "residuals": [float(v) for v in r.residuals],
            "selection": {k: v for k, v in op.selection.items() if k != "names"},
        }
        with ls.create_result(
            hess_path, kind="hessian-eig", shape=(1,), metrics=["lambda_max", "lambda_min", "eig_ratio"],
            attrs=attrs, force=True,
        ) as rf:  # fmt: skip
            rf.write_cells([0], {"lambda_max": [r.lambda_max], "lambda_min": [r.lambda_min], "eig_ratio": [r.ratio]})

    stages.run("hessian", finished(hess_path), lambda: None if finished(hess_path) else eig())

    # 4e. the ensemble of base + fine-tunes
    ens_path = os.path.join(out, "ensemble.h5")
    ens_data = {part: spread(data[part]["test"], S["ensemble_sequences"], "ensemble") for part in PARTS}
    per_member = ("member_token_loss", "member_perplexity", "member_token_acc")
    per_member += ("cumulative_token_loss", "cumulative_perplexity", "cumulative_token_acc")

    def ensemble():
        res = {part: ensemble_token_metrics(model, [W[n] for n in names], d) for part, d in ens_data.items()}
        attrs = model_attrs | {
            "members": names,
            "splits": {part: d.describe() for part, d in ens_data.items()},
            "ensemble": "mean of the members' next-token probabilities",
        }
        for part, r in res.items():
            attrs |= {f"{part}-token_loss": r.token_loss, f"{part}-perplexity": r.perplexity}
            attrs |= {f"{part}-token_acc": r.token_acc, f"{part}-tokens": r.tokens}
        metric_names = [f"{part}_{m}" for part in PARTS for m in per_member]
        with ls.create_result(
            ens_path, kind="ensemble-tokens", shape=(len(names),), metrics=metric_names, attrs=attrs, force=True
        ) as rf:
            rf.write_cells(
                list(range(len(names))), {f"{part}_{m}": getattr(r, m) for part, r in res.items() for m in per_member}
            )

    stages.run("ensemble", finished(ens_path), lambda: None if finished(ens_path) else ensemble())

    # 5. summary
    summary = summarize(out, S, corpus, folder, names, table, line_path, plane_path, curve_path, hess_path, ens_path)
    summary["figures"] = [os.path.relpath(f, out) for f in (*line_figs, *plane_figs, *curve_figs)]
    summary["curve"]["fit_history"] = fit_info.get("history") or _curve_history(curve_pt, model)
    summary["stages"] = stages.now
    summary["stages_total_seconds"] = sum(v["seconds"] for v in stages.now.values())
    summary["wall_seconds_this_run"] = time.perf_counter() - t_start
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print_summary(summary)
    print(f"\nwritten to {out} (summary.json)")
    return 0


def _curve_history(path: str, model) -> list:
    if not os.path.exists(path):
        return []
    return ls.curves.load_curve(path, model)[1].get("history", [])


def summarize(out, S, corpus, folder, names, table, line_path, plane_path, curve_path, hess_path, ens_path) -> dict:
    s: dict = {"settings": S, "out_dir": out, "python": corpus["python"], "torch": torch.__version__}
    s["corpus"] = {
        part: {
            "packages": [k["package"] for k in r["packages"]],
            "files": sum(k["files"] for k in r["packages"]),
            "bytes": r["bytes"],
        }
        for part, r in corpus["parts"].items()
    }
    s["models"] = {}
    for n in names:
        with open(os.path.join(folder[n], "train.json")) as f:
            rec = json.load(f)
        s["models"][n] = {k: rec[k] for k in ("part", "steps", "tokens", "seconds", "parameters", "sha256")}
        s["models"][n] |= {"train_eval": rec["train_eval"], "test_eval": rec["test_eval"], "eval": table[n]}
    with open_result(line_path) as rf:
        x = rf.read_array("x")
        line = {part: rf.read_metric(f"{part}_token_loss") for part in FINETUNES}
    both = np.mean([line[p] for p in FINETUNES], 0)  # equal token counts: the loss on both parts
    s["line"] = {"t": x.tolist()}
    for part, v in [*line.items(), ("both", both)]:
        h, at = barrier(v, x)
        s["line"][part] = {
            "token_loss": v.tolist(),
            "barrier": h,
            "barrier_t": at,
            "excess_over_chord": excess_over_chord(v, x),
        }
    with open_result(plane_path) as rf:
        pl = rf.read_metric("base_token_loss")
        gx = rf.read_array("x")
    c = len(gx) // 2
    s["plane"] = {
        "range": [float(gx[0]), float(gx[-1])],
        "points": len(gx),
        "center_token_loss": float(pl[c, c]),
        "min_token_loss": float(pl.min()),
        "max_token_loss": float(pl.max()),
        "corner_token_loss": [float(pl[i, j]) for i in (0, -1) for j in (0, -1)],
    }
    with open_result(curve_path) as rf:
        t = rf.read_array("t")
        prof = {part: rf.read_metric(f"{part}_token_loss") for part in FINETUNES}
    prof["both"] = np.mean([prof[p] for p in FINETUNES], 0)
    s["curve"] = {"t": t.tolist()}
    for part, v in prof.items():
        entry = {}
        for r, row in enumerate(("curve", "line")):
            h, at = barrier(v[r], t)
            entry[row] = {
                "token_loss": v[r].tolist(),
                "barrier": h,
                "barrier_t": at,
                "max": float(v[r].max()),
                "excess_over_chord": excess_over_chord(v[r], t),
                "mean": float(v[r].mean()),
            }
        s["curve"][part] = entry
    with open_result(hess_path) as rf:
        a = rf.attrs
        s["hessian"] = {
            "lambda_max": float(rf.read_metric("lambda_max")[0]),
            "lambda_min": float(rf.read_metric("lambda_min")[0]),
            "ratio": float(rf.read_metric("eig_ratio")[0]),
            "hvps": a["hvps"],
            "converged": a["converged"],
            "residuals": a["residuals"],
            "sequences": a["data"]["n"],
            "parameters": a["selection"].get("numel"),
        }
    s["ensemble"] = {}
    with open_result(ens_path) as rf:
        a = rf.attrs
        for part in PARTS:
            s["ensemble"][part] = {
                "token_loss": a[f"{part}-token_loss"],
                "perplexity": a[f"{part}-perplexity"],
                "token_acc": a[f"{part}-token_acc"],
                "tokens": a[f"{part}-tokens"],
                "members": names,
                "member_perplexity": rf.read_metric(f"{part}_member_perplexity").tolist(),
                "member_token_loss": rf.read_metric(f"{part}_member_token_loss").tolist(),
                "member_token_acc": rf.read_metric(f"{part}_member_token_acc").tolist(),
            }
    return s


def print_summary(s: dict) -> None:
    parts = list(PARTS)
    print("\ntoken loss (nats/byte) / perplexity on each part's test sequences")
    print(f"| model | steps | {' | '.join(parts)} |")
    print("|---|---:|" + "---:|" * len(parts))
    for n, m in s["models"].items():
        cells = " | ".join(f"{m['eval'][p]['token_loss']:.3f} / {m['eval'][p]['perplexity']:.2f}" for p in parts)
        print(f"| {n} | {m['steps']} | {cells} |")
    print("\nline between the fine-tunes and the Bezier curve (barrier: max - mean of the ends, nats)")
    for part in (*FINETUNES, "both"):
        c = s["curve"][part]
        print(
            f"  {part:10s} line barrier {s['line'][part]['barrier']:+.3f} (above chord {s['line'][part]['excess_over_chord']:+.3f})"
            f"  curve barrier {c['curve']['barrier']:+.3f} (above chord {c['curve']['excess_over_chord']:+.3f})"
            f"  mean along t: line {c['line']['mean']:.3f} curve {c['curve']['mean']:.3f}"
        )
    p = s["plane"]
    print(
        f"\nrandom plane (base test): centre {p['center_token_loss']:.3f}, min {p['min_token_loss']:.3f}, "
        f"max {p['max_token_loss']:.3f} over [{p['range'][0]}, {p['range'][1]}]^2"
    )
    h = s["hessian"]
    print(
        f"Hessian at base ({h['sequences']} sequences): lambda_max {h['lambda_max']:.4g}, lambda_min {h['lambda_min']:.4g}, "
        f"{h['hvps']} HVPs, converged {h['converged']}"
    )
    print("\nensemble perplexity (members: " + ", ".join(s["ensemble"][parts[0]]["members"]) + ")")
    for part, e in s["ensemble"].items():
        mem = ", ".join(f"{v:.2f}" for v in e["member_perplexity"])
        print(f"  {part:10s} ensemble {e['perplexity']:.2f}  members {mem}")
    print(
        "\nstage seconds: "
        + ", ".join(f"{k} {v['seconds']:.0f}{' (reused)' if v['reused'] else ''}" for k, v in s["stages"].items())
    )


if __name__ == "__main__":
    sys.exit(main())
