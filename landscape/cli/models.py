"""``landscape models``: the built-in model names."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the built-in models")
    p.set_defaults(run=main)


def main(args) -> int:
    from ..models import list_models

    print("\n".join(list_models()))
    return 0
