"""Model specs: built-in names or ``package.module:factory`` -> ``nn.Module``.

Spec grammar
------------
``<name>``
    A built-in factory, one of :func:`list_models` (``mlp``, ``convfc``, ``vgg16``,
    ``vgg16_bn``, ``vgg19``, ``vgg19_bn``, ``small_cnn``, ``resnet20``, ``resnet32``, ``resnet44``,
    ``resnet56``, ``resnet110``, ``preresnet20``, ``preresnet56``, ``preresnet110``, ``preresnet164``,
    ``wideresnet28x10``).
``<peer>.<class>``
    A network of a peer repository under its class name, in any case: ``dmc.`` for
    dnn-mode-connectivity (``dmc.vgg16bn``, ``dmc.PreResNet110``), ``swa.`` for the SWA
    repository, ``dbc.`` for Anokhin & Yarotsky's (``dbc.linear3nobias``). It builds our
    network of the same computation with that class's sizes, and the peer's checkpoints load
    into it as they are (see :mod:`landscape.models.peers`).
``hf:<dir>``
    A Hugging Face model folder: the class named in its ``config.json`` ``architectures``,
    built from the config alone (weights come from ``load_checkpoint(dir, model)``); needs
    ``transformers`` (``pip install "landscape[hf]"``). kwargs: ``dtype``,
    ``attn_implementation``. See :mod:`landscape.models.hf`.
``<package.module>:<attribute>[.<attribute>...]``
    Any importable callable returning an ``nn.Module`` (``torch.nn:Linear``,
    ``my_project.nets:make_net``); imported with :func:`importlib.import_module`. The current
    directory is importable (``--model mymodels:make`` finds ``./mymodels.py`` without
    ``PYTHONPATH=.``): a module found nowhere on ``sys.path`` is looked up there, after
    everything else (see :func:`import_object`).

The factory is called with keyword arguments ``kwargs``: a dict, or a JSON object string as
given on the command line (``--model-kwargs '{"widths": [2000]}'``).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from .._kwargs import parse_kwargs
from .convnets import convfc, vgg16, vgg16_bn, vgg19, vgg19_bn
from .errors import ModelSpecError
from .hf import HF_PREFIX, hf_model, is_hf_spec
from .mlp import mlp
from .peers import PEER_MODELS
from .resnet import (
    preresnet20,
    preresnet56,
    preresnet110,
    preresnet164,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from .small import small_cnn
from .wide_resnet import wideresnet28x10

__all__ = [
    "ModelSpecError",
    "build_model",
    "describe_model",
    "import_object",
    "list_models",
    "resolve_factory",
]

_BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "convfc": convfc,
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
    "vgg19": vgg19,
    "vgg19_bn": vgg19_bn,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "preresnet20": preresnet20,
    "preresnet56": preresnet56,
    "preresnet110": preresnet110,
    "preresnet164": preresnet164,
    "wideresnet28x10": wideresnet28x10,
}

_PEER_PREFIXES = tuple(sorted({name.partition(".")[0] + "." for name in PEER_MODELS}))


def list_models() -> list[str]:
    """Names of the built-in model specs, sorted: ours, then the peers' (``dbc.*``,
    ``dmc.*``, ``swa.*``)."""
    return sorted(_BUILTIN) + sorted(PEER_MODELS)


def _parse_kwargs(kwargs: dict[str, Any] | str | None) -> dict[str, Any]:
    return parse_kwargs(kwargs, "model kwargs", ModelSpecError, "'{\"num_classes\": 10}'")


def resolve_factory(spec: str) -> tuple[Callable[..., Any], str]:
    """Return the factory of ``spec`` and its qualified name ``module:attribute``.

    Raises
    ------
    ModelSpecError
        Unknown built-in name, module that cannot be imported, missing or non-callable
        attribute.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(
            f"model spec must be a non-empty string, got {spec!r} "
            f"(expected one of {list_models()} or 'package.module:factory')"
        )
    spec = spec.strip()
    if is_hf_spec(spec):
        directory = spec[len(HF_PREFIX) :]
        if not directory:
            raise ModelSpecError("model spec 'hf:' names no folder; expected hf:<model folder>")
        return functools.partial(hf_model, directory), f"{hf_model.__module__}:{hf_model.__qualname__}"
    if ":" not in spec:
        if spec.lower().startswith(_PEER_PREFIXES):
            return _peer_factory(spec)
        if spec not in _BUILTIN:
            raise ModelSpecError(
                f"unknown model {spec!r} (expected one of {sorted(_BUILTIN)}, a peer's network such as "
                "'dmc.vgg16' (`landscape models` lists them) or 'package.module:factory')"
            )
        factory = _BUILTIN[spec]
        return factory, f"{factory.__module__}:{factory.__qualname__}"
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ModelSpecError(
            f"model spec {spec!r} is not 'package.module:factory' (expected one module path, "
            "one colon, one attribute path)"
        )
    try:
        target = import_object(module_name, attribute, f"model spec {spec!r}")
    except ImportError as exc:
        raise ModelSpecError(str(exc)) from exc
    if not callable(target):
        raise ModelSpecError(f"{spec!r} is a {type(target).__name__}, not a callable returning an nn.Module")
    return target, f"{module_name}:{attribute}"


def _peer_factory(spec: str) -> tuple[Callable[..., Any], str]:
    """``dmc.vgg16`` (any case) -> our factory with the peer's keyword arguments."""
    name = spec.lower()
    if name not in PEER_MODELS:
        prefix = name.partition(".")[0] + "."
        known = [n for n in PEER_MODELS if n.startswith(prefix)]
        raise ModelSpecError(f"unknown model {spec!r} (the {prefix}* networks are {known})")
    factory, defaults = PEER_MODELS[name]
    return functools.partial(factory, **defaults), f"{factory.__module__}:{factory.__qualname__}"


def _on_sys_path(directory: str) -> bool:
    real = os.path.realpath(directory)
    return any(os.path.realpath(entry or os.curdir) == real for entry in sys.path)


def _import_module(module_name: str):
    """``importlib.import_module``, retried with the current directory appended to ``sys.path``
    when the module itself (not something it imports) is found nowhere."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        cwd = os.getcwd()
        own = missing and (module_name == missing or module_name.startswith(missing + "."))
        if not own or _on_sys_path(cwd):
            raise
        sys.path.append(cwd)  # last: installed packages keep precedence over local files
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def import_object(module_name: str, attribute: str, what: str = "spec") -> Any:
    """The object ``module_name:attribute`` (``attribute`` may be dotted), for user specs of
    models (``mymodels:make``) and data (``py:mydata:load``).

    The module is imported with :func:`importlib.import_module`; when it is found nowhere on
    ``sys.path``, the current directory is appended to ``sys.path`` (last, so installed
    packages keep precedence) and the import is tried again, as ``python -m`` would find it.
    ``what`` names the spec in error messages (``"model spec 'mymodels:make'"``).

    Raises
    ------
    ImportError
        The module cannot be imported (the message names it and the reason: not found, or
        the error its code raised), or it lacks the attribute.
    """
    try:
        target: Any = _import_module(module_name)
    except Exception as exc:  # any error raised while importing user code
        reason = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.partition(".")[0]:
            reason += f" (looked on sys.path and in the current directory {os.getcwd()!r})"
        raise ImportError(f"could not import module {module_name!r} for {what}: {reason}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ImportError(f"module {module_name!r} has no attribute {attribute!r} ({what})")
        target = getattr(target, part)
    return target


def build_model(spec: str, kwargs: dict[str, Any] | str | None = None) -> nn.Module:
    """Build the model named by ``spec``.

    Parameters
    ----------
    spec : str
        A built-in name (:func:`list_models`) or ``package.module:factory``.
    kwargs : dict or str or None
        Keyword arguments of the factory, or a JSON object string.

    Returns
    -------
    nn.Module
        A freshly initialised model (in train mode, as ``nn.Module`` constructors leave it).

    Raises
    ------
    ModelSpecError
        Unknown name, failed import, missing attribute, bad JSON, kwargs the factory rejects
        (``TypeError``/``ValueError``), or a factory that returns something other than an
        ``nn.Module``.

    Examples
    --------
    >>> build_model("mlp", '{"widths": [32], "num_classes": 3}')[-1].out_features
    3
    >>> build_model("torch.nn:Linear", {"in_features": 3, "out_features": 2}).weight.shape
    torch.Size([2, 3])
    """
    factory, qualified = resolve_factory(spec)
    arguments = _parse_kwargs(kwargs)
    try:
        model = factory(**arguments)
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(
            f"model spec {spec!r} ({qualified}) rejected kwargs {arguments}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model spec {spec!r} ({qualified}) returned a {type(model).__name__}; expected a torch.nn.Module"
        )
    return model


def describe_model(
    spec: str,
    kwargs: dict[str, Any] | str | None = None,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Attributes that identify a model in result files.

    Parameters
    ----------
    spec : str
        The model spec.
    kwargs : dict or str or None
        Its kwargs (dict or JSON string).
    model : nn.Module, optional
        The built model; adds its class and parameter count.

    Returns
    -------
    dict
        ``model_spec``, ``model_kwargs`` (canonical JSON, sorted keys), ``model_factory``
        (``module:qualname``) and, with ``model``, ``model_class`` and ``num_parameters``.
    """
    _, qualified = resolve_factory(spec)
    arguments = _parse_kwargs(kwargs)
    try:
        canonical = json.dumps(arguments, sort_keys=True)
    except TypeError:
        canonical = repr(sorted(arguments.items()))
    out: dict[str, Any] = {
        "model_spec": spec.strip(),
        "model_kwargs": canonical,
        "model_factory": qualified,
    }
    if model is not None:
        out["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
        out["num_parameters"] = sum(p.numel() for p in model.parameters())
    return out
