"""The import graph of ``landscape/`` and the layering rules it must keep.

Reads every module of the package with :mod:`ast` (nothing is imported or run), collects its
imports of other ``landscape`` modules -- at module level and inside functions -- and checks:

1. no module outside ``landscape/cli/``, ``landscape/demo.py`` and ``landscape/__main__.py``
   imports ``landscape.cli`` or ``landscape.demo`` (data flows one way);
2. the plotting module(s) import nothing from the analysis packages (``connect``,
   ``ensembles``, ``curves``, ``hessian``, ``variational``, ``merge``, ``sharpness``) nor ``evaluate`` or
   ``surface``: figures are drawn from result files, read through ``io``;
3. no import cycle, module-level or in-function; an import of a name from a package's
   ``__init__`` (``from . import __version__``) counts as an import of the package;
4. no function longer than 120 lines, from its ``def`` to its last line, docstring included;
5. inside ``connect/`` (rebuilt for it in issue 21), no private name (``_name``) imported
   from another module of the package: what modules share is public.

    python tools/import_graph.py            # the rules; exit 1 when one is broken
    python tools/import_graph.py --graph    # also every module's imports
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Iterable

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "landscape")
ANALYSIS = ("connect", "ensembles", "curves", "hessian", "variational", "merge", "sharpness", "evaluate", "surface")
MAX_FUNCTION_LINES = 120


def modules(root: str = ROOT) -> dict[str, str]:
    """``{dotted module name: path}`` of every ``.py`` file under ``root``."""
    out = {}
    base = os.path.dirname(root)
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, known: dict[str, str]) -> str | None:
    """The longest known module that ``name`` starts with (``landscape.a.b.func`` -> ``landscape.a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in known:
            return cand
    return None


def imports_of(module: str, path: str, known: dict[str, str]) -> dict[str, set[str]]:
    """``{imported landscape module: {"module-level" | "in-function"}}`` of one module."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    package = module if is_pkg else module.rpartition(".")[0]
    found: dict[str, set[str]] = {}

    def add(target: str | None, where: str) -> None:
        if target is not None and target != module:
            found.setdefault(target, set()).add(where)

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = "in-function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else where
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("landscape") and not alias.name.endswith("._C"):
                        add(_resolve(alias.name, known), where)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1])
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if not mod.startswith("landscape"):
                    continue
                for alias in child.names:
                    if alias.name == "_C":  # the compiled extension, not a Python module
                        continue
                    add(_resolve(f"{mod}.{alias.name}", known), where)
            visit(child, inner)

    visit(tree, "module-level")
    return found


def private_imports(root: str = ROOT, inside: str = "landscape.connect") -> list[tuple[str, str, str]]:
    """``(module, imported module, name)`` of every private name a module under ``inside``
    imports from another ``landscape`` module."""
    known = modules(root)
    out = []
    for module, path in sorted(known.items()):
        if not _in(module, inside):
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("landscape"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name != "_C":
                    out.append((module, mod, alias.name))
    return out


def graph(root: str = ROOT) -> dict[str, dict[str, set[str]]]:
    known = modules(root)
    return {m: imports_of(m, p, known) for m, p in sorted(known.items())}


def cycles(g: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    return out


def long_functions(root: str = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, str, int]]:
    """``(module path, function, lines)`` of every function longer than ``limit`` lines."""
    out = []
    for path in sorted(modules(root).values()):
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append((os.path.relpath(path, os.path.dirname(root)), node.name, lines))
    return out


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(root: str = ROOT) -> list[str]:
    """Every broken rule, one line each (empty when the layering holds)."""
    g = graph(root)
    out = []
    for m, deps in g.items():
        if not _in(m, "landscape.cli", "landscape.demo", "landscape.__main__"):
            for d, where in sorted(deps.items()):
                if _in(d, "landscape.cli", "landscape.demo"):
                    out.append(f"rule 1: {m} imports {d} ({', '.join(sorted(where))})")
        if _in(m, "landscape.plot"):
            banned = tuple(f"landscape.{a}" for a in ANALYSIS)
            for d, where in sorted(deps.items()):
                if _in(d, *banned):
                    out.append(f"rule 2: {m} imports {d} ({', '.join(sorted(where))})")
    for comp in cycles(g):
        out.append(f"rule 3: import cycle through {', '.join(comp)}")
    for path, name, lines in long_functions(root):
        out.append(f"rule 4: {path}: {name} is {lines} lines (at most {MAX_FUNCTION_LINES})")
    for module, source, name in private_imports(root):
        out.append(f"rule 5: {module} imports the private name {name} from {source}")
    return out


def _print_graph(g: dict[str, dict[str, set[str]]], stream) -> None:
    for m, deps in g.items():
        parts = [f"{d}{'' if where == {'module-level'} else ' (in function)'}" for d, where in sorted(deps.items())]
        print(f"{m} -> {', '.join(parts) if parts else '-'}", file=stream)


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", action="store_true", help="print every module's imports")
    args = ap.parse_args(argv)
    g = graph()
    if args.graph:
        _print_graph(g, sys.stdout)
    edges = sum(len(d) for d in g.values())
    bad = violations()
    print(f"{len(g)} modules, {edges} imports between them; {len(bad)} broken rule(s)")
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
