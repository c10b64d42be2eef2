"""The Python examples in docs/api.md run and their assertions hold."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(name):
    with open(os.path.join(ROOT, "docs", name)) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_api_examples_run(tmp_path, monkeypatch):
    blocks = _blocks("api.md")
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:
        exec(compile(code.replace("/tmp/", f"{tmp_path}/"), "docs/api.md", "exec"), namespace)
    assert namespace["res"].path == "fused"


def test_readme_names_both_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    for marker in ("<!-- demo-command -->", "<!-- test-command -->"):
        after = text.split(marker, 1)[1]
        assert re.match(r"\s*```bash\n[^\n]+\n```", after), marker
    assert "landscape demo" in text.split("<!-- demo-command -->", 1)[1].split("```")[1]
    assert "pytest" in text.split("<!-- test-command -->", 1)[1].split("```")[1]


@pytest.mark.parametrize("name", ["api.md", "h5-format.md"])
def test_docs_exist(name):
    assert _blocks(name)
