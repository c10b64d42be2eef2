"""``landscape import-ll IN.h5 --out OUT.h5``: a surface file of loss-landscape as a landscape
result file (:func:`landscape.io_ll.import_loss_landscape`)."""

from __future__ import annotations

from . import options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "import-ll",
        help="bring a surface file of loss-landscape (plot_surface.py) into landscape's format",
        description=(
            "Read a surface file written by loss-landscape's plot_surface.py (xcoordinates, ycoordinates, "
            "train_loss, train_acc, ... in meshgrid order, -1 where not computed, accuracy in percent) and "
            "write it as a landscape result file (kind 'loss-landscape') that info, plot and export read."
        ),
    )
    p.add_argument("file", metavar="IN.h5", help="the loss-landscape surface file")
    p.add_argument("--out", required=True, metavar="OUT.h5", help="the landscape result file to write")
    options.add_force(p, "overwrite an existing --out file")
    p.set_defaults(run=main)


def main(args) -> int:
    from ..io_ll import import_loss_landscape

    out, surface = import_loss_landscape(args.file, args.out, force=args.force)
    grid = " x ".join(str(n) for n in surface.shape)
    done = int(surface.done.sum())
    print(
        f"{out}: loss-landscape surface '{args.file}', grid {grid}, metrics {', '.join(surface.metrics)} "
        f"(accuracy as fractions), {done} of {surface.done.size} cells computed"
    )
    if surface.partial:
        print(f"  {surface.partial} cell(s) with some metrics computed but not all: read as not computed")
    for name, why in surface.left_out.items():
        print(f"  left out {name}: {why}")
    return 0
