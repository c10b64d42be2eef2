"""Hugging Face model folders: the architecture from ``config.json``, never downloaded.

``build_model("hf:DIR")`` (CLI ``--model hf:DIR``) builds the class named first in the
folder's ``config.json`` ``architectures`` (``GPT2LMHeadModel`` for GPT-2) from the config
alone, in the config's dtype, with freshly initialised weights; the weights come from
:func:`landscape.load_checkpoint` on the same folder (single ``model.safetensors`` or shards
listed in ``model.safetensors.index.json``, read tensor by tensor). Needs the optional
``transformers`` package (``pip install "landscape[hf]"``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from .errors import ModelSpecError

__all__ = ["HF_PREFIX", "hf_model", "is_hf_spec", "set_eager_attention"]

HF_PREFIX = "hf:"


def is_hf_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.strip().startswith(HF_PREFIX)


def _config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "config.json")
    if not os.path.isdir(directory):
        raise ModelSpecError(f"model folder {directory!r} does not exist (expected a Hugging Face model folder)")
    if not os.path.isfile(path):
        raise ModelSpecError(
            f"{directory!r} is not a Hugging Face model folder: it has no config.json "
            "(expected config.json with model.safetensors or model.safetensors.index.json)"
        )
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"{path!r} is not a readable JSON config: {exc}") from None


def hf_model(directory: str, dtype: str | None = None, attn_implementation: str | None = None) -> nn.Module:
    """The model of a Hugging Face folder, built from its ``config.json`` alone.

    Parameters
    ----------
    directory : str
        The folder (``config.json``; weights are loaded separately with ``load_checkpoint``).
    dtype : str, optional
        Override the config's dtype (``"float32"``, ``"bfloat16"``...).
    attn_implementation : str, optional
        ``"eager"``, ``"sdpa"``... (default: what transformers picks).

    Returns
    -------
    nn.Module
        In eval mode, with the config's ties (``tie_word_embeddings``) in place.
    """
    directory = os.path.expanduser(directory)
    raw = _config(directory)
    try:
        import transformers
    except ImportError:
        raise ModelSpecError(
            f"model spec 'hf:{directory}' needs the 'transformers' package: pip install \"landscape[hf]\""
        ) from None
    archs = raw.get("architectures") or []
    if not archs:
        raise ModelSpecError(f"{directory}/config.json names no 'architectures'; expected e.g. [\"GPT2LMHeadModel\"]")
    cls = getattr(transformers, archs[0], None)
    if cls is None:
        raise ModelSpecError(
            f"{directory}/config.json names architecture {archs[0]!r}, which transformers "
            f"{transformers.__version__} does not have"
        )
    config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    kwargs: dict[str, Any] = {}
    chosen = dtype or raw.get("dtype") or raw.get("torch_dtype")
    if chosen:
        if not isinstance(getattr(torch, str(chosen), None), torch.dtype):
            raise ModelSpecError(f"dtype {chosen!r} of model folder {directory!r} is not a torch dtype")
        kwargs["dtype"] = getattr(torch, str(chosen))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = cls._from_config(config, **kwargs)
    return model.eval()


def set_eager_attention(model: nn.Module) -> bool:
    """Switch a Hugging Face model to eager attention, whose double backward and forward-mode
    derivatives exist everywhere (scaled-dot-product attention on CPUs has neither, which
    Hessian-vector products need). Returns whether the model was changed."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) in (None, "eager"):
        return False
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # pragma: no cover - older transformers
        config._attn_implementation = "eager"
    return True
