"""``landscape surface``: 1D/2D loss surfaces (:func:`landscape.surface.compute_surface`).

Interpolation between two checkpoints, a random line or plane around one, the plane
through three, or the PCA plane of a training trajectory. Under ``torchrun`` the ranks
share the grid.
"""

from __future__ import annotations

import os

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
    print_surface_summary,
    recorded_config,
)

_NEEDED_CKPTS = {"interpolate": 2, "line": 1, "plane": 1, "three-point": 3}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "surface",
        help="1D/2D loss surfaces: interpolation, random line/plane, three-checkpoint plane, PCA plane",
        description="Evaluate a line or plane of weight points. Works under torchrun: "
        "torchrun --nproc_per_node=N -m landscape surface ... shards the grid over the ranks.",
    )
    p.add_argument(
        "--ckpt", action="append", default=[], help="checkpoint file (repeat: 1 = centre, 2 = ends, 3 = plane)"
    )
    p.add_argument(
        "--trajectory",
        nargs="+",
        default=None,
        help="checkpoints along a training run (files or one folder) for a PCA plane",
    )
    p.add_argument(
        "--type",
        dest="surface_type",
        default=None,
        choices=["interpolate", "line", "plane", "three-point", "pca"],
        help="default: plane for 1 checkpoint, interpolate for 2, three-point for 3, pca with --trajectory",
    )
    p.add_argument(
        "--x",
        default=None,
        help="MIN:MAX:COUNT (default -1:1:51; -0.5:1.5:41 to interpolate; auto for three-point/pca)",
    )
    p.add_argument("--y", default=None, help="MIN:MAX:COUNT for planes (default like --x)")
    p.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
    p.add_argument(
        "--norm", default="filter", choices=["filter", "layer", "weight", "none"], help="direction normalization"
    )
    p.add_argument(
        "--ignore",
        default=None,
        choices=["biasbn", "none"],
        help="zero biases and BatchNorm in directions (default: biasbn for random directions, as the paper's "
        "figures; none for PCA, as loss-landscape's plot_trajectory.py)",
    )
    p.add_argument("--states", action="store_true", help="random directions also move BatchNorm running statistics")
    p.add_argument("--seed", type=int, default=0, help="seed of random directions")
    options.add_plot(p)
    options.add_evaluation(p, split=False, out_required=True)
    p.set_defaults(run=main)


def trajectory_files(items: list[str]) -> list[str]:
    """Files given, or the checkpoint files of one folder in natural order (epoch_2 < epoch_10)."""
    import re

    if len(items) == 1 and os.path.isdir(items[0]):
        folder = items[0]
        names = [n for n in os.listdir(folder) if n.endswith((".pt", ".pth", ".safetensors"))]
        if not names:
            raise UsageError(f"--trajectory folder '{folder}' holds no .pt/.pth/.safetensors files")
        key = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]  # noqa: E731
        return [os.path.join(folder, n) for n in sorted(names, key=key)]
    return items


def surface_kind(args) -> str:
    """``--type``, or the kind the checkpoints given imply."""
    kind, n = args.surface_type, len(args.ckpt)
    if kind is None:
        kind = "pca" if args.trajectory else {1: "plane", 2: "interpolate", 3: "three-point"}.get(n)
        if kind is None:
            raise UsageError(
                f"got {n} --ckpt; expected 1 (random plane), 2 (interpolation), 3 (three-point plane) or --trajectory"
            )
    if kind in _NEEDED_CKPTS and n != _NEEDED_CKPTS[kind]:
        raise UsageError(f"--type {kind} needs {_NEEDED_CKPTS[kind]} --ckpt, got {n}")
    if kind == "pca" and not args.trajectory:
        raise UsageError("--type pca needs --trajectory (checkpoint files or a folder)")
    if kind in ("interpolate", "line") and args.y is not None:
        raise UsageError(
            f"--y {args.y} was given but a {kind} surface is a line (--x only); drop --y, or use --type plane"
        )
    return kind


def _plane(args, kind: str, model, ckpts: list):
    """The plane (or line) of ``kind`` and the trajectory it was fitted to (PCA)."""
    from .. import directions
    from ..weights import load_checkpoint

    ignore = args.ignore or ("none" if kind == "pca" else "biasbn")
    ignore = None if ignore == "none" else "biasbn"
    if kind == "interpolate":
        return directions.line_through(*ckpts), []
    if kind in ("line", "plane"):
        dims = 1 if kind == "line" else 2
        plane = directions.random_plane(
            ckpts[0], dims=dims, norm=args.norm, ignore=ignore, states=args.states, seed=args.seed
        )
        return plane, []
    if kind == "three-point":
        return directions.three_point_plane(*ckpts), []
    traj = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in trajectory_files(args.trajectory)]
    return directions.pca_plane(traj, final=ckpts[0] if ckpts else None, ignore=ignore), traj


def _grid(args, kind: str, plane):
    """The values of x and y (None for lines) from ``--x``/``--y`` or the plane's anchors."""
    from ..surface import auto_range, parse_range

    default_x = {"interpolate": "-0.5:1.5:41"}.get(kind, "-1:1:51")
    if args.x is None and kind in ("three-point", "pca"):
        pts = plane.arrays.get("trajectory", plane.anchors)
        xs, ys = auto_range(pts[:, 0]), auto_range(pts[:, 1])
    else:
        xs = parse_range(args.x or default_x)
        ys = None if plane.dim == 1 else parse_range(args.y or args.x or default_x)
    if args.y is not None and plane.dim == 2:
        ys = parse_range(args.y)
    return xs, ys


def main(args) -> int:
    from .. import distributed
    from ..models import build_model, describe_model
    from ..surface import compute_surface
    from ..weights import load_checkpoint

    check_out(args)
    kind = surface_kind(args)
    device = distributed.init_from_env(args.device)
    try:
        model = build_model(args.model, args.model_kwargs)
        ckpts = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
        plane, traj = _plane(args, kind, model, ckpts)
        xs, ys = _grid(args, kind, plane)
        splits = {s: open_data(args, s) for s in comma_list(args.splits)}
        attrs = {
            "model": describe_model(args.model, args.model_kwargs),
            "checkpoints": checkpoint_records(ckpts),
            "trajectory": checkpoint_records(traj) or None,
            "bn-split": args.bn_split if args.bn != "running" else None,
            **data_attrs(args),
            **recorded_config(args),
        }
        res = compute_surface(
            model,
            plane,
            xs,
            ys,
            splits=splits,
            metrics=comma_list(args.metrics),
            **engine_options(args, splits, device=device),
            out=args.out,
            resume=args.resume,
            force=args.force,
            attrs=attrs,
            progress=not args.no_progress,
        )
        rank, _ = distributed.rank_and_world()
        if rank == 0:
            print_surface_summary(res)
            plot_if_asked(args)
    finally:
        distributed.shutdown()
    return 0
