"""``landscape export FILE --vtp OUT.vtp``: a surface for ParaView (:func:`landscape.plot.export_vtp`)."""

from __future__ import annotations

from . import options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a surface for other tools (ParaView .vtp)")
    p.add_argument("file")
    p.add_argument("--vtp", required=True, metavar="OUT.vtp", help="write VTK XML PolyData here")
    p.add_argument("--metric", default="train_loss")
    p.add_argument("--log", action="store_true", help="log10 of the metric as height")
    p.add_argument("--zmax", type=float, default=None, help="clip heights above this value")
    options.add_force(p, "overwrite an existing --vtp file")
    p.set_defaults(run=main)


def main(args) -> int:
    from ..plot import export_vtp

    print(export_vtp(args.file, args.vtp, metric=args.metric, log=args.log, zmax=args.zmax, force=args.force))
    return 0
