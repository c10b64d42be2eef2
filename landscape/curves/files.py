"""Reading a curve file: ours (:meth:`Curve.save`) or a curve checkpoint of dnn-mode-connectivity.

It sits above :mod:`.curve` and :mod:`.dmc` (the importer builds a :class:`Curve`), so the
choice of format imports both without a cycle.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..io import pt_version
from ..weights import CheckpointError, Layout, Weights
from .curve import _FORMAT, Curve
from .dmc import import_dmc_curve

__all__ = ["CURVE_FORMATS", "load_curve"]

CURVE_FORMATS = ("landscape", "dmc")


def load_curve(
    path: str | os.PathLike,
    model: torch.nn.Module,
    format: str = "landscape",
    *,
    curve: str | None = None,
    trust: bool = False,
) -> tuple[Curve, dict[str, Any]]:
    """Load a curve for ``model``; returns the curve and the saved dict.

    Parameters
    ----------
    path : str
        A curve file saved by :meth:`Curve.save` (``format="landscape"``), or a curve
        checkpoint of dnn-mode-connectivity's ``train.py`` (``format="dmc"``,
        :func:`landscape.curves.import_dmc_curve`: its ``num_bends`` counts both ends).
    model : nn.Module
        The network the curve's points are weights of.
    format : {"landscape", "dmc"}
    curve : {"bezier", "polychain"}, optional
        The curve type; a DMC file records it in its ``coeff_layer`` buffers, and ``curve`` is
        needed only when they are absent. Given for a landscape file, it must be the file's.
    trust : bool
        ``format="dmc"`` only: allow pickled Python objects (see
        :func:`landscape.weights.read_state_dict`).
    """
    if format not in CURVE_FORMATS:
        raise ValueError(f"format should be one of {CURVE_FORMATS}, got {format!r}")
    if format == "dmc":
        return import_dmc_curve(path, model, curve=curve, trust=trust)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"curve file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"'{path}' is not a readable curve file ({str(e).splitlines()[0][:120]})") from e
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"'{path}' is not a landscape curve file (no format '{_FORMAT}')")
    try:
        pt_version(state, _FORMAT, path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    layout = Layout.from_module(model)
    if state["names"] != layout.names():
        raise CheckpointError(f"curve file '{path}' was made for another model (its tensor names differ)")
    trained = tuple(state.get("trained_ends", ()))
    start, end = (
        Weights(
            state[n],
            layout,
            source=state.get(f"{n}_source"),
            sha256=None if n in trained else state.get(f"{n}_sha256"),
        )
        for n in ("start", "end")
    )
    if curve is not None and curve != state["kind"]:
        raise CheckpointError(f"curve file '{path}' holds a {state['kind']} curve, but curve={curve!r} was given")
    loaded = Curve(start, end, state["n_bends"], state["kind"])
    loaded.origin_sha256 = {n: state.get(f"{n}_sha256") for n in ("start", "end")}
    loaded.trained_ends = trained
    with torch.no_grad():
        loaded.bends.copy_(state["bends"])
    return loaded, state
