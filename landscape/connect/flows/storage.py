"""Saving and loading a global connection model: flows with their neuron groups, as plain data.

The file is a ``torch.save`` of dicts, lists, strings, numbers and tensors only, readable with
``torch.load(path, weights_only=True)``: the registered kind ``"landscape.connect.flows"``
(:mod:`landscape.io`), version 2 (version 1 files, before the Gaussian base, still load).
It names no module or class: flows by their ``kind`` (``"realnvp"``, ``"iaf"``) and
constructor arguments, groups by their ``(entry name, axis)`` parts, so moving code does
not change what a file means.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...io import pt_version, result_kind
from ...weights import save_atomic
from .checks import dtype_device
from .groups import NeuronGroup
from .models import DTYPES, FLOW_KINDS

__all__ = ["FORMAT", "FORMAT_VERSION", "load_connection_model", "save_connection_model"]

#: The registered kind of connection-model files.
FORMAT = "landscape.connect.flows"
#: Its version: 2 added the flows' "chol" buffer and the optional template.
FORMAT_VERSION = result_kind(FORMAT).version


def _check_plain(obj: Any, where: str) -> None:
    """Only what ``torch.load(weights_only=True)`` reads back: tensors, dicts with str keys,
    lists, tuples, str, int, float, bool and None."""
    if obj is None or isinstance(obj, (str, bool, int, float, Tensor)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a key {k!r} of type {type(k).__name__}; expected str keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} is a {type(obj).__name__}; expected tensors, dicts, lists, str, int, float, bool or None"
    )


def save_connection_model(
    path: str | os.PathLike,
    flows: Mapping[str, nn.Module],
    groups: Sequence[NeuronGroup],
    *,
    kind: str,
    meta: Mapping[str, Any] | None = None,
    template: Mapping[str, Tensor] | None = None,
    force: bool = False,
) -> None:
    """Save a global connection model (flows and their neuron groups) as plain data.

    The file is a ``torch.save`` of dicts, lists, strings, numbers and tensors only
    (constructor arguments, dtype and ``state_dict`` of every flow, the parts of every
    group, ``meta``), readable with ``torch.load(path, weights_only=True)``.

    Parameters
    ----------
    path : str or PathLike
        Output file (``.pt``); written atomically.
    flows : dict of str to RealNVP or IAF
        One flow per group name.
    groups : list of NeuronGroup
        The groups the flows belong to.
    kind : {"realnvp", "iaf"}
        The flows' class (checked).
    meta : dict, optional
        Anything to keep with the model (architecture, data, training settings), made of
        tensors, dicts with str keys, lists, str, int, float, bool and None.
    template : Weights or mapping of str to Tensor, optional
        The template of :func:`align_pool` for flows fitted to an aligned pool (what
        :func:`aligned_flow_path` needs); :func:`load_connection_model` returns it as
        ``meta["template"]``.
    force : bool
        Overwrite an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``force`` is False.
    """
    path = os.fspath(path)
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind should be one of {sorted(FLOW_KINDS)}, got {kind!r}")
    if isinstance(groups, NeuronGroup) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(f"groups should be a non-empty list of NeuronGroup, got {type(groups).__name__}")
    if not isinstance(flows, Mapping):
        raise ValueError(f"flows should be a dict of group name to flow, got {type(flows).__name__}")
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    if "template" in meta:
        raise ValueError('meta has a key "template"; pass the template as template= (it is returned under that key)')
    if template is not None:
        if not isinstance(template, Mapping) or not all(torch.is_tensor(v) for v in template.values()):
            raise ValueError(
                f"template should be a Weights or a mapping of str to Tensor, got {type(template).__name__}"
            )
        template = {k: v.detach().cpu().clone() for k, v in template.items()}
    state_flows: dict[str, Any] = {}
    for g in groups:
        if not isinstance(g, NeuronGroup):
            raise ValueError(f"groups should hold NeuronGroup objects, got a {type(g).__name__}")
        if g.name not in flows:
            raise ValueError(f"no flow for group '{g.name}'; flows has {sorted(flows)}")
        f = flows[g.name]
        if not isinstance(f, FLOW_KINDS[kind]):
            expected = FLOW_KINDS[kind].__name__
            raise ValueError(f"the flow of group '{g.name}' is a {type(f).__name__}; kind={kind!r} expects {expected}")
        dtype, _ = dtype_device(f)
        if dtype not in DTYPES.values():
            raise ValueError(f"the flow of group '{g.name}' is {dtype}; expected float32 or float64")
        state_flows[g.name] = {
            "config": dict(f.config()),
            "dtype": str(dtype).removeprefix("torch."),
            "state_dict": {k: v.detach().cpu().clone() for k, v in f.state_dict().items()},
        }
    extra = sorted(set(flows) - {g.name for g in groups})
    if extra:
        raise ValueError(f"flows {extra} belong to no group; expected one flow per group")
    state = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "groups": [{"name": g.name, "parts": [[n, a] for n, a in g.parts]} for g in groups],
        "flows": state_flows,
        "meta": meta,
        "template": template,
    }
    save_atomic(state, path, force=force)


def load_connection_model(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, nn.Module], list[NeuronGroup], dict[str, Any]]:
    """Load what :func:`save_connection_model` wrote (safely: ``weights_only=True``).

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device
        Where the flows go.

    Returns
    -------
    flows : dict of str to RealNVP or IAF
        In eval mode; their ``kind`` attribute tells RealNVP from IAF.
    groups : list of NeuronGroup
    meta : dict
        With the template of an aligned model under ``"template"`` (an OrderedDict of
        tensors, in the saved order) when it was saved with one.

    Notes
    -----
    Files of format version 1 (before the Gaussian base) load as flows whose ``chol`` is
    the identity, i.e. exactly the flows they held.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"connection model '{path}' does not exist or is not a file")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not a connection model saved by save_connection_model")
    version = pt_version(state, FORMAT, path)
    kind = state["kind"]
    if kind not in FLOW_KINDS:
        raise ValueError(f"'{path}' has flows of kind {kind!r}; expected one of {sorted(FLOW_KINDS)}")
    groups = [NeuronGroup(g["name"], [tuple(p) for p in g["parts"]]) for g in state["groups"]]
    flows: dict[str, nn.Module] = {}
    for g in groups:
        entry = state["flows"][g.name]
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"'{path}': flow '{g.name}' has dtype {entry['dtype']!r}; expected float32 or float64")
        flow = FLOW_KINDS[kind](**entry["config"]).to(dtype=DTYPES[entry["dtype"]])
        sd = dict(entry["state_dict"])
        if version == 1:  # no Gaussian base yet: the identity
            sd.setdefault("chol", torch.eye(flow.dim, dtype=DTYPES[entry["dtype"]]))
        flow.load_state_dict(sd)
        flows[g.name] = flow.to(map_location).eval()
    meta = dict(state["meta"])
    if state.get("template") is not None:
        meta["template"] = OrderedDict(state["template"].items())
    return flows, groups, meta
