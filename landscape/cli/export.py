"""``landscape export FILE --vtp OUT.vtp | --ll OUT.h5``: a surface for ParaView
(:func:`landscape.plot.export_vtp`) or for loss-landscape's scripts
(:func:`landscape.io_ll.export_loss_landscape`)."""

from __future__ import annotations

from . import options
from .common import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a surface for other tools (ParaView .vtp, loss-landscape's plot_2D/plot_1D/h52vtp)"
    )
    p.add_argument("file")
    p.add_argument("--vtp", metavar="OUT.vtp", help="write VTK XML PolyData here (a plane)")
    p.add_argument(
        "--ll",
        metavar="OUT.h5",
        help="write loss-landscape's surface file here (xcoordinates, ycoordinates, every metric in meshgrid "
        "order, -1 where not computed, accuracy in percent), which its plot_2D.py, plot_1D.py and h52vtp.py read",
    )
    p.add_argument("--metric", default="train_loss", help="the metric of --vtp")
    p.add_argument(
        "--log",
        nargs="?",
        const="log10",
        default=None,
        choices=("log10", "ln+0.1"),
        help="--vtp heights are a log of the metric: log10 (ours, the default when --log is given alone) or "
        "ln+0.1, ln(value + 0.1) as loss-landscape's h52vtp.py --log; the .vtp names its transform",
    )
    p.add_argument("--zmax", type=float, default=None, help="clip --vtp heights above this value (after --log)")
    options.add_force(p, "overwrite an existing --vtp or --ll file")
    p.set_defaults(run=main)


def main(args) -> int:
    if not args.vtp and not args.ll:
        raise UsageError("export needs --vtp OUT.vtp or --ll OUT.h5 (or both)")
    if args.ll:
        from ..io_ll import export_loss_landscape

        print(export_loss_landscape(args.file, args.ll, force=args.force))
    if args.vtp:
        from ..plot import export_vtp

        log = args.log or False
        print(export_vtp(args.file, args.vtp, metric=args.metric, log=log, zmax=args.zmax, force=args.force))
    return 0
