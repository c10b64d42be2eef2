"""``--config FILE``: any subcommand's options from a TOML or JSON file, the command line
overriding them; and the resolved options every result file records (``cli-config``).

A config file is a table of options named like on the command line, with or without the
dashes (``model-kwargs`` or ``model_kwargs``); JSON options such as ``--model-kwargs`` may
be tables. Positional arguments (``landscape ensemble METHOD``, ``landscape info FILE``) may
be given too. The ``cli-config`` attribute of a result file (``{"command": [...],
"options": {...}}``) is itself a config file of its command; ``landscape rerun`` reads it.

The mechanism is argparse's own: the file's values become the defaults of the
subcommand's parser (:meth:`~argparse.ArgumentParser.set_defaults`), options the file
provides are no longer required, and the command line is parsed again over them. A
repeated option (``--ckpt``) given on the command line replaces the file's list.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .common import UsageError

__all__ = [
    "add_config_option",
    "option_names",
    "apply_config",
    "cli_config",
    "command_path",
    "config_file",
    "load_config",
    "replace_repeated",
]

#: Attributes of the parsed namespace that are not options of the command.
_NOT_OPTIONS = ("config", "help")
#: Where a run writes, not what it computes: not recorded (``landscape rerun`` chooses them).
_OUTPUT_OPTIONS = ("out", "resume", "force")


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a
    return None


def leaves(parser: argparse.ArgumentParser):
    """Every parser without subcommands under ``parser``."""
    sub = _subparsers(parser)
    if sub is None:
        yield parser
        return
    for child in dict.fromkeys(sub.choices.values()):
        yield from leaves(child)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` on every subcommand."""
    for leaf in leaves(parser):
        if leaf is not parser:
            leaf.add_argument(
                "--config",
                default=None,
                metavar="FILE",
                help="TOML or JSON file of this command's options (named as on the command line); "
                "the command line overrides it",
            )


def config_file(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (the last one), or None."""
    found = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            found = argv[i + 1]
        elif a.startswith("--config="):
            found = a.split("=", 1)[1]
    return found


def load_config(path: str) -> dict[str, Any]:
    """The table of options in a TOML (``.toml``) or JSON file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"--config {path!r}: {e.strerror or e}") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            values = tomllib.loads(raw.decode("utf-8"))
        else:
            values = json.loads(raw)
    except ValueError as e:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise UsageError(f"--config {path!r} is not valid {kind}: {e}") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path!r}: expected a table of options, got {type(values).__name__}")
    return values


def command_path(parser: argparse.ArgumentParser, argv_or_args) -> tuple[list[str], argparse.ArgumentParser]:
    """The subcommand names (``["curve", "fit"]``) and the parser of the innermost one, from
    a parsed namespace or, before parsing, from the words of the command line."""
    path, p = [], parser
    words = None if isinstance(argv_or_args, argparse.Namespace) else iter(argv_or_args)
    while (sub := _subparsers(p)) is not None:
        if words is None:
            name = getattr(argv_or_args, sub.dest, None)
        else:
            name = next((w for w in words if w in sub.choices), None)
        if name is None:
            break
        path.append(name)
        p = sub.choices[name]
    return path, p


def _actions_by_key(leaf: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out = {}
    for a in leaf._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.dest in _NOT_OPTIONS:
            continue
        for key in (a.dest, a.dest.replace("_", "-"), *(o.lstrip("-") for o in a.option_strings)):
            out.setdefault(key, a)
    return out


def option_names(leaf: argparse.ArgumentParser) -> set[str]:
    """The destinations of the options of a subcommand's parser."""
    return {a.dest for a in _actions_by_key(leaf).values()}


def _config_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A file's value for ``action``: tables of JSON options (``--model-kwargs``) as JSON
    text, lists of comma-separated options (``--metrics``) joined, strings converted by the
    option's type, choices checked."""
    if value is None:
        return None
    repeated = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if repeated:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    else:
        json_option = action.dest.endswith("kwargs")
        if isinstance(value, list) and not json_option:  # comma-separated options: --metrics, --splits ...
            value = ",".join(map(str, value))
        items = [json.dumps(value) if isinstance(value, (dict, list)) else value]
    out = []
    for v in items:
        if isinstance(v, str) and action.type is not None:
            try:
                v = action.type(v)
            except (TypeError, ValueError):
                raise UsageError(f"{where}: {v!r} is not a valid value") from None
        if action.choices is not None and v is not None and v not in action.choices:
            raise UsageError(f"{where}: {v!r} is not one of {', '.join(map(str, action.choices))}")
        out.append(v)
    return out if repeated else out[0]


def apply_config(
    parser: argparse.ArgumentParser, argv: list[str], values: dict[str, Any], source: str
) -> dict[str, list]:
    """Make ``values`` the defaults of the subcommand ``argv`` names; returns the lists of
    repeated options, for :func:`replace_repeated` after parsing."""
    path, leaf = command_path(parser, argv)
    if "options" in values and isinstance(values.get("options"), dict):  # a cli-config record
        recorded = values.get("command")
        if recorded is not None and list(recorded) != path:
            raise UsageError(
                f"{source} holds options of `landscape {' '.join(recorded)}`, not `landscape {' '.join(path)}`"
            )
        values = values["options"]
    if not path or _subparsers(leaf) is not None:
        raise UsageError(f"--config needs a complete command, got `landscape {' '.join(path)}`")
    actions = _actions_by_key(leaf)
    defaults, repeated = {}, {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            raise UsageError(
                f"{source}: unknown option {key!r} for `landscape {' '.join(path)}`; "
                f"expected some of {', '.join(sorted({a.dest.replace('_', '-') for a in actions.values()}))}"
            )
        value = _config_value(action, value, f"{source}: {key}")
        defaults[action.dest] = value
        action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"  # a positional the file provides
        if isinstance(action, argparse._AppendAction) and isinstance(value, list):
            repeated[action.dest] = value
    leaf.set_defaults(**defaults)
    return repeated


def replace_repeated(args: argparse.Namespace, repeated: dict[str, list]) -> None:
    """A repeated option given on the command line replaces the file's list (argparse
    appends to its default)."""
    for dest, base in repeated.items():
        value = getattr(args, dest, None)
        if isinstance(value, list) and len(value) > len(base):
            setattr(args, dest, value[len(base) :])


def cli_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The resolved options of a parsed command line as JSON: ``{"command": [...],
    "options": {...}, "cwd": ...}`` (the ``cli-config`` attribute of the result files).

    Every option but those saying where the result goes (``--out``, ``--resume``,
    ``--force``), so that a resumed file and one computed at once record the same thing;
    ``cwd`` is the folder relative paths were given in."""
    path, leaf = command_path(parser, args)
    actions = _actions_by_key(leaf).values()
    options = {a.dest: getattr(args, a.dest, None) for a in actions if a.dest not in _OUTPUT_OPTIONS}
    return json.dumps({"command": path, "options": dict(sorted(options.items())), "cwd": os.getcwd()})
