"""Saving and loading variational networks as safe ``.pt`` files, and their predictions.

The file is a dict that ``torch.load(weights_only=True)`` reads::

    {"format": "landscape-variational", "version": 1,
     "spec": {...},          # the caller's spec (model, model_kwargs, alpha, ...) plus
                             # "parameterization" and "variational_layers"
     "state_dict": {...}}    # the variational network's state_dict

``spec["variational_layers"]`` maps every variational layer's module name to its
``parameterization`` and ``train_alpha``, so the network is rebuilt exactly from the base
model ``build(spec)`` returns, mixed parameterizations and deterministic layers included.

:func:`save_predictions` writes the scores of the prediction schemes
(:func:`~landscape.variational.predict`) as a result file of kind ``"predict"``;
:func:`landscape.io.read_predictions` reads it back.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import create_result, pt_version, result_kind
from ..weights import CheckpointError, save_atomic
from .layers import VariationalLayer, variational_layers
from .networks import _CONVERTIBLE, _replace

__all__ = ["FORMAT", "VERSION", "load_variational", "read_variational", "save_predictions", "save_variational"]

FORMAT = "landscape-variational"
VERSION = result_kind(FORMAT).version  # the registered version of the kind


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"spec key {k!r} in {where} should be a string")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"spec value at {where} is a {type(value).__name__}; expected None, bool, int, float, str, list or dict "
        "(what torch.load(weights_only=True) can read back)"
    )


def save_variational(vmodel: nn.Module, path: str | os.PathLike, *, spec: dict, force: bool = False) -> None:
    """Write ``vmodel`` and the spec that rebuilds it to ``path``.

    Parameters
    ----------
    vmodel : nn.Module
        A network with variational layers.
    path : str
        The ``.pt`` file; an existing one is only replaced with ``force``.
    spec : dict
        Plain values (str, numbers, bool, None, lists, dicts) that the ``build`` function of
        :func:`load_variational` needs, e.g. ``{"model": "mlp", "model_kwargs": {...}}``.
        ``parameterization`` (the most common one, unless given) and ``variational_layers``
        are added.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``force`` is False.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"'{path}' already exists; pass force=True (CLI: --force) to overwrite it")
    if not isinstance(spec, dict):
        raise TypeError(f"spec should be a dict, got {type(spec).__name__}")
    layers = variational_layers(vmodel)
    if not layers:
        raise ValueError(f"{type(vmodel).__name__} has no variational layers; convert it first")
    out_spec = dict(spec)
    out_spec["variational_layers"] = {
        name: {"parameterization": m.parameterization, "train_alpha": m.train_alpha} for name, m in layers
    }
    out_spec.setdefault("parameterization", Counter(m.parameterization for _, m in layers).most_common(1)[0][0])
    _check_plain(out_spec, "spec")
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "spec": out_spec,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in vmodel.state_dict().items()},
    }
    save_atomic(obj, path, force=force)


def read_variational(path: str | os.PathLike) -> dict:
    """The checked contents of a file written by :func:`save_variational` (``spec`` and
    ``state_dict``), without building the network."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"'{path}' does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not this format
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"'{path}' is not a readable safe PyTorch file ({first})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        what = f"format {obj.get('format')!r}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(
            f"'{path}' is not a variational network file (it holds {what}); expected format {FORMAT!r} "
            "written by landscape.variational.save_variational"
        )
    try:
        pt_version(obj, FORMAT, path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(obj.get("spec"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"'{path}' lacks its 'spec' or 'state_dict' dict")
    if not isinstance(obj["spec"].get("variational_layers"), dict):
        raise CheckpointError(f"'{path}' spec lacks 'variational_layers'")
    return obj


def load_variational(path: str | os.PathLike, build: Callable[[dict], nn.Module]) -> nn.Module:
    """Rebuild the variational network saved by :func:`save_variational`.

    Parameters
    ----------
    path : str
    build : callable
        ``build(spec) -> nn.Module``: the deterministic base model (e.g. a function calling
        ``landscape.models.build_model(spec["model"], spec["model_kwargs"])``); its layers
        named in ``spec["variational_layers"]`` are made variational and the saved state is
        loaded (strictly).

    Returns
    -------
    nn.Module
        In evaluation mode (its layers predict with the means until put in training mode
        or given a mode by :func:`~landscape.variational.variational_mode`).

    Raises
    ------
    CheckpointError
        The file is not of this format, or does not match the model ``build`` returns.
    """
    path = os.fspath(path)
    obj = read_variational(path)
    spec, state = obj["spec"], obj["state_dict"]
    config = spec["variational_layers"]
    base = build(spec)
    if not isinstance(base, nn.Module):
        raise TypeError(f"build(spec) should return an nn.Module, got {type(base).__name__}")
    names = {n for n, m in base.named_modules() if type(m) in _CONVERTIBLE}
    missing = sorted(set(config) - names)
    if missing:
        raise CheckpointError(
            f"'{path}' does not match the model: layers {missing} are not nn.Linear/nn.Conv2d modules of it"
        )

    def make(name: str, mod: nn.Module) -> nn.Module | None:
        if name not in config or isinstance(mod, VariationalLayer):
            return None
        c = config[name]
        return _CONVERTIBLE[type(mod)].from_module(mod, c["parameterization"], train_alpha=bool(c["train_alpha"]))

    vmodel = _replace(base, make)
    try:
        vmodel.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"'{path}' does not match the model: {' '.join(str(e).split())[:300]}") from e
    return vmodel.eval()


def save_predictions(
    results: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    samples: int,
    seed: int,
    bn: str = "running",
    attrs: Mapping[str, Any] | None = None,
    force: bool = False,
) -> str:
    """Write the scores of the prediction schemes as a result file of kind ``"predict"``.

    Parameters
    ----------
    results : mapping of str to EnsembleResult
        What :func:`~landscape.variational.predict` returned (scheme -> result with
        ``acc``, ``nll``, ``ece``), in the order to store.
    path : str or path-like
    samples, seed, bn
        The arguments :func:`~landscape.variational.predict` was called with (recorded).
    attrs : mapping, optional
        More attributes (the checkpoint, the data spec, the split...).
    force : bool
        Replace an existing file (else :class:`~landscape.io.ResultExistsError`).

    Returns
    -------
    str
        ``path``; :func:`landscape.io.read_predictions` reads it.
    """
    schemes = list(results)
    if not schemes:
        raise ValueError("results is empty; expected one entry per prediction scheme")
    file_attrs = dict(attrs or {})
    file_attrs.update(schemes=schemes, samples=int(samples), seed=seed, bn=bn)
    values = {m: np.array([float(getattr(results[s], m)) for s in schemes]) for m in ("acc", "nll", "ece")}
    with create_result(
        path, kind="predict", shape=(len(schemes),), metrics=list(values), attrs=file_attrs, force=force
    ) as rf:
        rf.write_cells(np.arange(len(schemes)), values)
    return os.fspath(path)
