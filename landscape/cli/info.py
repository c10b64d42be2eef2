"""``landscape info FILE``: summary of a result file."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="summary of a result file")
    p.add_argument("file")
    p.set_defaults(run=main)


def main(args) -> int:
    from .. import io

    print(io.describe(args.file))
    return 0
