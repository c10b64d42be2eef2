"""``landscape plot FILE``: the figures of a result file (:func:`landscape.plot.plot_file`)."""

from __future__ import annotations

import os

from . import options
from .common import comma_list


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="figures from a result file (PNG and PDF)")
    p.add_argument("file")
    p.add_argument("--format", default="png,pdf", help="comma-separated formats (default png,pdf)")
    p.add_argument("--metrics", default=None, help="comma-separated metrics to plot (default: all losses/accuracies)")
    options.add_output(
        p, help="output folder (default: next to the file)", required=False, force="overwrite existing figures"
    )
    p.set_defaults(run=main)


def main(args) -> int:
    from ..plot import plot_file

    out = args.out or os.path.dirname(os.path.abspath(args.file))
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    for path in plot_file(args.file, out, formats=tuple(comma_list(args.format)), metrics=metrics, force=args.force):
        print(path)
    return 0
