"""The ``landscape`` command. Argument parsing lives in this package and only here.

One module per subcommand, each with ``add_parser(subparsers)`` and ``main(args) -> int``;
the options several subcommands share are declared once in :mod:`landscape.cli.options`
and the helpers they share at run time are in :mod:`landscape.cli.common`. The library
does the work; a subcommand parses, calls it and prints.

Subcommands
-----------
``info``              summary of a result file
``eval``              metrics of checkpoints
``surface``           1D/2D loss surfaces: interpolation, random line/plane, three-point and PCA planes
``plot``              figures from a result file (PNG and PDF)
``export``            a surface for ParaView (.vtp) or loss-landscape's scripts (.h5)
``import-ll``         a surface file of loss-landscape as a landscape result file
``curve``             mode connectivity: fit, eval, plane or export a curve between two checkpoints
``connect``           Linear, Arc, OT and weight-adjustment connections with the worst accuracy along each
``connection-model``  a Flow (or Bijection) connection model learnt from several checkpoints
``wa-ensemble``       ensembles sharing one backbone by weight adjustment, against the ordinary ensemble
``ensemble``          fast ensembles (FGE, SSE, SWA) against independent networks at equal budget
``variational``       a variational network (variational dropout, variance layers) trained by the ELBO
``predict``           a variational network's deterministic, stochastic and ensemble predictions
``hessian``           Hessian eigenvalues, eigenvalue maps of a surface, trace and spectral density
``merge``             model merging and soups: task arithmetic, TIES, DARE, SLERP, soups, greedy soups, WiSE-FT
``sharpness``         worst-case, adaptive, average-case and random-direction sharpness of a checkpoint
``demo``              the main job on bundled data (digits, CPU, under 2 minutes)
``models``            the built-in models
``rerun``             the command that wrote a result file (its ``cli-config``), resumed or into a new file
``report``            one self-contained HTML page of result files (3-D surfaces, contours, profiles, tables)

Every subcommand takes ``--config FILE`` (TOML or JSON; :mod:`landscape.cli.config`), the
command line overriding it; every result file records the resolved options in its
``cli-config`` attribute. Errors print one line (``landscape: error: ...``) and exit with
code 2; ``--debug`` shows the traceback. ``python -m landscape`` and ``torchrun -m landscape`` run :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from . import config
from .common import UsageError, one_line_warnings, parse_bytes

__all__ = ["COMMANDS", "UsageError", "build_parser", "console_main", "main", "parse_bytes"]

#: The subcommands in the order ``landscape --help`` lists them; ``wa-ensemble`` is the
#: module ``landscape.cli.wa_ensemble``.
COMMANDS = (
    "info",
    "eval",
    "surface",
    "plot",
    "export",
    "import-ll",
    "curve",
    "connect",
    "connection-model",
    "wa-ensemble",
    "ensemble",
    "variational",
    "predict",
    "hessian",
    "merge",
    "sharpness",
    "demo",
    "models",
    "rerun",
    "report",
)


def command_module(name: str):
    """The module of subcommand ``name``."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error shape: one line naming the bad option and where the usage
    is, exit code 2 (argparse prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = _Parser(
        prog="landscape",
        description="Loss surfaces, mode connectivity and ensembles of saved checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        command_module(name).add_parser(sub)
    config.add_config_option(parser)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..batches import BatchError
    from ..data import DataError
    from ..evaluate import MemoryBudgetError
    from ..io import ResultExistsError, ResultFileError
    from ..metrics import MetricError
    from ..models import ModelSpecError
    from ..weights import CheckpointError

    return (
        UsageError,
        DataError,
        BatchError,
        MetricError,
        MemoryBudgetError,
        ResultExistsError,
        ResultFileError,
        ModelSpecError,
        CheckpointError,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        ValueError,
    )


def _new_out_file(args) -> str | None:
    """``--out`` (a file or a folder) when this run would create it (it does not exist yet)."""
    out = getattr(args, "out", None)
    return out if isinstance(out, str) and out and not os.path.exists(out) else None


def _remove_unfinished(path: str | None) -> None:
    """Remove a result file this run created when an error stopped it before any cell was
    done (bad data, metrics or models fail on the first batch), so that bad input leaves
    nothing behind; a file with finished cells stays for ``--resume``. An output folder this
    run created is removed when it is still empty."""
    if path is not None and os.path.isdir(path):
        try:
            os.rmdir(path)  # only succeeds when empty
        except OSError:
            pass
        return
    if path is None or not os.path.isfile(path):
        return
    from ..io import open_result

    try:
        with open_result(path) as f:
            started = bool(f.done.any())
    except Exception:  # noqa: BLE001 - not a result file: not ours to judge
        return
    if not started:
        try:
            os.remove(path)
        except OSError:
            pass


def _dash_values(argv: list[str]) -> list[str]:
    """``--x -1:1:51`` -> ``--x=-1:1:51``: a value that starts with "-" would read as an
    option to argparse."""
    argv = list(argv)
    for i in range(len(argv) - 1):
        if argv[i] in ("--x", "--y") and argv[i + 1].startswith("-"):
            argv[i : i + 2] = [f"{argv[i]}={argv[i + 1]}", ""]
    return [a for a in argv if a != ""]


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, a scheduler's time limit) stops a command as Ctrl-C does: cleanly,
    temporary files removed and finished chunks kept for ``--resume``."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):  # not the main thread, or no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line; every error becomes one line on stderr and exit code 2."""
    from ..budget import allowing_large

    new_out = _new_out_file(args)
    try:
        with allowing_large(getattr(args, "allow_large", False)), _terminate_as_interrupt():
            return args.run(args)
    except BrokenPipeError:  # e.g. `landscape info f.h5 | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print("landscape: interrupted; finished chunks are saved, rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI turns every error into one line
        _remove_unfinished(new_out)
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, _user_errors()):
            msg = f"{type(e).__name__}: {msg} (run with --debug for the traceback)"
        print(f"landscape: error: {msg}", file=sys.stderr)
        return 2


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str], values: dict | None = None, source: str = ""
) -> argparse.Namespace:
    """Parse ``argv`` over the options of its ``--config`` file (or of ``values``, read from
    ``source``); the namespace carries the resolved options as ``cli_config`` (JSON) for the
    result files."""
    argv = _dash_values(argv)
    repeated = {}
    path = config.config_file(argv)
    if path is not None:
        values, source = config.load_config(path), f"--config {path}"
    if values is not None:
        repeated = config.apply_config(parser, argv, values, source)
    args = parser.parse_args(argv)
    config.replace_repeated(args, repeated)
    args.cli_config = config.cli_config(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parse_command_line(parser, sys.argv[1:] if argv is None else argv)
    except UsageError as e:  # a bad --config file
        print(f"landscape: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse: --help and --version (0), a bad option (2, one line printed)
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    with one_line_warnings():
        return run(args)


def console_main() -> None:  # pragma: no cover
    """The ``landscape`` console script: :func:`main` as the process's exit code."""
    sys.exit(main())
