"""``landscape merge``: model merging and soups through the engine
(:mod:`landscape.merge`): task arithmetic (a lambda line, or the lambda-plane of two task
vectors), TIES, DARE, SLERP, uniform and greedy soups and WiSE-FT, over grids of their
parameters, into a resumable ``merge`` file, with a printed table and ``--plot`` figures.

``greedy-soup`` first selects its soup on ``--held-out`` (one engine pass over it per accepted
ingredient, plus one); a resumed run selects again (deterministic) and its soup must equal
the file's before the missing cells are computed.
"""

from __future__ import annotations

import numpy as np

from ..merge import METHODS, higher_is_better
from . import options
from .common import (
    UsageError,
    check_out,
    checkpoint_records,
    comma_list,
    data_attrs,
    engine_options,
    open_data,
    plot_if_asked,
    recorded_config,
)

_NEEDS_BASE = ("task-arithmetic", "ties", "dare", "wise-ft")
_TABLE_ROWS = 40


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="model merging and soups: task arithmetic, TIES, DARE, SLERP, soups, greedy soups, WiSE-FT",
        description="Merge fine-tuned checkpoints of one base over a grid of the method's parameters, evaluate every "
        "merge through the engine (many per pass) on the --splits (and their --task class subsets) and write a "
        "resumable merge file. task-arithmetic/ties/dare/wise-ft take --base (wise-ft: the zero-shot model) and "
        "--ckpt fine-tunes; slerp takes two --ckpt; soup and greedy-soup take the ingredients as --ckpt.",
    )
    p.add_argument("--method", required=True, choices=list(METHODS), help="the merge method")
    p.add_argument("--base", default=None, help="the base (pre-trained) checkpoint; wise-ft: the zero-shot model")
    p.add_argument("--ckpt", action="append", default=[], help="fine-tuned checkpoint / ingredient (repeat)")
    p.add_argument(
        "--lambdas",
        default=None,
        help="scales of the merged task vector: MIN:MAX:COUNT or a comma list (default 0:1:11 for task-arithmetic, "
        "0:2:11 for ties and dare)",
    )
    p.add_argument("--plane", action="store_true", help="task-arithmetic: the lambda-plane of two task vectors")
    p.add_argument("--lambdas-b", default=None, help="task-arithmetic --plane: scales of the second task vector")
    p.add_argument("--densities", default="0.2", help="ties: fractions kept of each task vector (default 0.2)")
    p.add_argument(
        "--scope",
        default="model",
        choices=["model", "tensor"],
        help="ties: trim over the whole model (paper) or per tensor (mergekit)",
    )
    p.add_argument("--p", dest="drop", default="0.5", help="dare: drop probabilities (default 0.5)")
    p.add_argument("--seeds", default="0", help="dare: comma-separated seeds of the drop masks (default 0)")
    p.add_argument(
        "--combine", default="sum", choices=["sum", "ties"], help="dare: sum (paper) or TIES sign merge (dare_ties)"
    )
    p.add_argument("--t", dest="ts", default="0:1:11", help="slerp: values of t (default 0:1:11)")
    p.add_argument("--threshold", type=float, default=0.9995, help="slerp: |cos| above which it interpolates linearly")
    p.add_argument("--alphas", default="0:1:11", help="wise-ft: values of alpha (default 0:1:11)")
    p.add_argument("--held-out", default="train", help="greedy-soup: split the soup is selected on (default train)")
    p.add_argument(
        "--select-metric", default="acc", help="greedy-soup: held-out metric (acc maximised; a loss minimised)"
    )
    p.add_argument(
        "--accept",
        default="greater",
        choices=["greater", "greater-equal"],
        help="greedy-soup: add a candidate when the soup improves strictly (the authors' code) or ties",
    )
    p.add_argument("--splits", default="test", help="comma-separated data splits evaluated (default test)")
    p.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME=CLASSES",
        help="also evaluate every split on these classes only, as split '<split>-NAME' (e.g. low=0-4; repeat)",
    )
    options.add_plot(p)
    options.add_evaluation(p, split=False, out_required=True)
    p.set_defaults(run=main)


def parse_values(text: str, option: str) -> np.ndarray:
    """``MIN:MAX:COUNT`` or a comma list of numbers."""
    from ..surface import parse_range

    if ":" in text:
        try:
            return parse_range(text)
        except ValueError as e:
            raise UsageError(f"{option} {text!r}: {e}") from None
    try:
        values = np.array([float(v) for v in comma_list(text)])
    except ValueError:
        raise UsageError(f"{option} {text!r} should be MIN:MAX:COUNT or comma-separated numbers") from None
    if values.size == 0 or not np.isfinite(values).all():
        raise UsageError(f"{option} {text!r} should hold at least one finite number")
    return values


def parse_classes(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,7"`` or ``"0-2,7"`` -> class indices."""
    out: list[int] = []
    try:
        for part in comma_list(text):
            lo, sep, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        out = []
    if not out:
        raise UsageError(f"--task classes {text!r} should be e.g. 0-4 or 0,2,7")
    return out


def tasks(args) -> dict[str, list[int]]:
    out = {}
    for item in args.task:
        name, sep, classes = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--task {item!r} should be NAME=CLASSES, e.g. low=0-4")
        out[name.strip()] = parse_classes(classes)
    return out


def check_checkpoints(args) -> None:
    n, method = len(args.ckpt), args.method
    if method in _NEEDS_BASE and args.base is None:
        raise UsageError(f"--method {method} needs --base (the {'zero-shot' if method == 'wise-ft' else 'base'} model)")
    if method not in _NEEDS_BASE and args.base is not None:
        raise UsageError(f"--method {method} takes no --base; give its checkpoints as --ckpt")
    need = {"slerp": (2, 2), "wise-ft": (1, 1), "greedy-soup": (2, None), "soup": (2, None)}.get(method, (1, None))
    if args.plane:
        if method != "task-arithmetic":
            raise UsageError(f"--plane applies to --method task-arithmetic, not {method}")
        need = (2, 2)
    lo, hi = need
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"at least {lo}"
        raise UsageError(f"--method {method}{' --plane' if args.plane else ''} needs {want} --ckpt, got {n}")


def grid_values(args) -> dict:
    """The parameter values of the method, parsed (before any checkpoint is read)."""
    m = args.method
    default_lam = "0:1:11" if m == "task-arithmetic" else "0:2:11"
    out: dict = {}
    if m in ("task-arithmetic", "ties", "dare"):
        out["lambdas"] = parse_values(args.lambdas or default_lam, "--lambdas")
    if args.plane:
        out["lambdas_b"] = parse_values(args.lambdas_b or args.lambdas or default_lam, "--lambdas-b")
    if m == "ties":
        out["densities"] = parse_values(args.densities, "--densities")
        if ((out["densities"] <= 0) | (out["densities"] > 1)).any():
            raise UsageError(f"--densities {args.densities!r} should be fractions in (0, 1]")
    if m == "dare":
        out["ps"] = parse_values(args.drop, "--p")
        if ((out["ps"] < 0) | (out["ps"] >= 1)).any():
            raise UsageError(f"--p {args.drop!r} should be drop probabilities in [0, 1)")
        try:
            out["seeds"] = [int(s) for s in comma_list(args.seeds)]
        except ValueError:
            out["seeds"] = []
        if not out["seeds"]:
            raise UsageError(f"--seeds {args.seeds!r} should be comma-separated integers")
    if m == "slerp":
        out["ts"] = parse_values(args.ts, "--t")
        if not 0 < args.threshold <= 1:
            raise UsageError(f"--threshold {args.threshold} should be in (0, 1]")
    if m == "wise-ft":
        out["alphas"] = parse_values(args.alphas, "--alphas")
    return out


def build_grid(args, values: dict, base, cks, model, engine: dict):
    """The MergeGrid of ``--method`` (greedy-soup: the selection runs here) and extra attrs."""
    from .. import merge

    m = args.method
    extra: dict = {}
    if m == "task-arithmetic":
        if args.plane:
            return merge.task_arithmetic_plane(base, cks, values["lambdas"], values["lambdas_b"]), extra
        return merge.task_arithmetic_grid(base, cks, values["lambdas"]), extra
    if m == "ties":
        return merge.ties_grid(base, cks, values["densities"], values["lambdas"], scope=args.scope), extra
    if m == "dare":
        return merge.dare_grid(base, cks, values["ps"], values["seeds"], values["lambdas"], combine=args.combine), extra
    if m == "slerp":
        return merge.slerp_grid(cks[0], cks[1], values["ts"], threshold=args.threshold), extra
    if m == "wise-ft":
        return merge.wise_ft_grid(base, cks[0], values["alphas"]), extra
    names = [f"ingredient{i}" for i in range(len(cks))]
    if m == "soup":
        return merge.soup_grid(cks, names=names), extra
    held_out = open_data(args, args.held_out)
    soup = merge.greedy_soup(
        model, cks, held_out, metric=args.select_metric, accept=args.accept, progress=not args.no_progress, **engine
    )
    extra["greedy-soup"] = {
        "held-out": args.held_out,
        "metric": soup.metric,
        "accept": args.accept,
        "order": soup.order,
        "individual": [float(v) for v in soup.individual],
        "score": soup.score,
        "history": soup.history,
        "passes": soup.passes,
    }
    print(
        f"greedy soup on '{args.held_out}' ({soup.metric}): ingredients {soup.members}, {soup.metric} {soup.score:.4f}"
    )
    grid = merge.soup_grid(
        cks, {"uniform": list(range(len(cks))), "greedy": soup.members}, names=names, method="greedy-soup"
    )
    return grid, extra


def print_table(res) -> None:
    """One row per merge (the first and last rows of long grids, and the best cell per metric)."""
    grid = res.grid
    axes = [name for name, _ in grid.axes]
    names = list(res.metrics)
    header = [*axes, *names]
    print(f"merge {grid.method}: {grid.points.K} merge(s), {res.evaluated} computed in {res.seconds:.1f} s "
          f"(engine path {res.path}) -> {res.file}")  # fmt: skip
    print("  ".join(f"{h:>12s}" for h in header))
    cells = list(np.ndindex(*grid.shape))
    shown = cells if len(cells) <= _TABLE_ROWS else cells[: _TABLE_ROWS // 2] + cells[-_TABLE_ROWS // 2 :]
    for idx in shown:
        coords = []
        for (name, values), i in zip(grid.axes, idx, strict=True):
            coords.append(grid.rows[i] if name == "row" and grid.rows else f"{values[i]:.4g}")
        vals = [f"{res.metrics[n][idx]:.4f}" for n in names]
        print("  ".join(f"{c:>12s}" for c in [*coords, *vals]))
    if len(cells) > len(shown):
        print(f"  ... {len(cells) - len(shown)} more rows in the file")
    for n in names:
        v = res.metrics[n]
        if np.isfinite(v).any():
            best = np.unravel_index(np.nanargmax(v) if higher_is_better(n) else np.nanargmin(v), v.shape)
            at = ", ".join(
                f"{name}={grid.rows[i] if name == 'row' and grid.rows else f'{values[i]:.4g}'}"
                for (name, values), i in zip(grid.axes, best, strict=True)
            )
            print(f"  best {n}: {v[best]:.4f} at {at}")


def _splits(args):
    names = comma_list(args.splits)
    if not names:
        raise UsageError("--splits is empty; expected e.g. test or train,test")
    splits = {s: open_data(args, s) for s in names}
    for name, classes in tasks(args).items():
        for s in names:
            data = splits[s]
            if not hasattr(data, "select_classes"):
                raise UsageError(f"--task needs in-memory data; --data {args.data!r} streams batches")
            splits[f"{s}-{name}"] = data.select_classes(classes)
    return splits


def main(args) -> int:
    from ..merge import check_merge_memory, evaluate_merges
    from ..models import build_model, describe_model
    from ..weights import load_checkpoint

    check_out(args)
    check_checkpoints(args)
    values = grid_values(args)
    model = build_model(args.model, args.model_kwargs)
    P = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    itemsize = max((t.element_size() for t in model.state_dict().values() if t.is_floating_point()), default=4)
    extra_vectors = {
        "ties": len(values.get("densities", [])),
        "dare": len(values.get("ps", [])) * len(values.get("seeds", [])),
        "slerp": len(values.get("ts", [])),
    }.get(args.method, 0)
    check_merge_memory(
        f"merge {args.method}",
        basis=len(args.ckpt) + 1 + extra_vectors,
        weights=P,
        itemsize=itemsize,
        device=args.device,
        allow_large=args.allow_large,
    )
    base = load_checkpoint(args.base, model, trust=args.trust_checkpoint) if args.base else None
    cks = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    splits = _splits(args)
    engine = engine_options(args, splits)
    grid, extra = build_grid(args, values, base, cks, model, engine)
    roles = ([("base", base)] if base is not None else []) + [(f"ckpt{i}", w) for i, w in enumerate(cks)]
    records = checkpoint_records([w for _, w in roles])
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": [{"role": r, **rec} for (r, _), rec in zip(roles, records, strict=True)],
        "tasks": tasks(args) or None,
        "bn-split": args.bn_split if args.bn != "running" else None,
        **extra,
        **data_attrs(args),
        **recorded_config(args),
    }
    res = evaluate_merges(
        model,
        grid,
        splits,
        metrics=comma_list(args.metrics),
        **engine,
        out=args.out,
        resume=args.resume,
        force=args.force,
        attrs=attrs,
        progress=not args.no_progress,
        allow_large=args.allow_large,
    )
    print_table(res)
    return plot_if_asked(args)
