"""The package's layering rules (tools/import_graph.py), checked on every test run: data flows
one way, plots read files only, no import cycle, no function over 120 lines, and connect/'s
modules share only public names."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import import_graph  # noqa: E402


def test_the_package_keeps_its_layering_rules():
    assert import_graph.violations() == []


def test_the_rules_catch_a_cycle_a_long_function_and_a_private_import(tmp_path):
    pkg = tmp_path / "landscape"
    (pkg / "connect").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "connect" / "__init__.py").write_text("")
    (pkg / "connect" / "a.py").write_text("from .b import _hidden\n")
    body = "\n".join(f"    x{i} = {i}" for i in range(125))
    (pkg / "connect" / "b.py").write_text(f"def _hidden():\n    from .a import _hidden\n{body}\n")
    found = import_graph.violations(str(pkg))
    assert any(v.startswith("rule 3: import cycle through landscape.connect.a, landscape.connect.b") for v in found)
    assert any(v.startswith("rule 4:") and "_hidden is 127 lines" in v for v in found)
    assert "rule 5: landscape.connect.a imports the private name _hidden from landscape.connect.b" in found
