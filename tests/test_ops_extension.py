"""Tests of loading the compiled extension landscape._C and the warning when it is missing."""

import importlib.abc
import sys
import warnings

import pytest

import landscape.ops._extension as ops


class _FailingImport(importlib.abc.MetaPathFinder):
    """Makes ``import landscape._C`` raise ``error`` (as a missing or broken build would)."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path, target=None):
        if name == "landscape._C":
            raise self.error
        return None


def _simulate_import_error(monkeypatch, error):
    monkeypatch.delitem(sys.modules, "landscape._C", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])


def _warnings_of_two_calls(monkeypatch, extension_error):
    monkeypatch.setattr(ops, "_EXTENSION_ERROR", extension_error)
    monkeypatch.setattr(ops, "_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops._warn_extension_unavailable()
        ops._warn_extension_unavailable()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_missing_extension_warning_says_not_built_and_how_to_build(monkeypatch):
    _simulate_import_error(monkeypatch, ModuleNotFoundError("No module named 'landscape._C'", name="landscape._C"))
    error = ops._load_extension()
    assert error == "is not built (ModuleNotFoundError: No module named 'landscape._C')"
    messages = _warnings_of_two_calls(monkeypatch, error)
    assert len(messages) == 1  # once per process
    message = messages[0]
    assert "the compiled extension landscape._C is not built" in message
    assert "No module named 'landscape._C'" in message
    assert "pure-PyTorch references" in message
    assert "`pip install --no-build-isolation -e .`" in message
    assert "`python setup.py build_ext --inplace`" in message
    assert "circular" not in message


def test_broken_extension_warning_says_failed_to_load_with_the_error(monkeypatch):
    _simulate_import_error(monkeypatch, ImportError("_C.so: undefined symbol: _ZN3c104warnERKNS_7WarningE"))
    error = ops._load_extension()
    assert error.startswith("failed to load (ImportError: _C.so: undefined symbol: _ZN3c10")
    (message,) = _warnings_of_two_calls(monkeypatch, error)
    assert "landscape._C failed to load (ImportError: _C.so: undefined symbol" in message
    assert "`python setup.py build_ext --inplace`" in message


@pytest.mark.skipif(not ops.extension_available(), reason="the compiled extension landscape._C is not built")
def test_built_extension_loads_without_warning(monkeypatch):
    assert ops._load_extension() is None
    assert _warnings_of_two_calls(monkeypatch, None) == []
