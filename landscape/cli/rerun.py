"""``landscape rerun FILE``: run the command that wrote a result file again, from the options
it recorded (its ``cli-config`` attribute; :mod:`landscape.cli.config`).

Without ``--out`` the run continues FILE itself: commands that resume (``--resume``) compute
only the cells FILE lacks (none when it is finished), the others overwrite it. With
``--out NEW`` the same command writes a new file. Relative paths in the recorded options
are read from the folder the first run started in, when it still exists.
"""

from __future__ import annotations

import contextlib
import json
import os

from . import options
from .common import UsageError

#: Commands whose ``--out`` is a folder holding the result file.
_FOLDER_OUT = ("ensemble",)
#: Commands whose ``--out`` is a figure with the result file beside it (``d.png``, ``d.h5``).
_FIGURE_OUT = (("hessian", "density"),)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rerun",
        help="run the command that wrote a result file again: resume it, or write --out NEW",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("file", help="a result file written by a landscape command (its cli-config attribute)")
    p.add_argument("--out", default=None, help="write a new result (a folder for ensemble) instead of continuing FILE")
    options.add_progress(p)
    p.set_defaults(run=main)


def recorded_command(path: str) -> dict:
    """The ``{"command", "options", "cwd"}`` record of a result file."""
    from ..io import open_result

    with open_result(path) as f:
        record = f.attrs.get("cli-config")
    if record is None:
        raise UsageError(f"'{path}' records no cli-config: it was not written by a landscape command")
    return json.loads(record) if isinstance(record, str) else dict(record)


def _target(record: dict, names: set[str], file: str, out: str | None) -> dict:
    """The recorded options with the output of this run (``names``: the command's options)."""
    opts = dict(record["options"])
    if out is not None:
        opts["out"] = os.path.abspath(out)
    else:
        here = os.path.abspath(file)
        opts["out"] = os.path.dirname(here) if record["command"][0] in _FOLDER_OUT else here
        opts["resume" if "resume" in names else "force"] = True
    if tuple(record["command"]) in _FIGURE_OUT and opts["out"].endswith(".h5"):
        figure = os.path.splitext(record["options"].get("out") or "")[1] or ".png"
        opts["out"] = os.path.splitext(opts["out"])[0] + figure
    return opts


@contextlib.contextmanager
def _in_folder(folder: str | None):
    """The recorded working folder (relative paths, importable modules) while the run lasts."""
    if not folder or not os.path.isdir(folder) or os.path.samefile(folder, os.getcwd()):
        yield
        return
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def main(args) -> int:
    from . import build_parser, parse_command_line
    from .config import command_path, option_names

    record = recorded_command(args.file)
    path = list(record["command"])
    parser = build_parser()
    names = option_names(command_path(parser, path)[1])
    opts = _target(record, names, args.file, args.out)
    if args.no_progress and "no_progress" in names:
        opts["no_progress"] = True
    with _in_folder(record.get("cwd")):
        values = {"command": path, "options": opts}
        run_args = parse_command_line(parser, path, values, f"the cli-config of {args.file}")
        run_args.debug = args.debug
        print(f"rerun: landscape {' '.join(path)} -> {opts['out']}")
        return run_args.run(run_args)
