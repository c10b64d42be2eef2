"""``landscape demo``: the main job on bundled data (:func:`landscape.demo.run_demo`)."""

from __future__ import annotations

from . import options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job on bundled data (digits, CPU, under 2 minutes)")
    options.add_output(
        p,
        help="output folder (default ./landscape-demo)",
        required=False,
        default="landscape-demo",
        force="overwrite files of an earlier demo in that folder",
    )
    options.add_progress(p)
    p.set_defaults(run=main)


def main(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, force=args.force, progress=not args.no_progress)
    return 0
