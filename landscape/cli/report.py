"""``landscape report PATH... --out report.html``: every result file in one self-contained HTML
page (:func:`landscape.plot.report.write_report`)."""

from __future__ import annotations

import os

from . import options
from .common import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page of result files (3-D surfaces, contours, profiles, tables)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="result files (.h5), or folders: their .h5 files")
    p.add_argument("--title", default="landscape report", help="the page's title")
    options.add_output(p, help="the HTML file to write (e.g. report.html)", force="overwrite an existing --out file")
    p.set_defaults(run=main)


def _result_files(paths) -> list[str]:
    """The files given, a folder standing for its ``.h5`` files (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".h5"))
            if not found:
                raise UsageError(f"folder '{path}' holds no .h5 result file; expected result files or folders of them")
            files += found
        elif not os.path.exists(path):
            raise FileNotFoundError(f"result file '{path}' does not exist")
        else:
            files.append(path)
    return files


def main(args) -> int:
    from ..plot.report import write_report

    if not args.out.lower().endswith((".html", ".htm")):
        raise UsageError(f"--out '{args.out}' is not an .html file; expected e.g. --out report.html")
    files = _result_files(args.paths)
    written = write_report(files, args.out, title=args.title, force=args.force)
    size = os.path.getsize(args.out)
    state = "written" if written else "unchanged (it already holds this report)"
    print(f"{args.out}: {len(files)} result file(s), {size / 1e6:.2f} MB, {state}")
    return 0
