import os

import pytest
import torch

# Tests run on few cores; keep them deterministic and quiet.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them eagerly (or
    fails with ``fail`` as its message): the compiled path's tests stay fast and can say how
    often something was compiled."""

    def __init__(self, fail: str | None = None):
        self.graphs = 0
        self.fail = fail

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        if self.fail:
            raise RuntimeError(self.fail)
        return gm.forward


@pytest.fixture
def counter(monkeypatch, tmp_path):
    """The compiled path on a :class:`CountingBackend`, with an empty process cache and its own
    warm-up record; set ``counter.fail`` to make every compilation fail."""
    from landscape import compiled

    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path / "compile-cache"))
    backend = CountingBackend()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    yield backend
    torch._dynamo.reset()


def _folder_state(root) -> dict[str, str]:
    import hashlib

    state = {}
    for base, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(base, name), root) + "/"] = "dir"
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return state


@pytest.fixture
def folder_state():
    """``folder_state(root)``: every file under ``root`` by relative path with its SHA-256, and
    every folder (``"sub/": "dir"``), to show that bad input changed nothing and left nothing."""
    return _folder_state
