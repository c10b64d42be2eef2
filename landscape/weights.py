"""Named weight tensors, their layout, and safe checkpoint loading.

A :class:`Weights` is an ordered mapping ``name -> Tensor`` (the entries of a module's
``state_dict``) together with a :class:`Layout` that knows, for every entry, what it is:
a convolution or linear weight (and which dimension indexes its filters), a bias, a
BatchNorm affine parameter or running statistic, or something else. The layout also
fixes the order and offsets used when the floating-point entries are flattened into one
vector, which is how weight points are combined (see :mod:`landscape.pointset`).

Tied tensors (one parameter under two names, as a language model's output head shares the
input embedding) are one entry of the flat vector: the later names are *aliases*
(:attr:`Entry.tied_to` names the first), take no part in the flat vector, and always hold the
very tensor of the name they are tied to, so a tie holds at every point.

Loading is safe by default: ``torch.load(weights_only=True)`` unless the caller passes
``trust=True``. Checkpoints are matched to the model by name, never by position; a checkpoint
may omit the aliases of tied tensors (Hugging Face files omit ``lm_head.weight``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .io import atomic_write

__all__ = [
    "CheckpointError",
    "Entry",
    "Layout",
    "Weights",
    "file_sha256",
    "load_checkpoint",
    "load_weights",
    "model_skeleton",
    "read_state_dict",
    "save_atomic",
    "save_weights",
    "split_checkpoint_key",
    "weights_from_state_dict",
]

#: Kinds of entries a layout distinguishes.
KINDS = (
    "weight",  # conv / linear weight: filters along `filter_dim`
    "bias",  # bias of a conv / linear layer
    "bn_weight",
    "bn_bias",
    "bn_running_mean",
    "bn_running_var",
    "bn_count",  # num_batches_tracked (integer, never combined)
    "norm_weight",  # LayerNorm / RMSNorm / GroupNorm scale (no running statistics)
    "norm_bias",
    "param",  # any other parameter
    "buffer",  # any other buffer
)

_WRAPPER_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "net", "module")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match the model."""


@dataclass(frozen=True)
class Entry:
    """One named tensor of a layout.

    ``offset`` and ``numel`` locate the tensor in the flat vector; entries that are not
    floating point (``bn_count`` and integer buffers) have ``offset = -1`` and are carried
    along unchanged rather than combined. An alias of a tied tensor has ``tied_to`` set to
    the name it shares its tensor with and ``offset = -1``: it is that entry, under another
    name.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str
    is_parameter: bool
    offset: int
    filter_dim: int | None = None
    tied_to: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def flat(self) -> bool:
        return self.offset >= 0

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


def _is_hf_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf") and getattr(mod, "weight", None) is not None


def _is_norm(mod: nn.Module) -> bool:
    """LayerNorm, RMSNorm, GroupNorm and the norms of Hugging Face models (``LlamaRMSNorm``,
    ``T5LayerNorm``...): normalization layers without running statistics."""
    if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)):
        return True
    if hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm):
        return True
    name = type(mod).__name__
    return name.endswith(("RMSNorm", "LayerNorm")) and not list(mod.children())


class Layout:
    """Order, shapes and kinds of a model's named tensors.

    Parameters
    ----------
    entries : iterable of Entry
        In ``state_dict`` order.
    """

    def __init__(self, entries: Iterable[Entry]):
        self.entries: list[Entry] = list(entries)
        self._by_name = {e.name: e for e in self.entries}
        self.size = sum(e.numel for e in self.entries if e.flat)

    @classmethod
    def from_module(cls, model: nn.Module) -> Layout:
        """Layout of ``model.state_dict()`` with kinds taken from the module types."""
        kinds: dict[str, tuple[str, int | None]] = {}
        for mod_name, mod in model.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            if isinstance(mod, nn.modules.batchnorm._NormBase):
                kinds[prefix + "weight"] = ("bn_weight", None)
                kinds[prefix + "bias"] = ("bn_bias", None)
                kinds[prefix + "running_mean"] = ("bn_running_mean", None)
                kinds[prefix + "running_var"] = ("bn_running_var", None)
                kinds[prefix + "num_batches_tracked"] = ("bn_count", None)
            elif isinstance(mod, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
                filter_dim = 1 if getattr(mod, "transposed", False) else 0
                kinds[prefix + "weight"] = ("weight", filter_dim)
                kinds[prefix + "bias"] = ("bias", None)
            elif _is_hf_conv1d(mod):
                # Hugging Face's Conv1D (GPT-2) stores its weight transposed, [in, out]:
                # a filter (one output unit) is a column
                kinds[prefix + "weight"] = ("weight", 1)
                kinds[prefix + "bias"] = ("bias", None)
            elif isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
                kinds[prefix + "weight"] = ("weight", 0)  # a filter is one token's vector
            elif isinstance(mod, nn.MultiheadAttention):
                for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    kinds[prefix + name] = ("weight", 0)
                kinds[prefix + "in_proj_bias"] = ("bias", None)
                kinds[prefix + "bias_k"] = ("bias", None)
                kinds[prefix + "bias_v"] = ("bias", None)
            elif _is_norm(mod):
                kinds[prefix + "weight"] = ("norm_weight", None)
                kinds[prefix + "bias"] = ("norm_bias", None)
        param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        entries = []
        offset = 0
        first_name: dict[int, str] = {}  # id of a tensor object -> the first name it has
        by_name: dict[str, Entry] = {}
        for name, t in model.state_dict(keep_vars=True).items():
            tied_to = first_name.setdefault(id(t), name)
            if tied_to != name:
                primary = by_name[tied_to]
                entry = Entry(
                    name=name,
                    shape=primary.shape,
                    dtype=primary.dtype,
                    kind=primary.kind,
                    is_parameter=primary.is_parameter,
                    offset=-1,
                    filter_dim=primary.filter_dim,
                    tied_to=tied_to,
                )
                entries.append(entry)
                continue
            kind, filter_dim = kinds.get(name, ("param" if name in param_names else "buffer", None))
            is_float = t.is_floating_point()
            entry = Entry(
                name=name,
                shape=tuple(t.shape),
                dtype=t.dtype,
                kind=kind,
                is_parameter=name in param_names,
                offset=offset if is_float else -1,
                filter_dim=filter_dim,
            )
            entries.append(entry)
            by_name[name] = entry
            if is_float:
                offset += t.numel()
        return cls(entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> Entry:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def aliases(self) -> dict[str, str]:
        """``{alias: name}`` for every tied name after the first of its tensor."""
        return {e.name: e.tied_to for e in self.entries if e.tied_to is not None}

    def carried(self) -> list[Entry]:
        """Entries carried along unchanged (not floating point, and not aliases)."""
        return [e for e in self.entries if not e.flat and e.tied_to is None]

    def flat_entries(self) -> list[Entry]:
        """Entries that take part in the flat vector (floating point ones)."""
        return [e for e in self.entries if e.flat]

    def mask(self, kinds: Iterable[str]) -> torch.Tensor:
        """Boolean mask over the flat vector selecting entries of the given kinds."""
        kinds = set(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown entry kinds {sorted(unknown)}; expected some of {KINDS}")
        m = torch.zeros(self.size, dtype=torch.bool)
        for e in self.flat_entries():
            if e.kind in kinds:
                m[e.slice] = True
        return m

    def parameter_mask(self) -> torch.Tensor:
        """Boolean mask over the flat vector selecting parameters (not buffers)."""
        m = torch.zeros(self.size, dtype=torch.bool)
        for e in self.flat_entries():
            if e.is_parameter:
                m[e.slice] = True
        return m

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": e.name, "shape": list(e.shape), "kind": e.kind, "offset": e.offset}
            | ({"tied_to": e.tied_to} if e.tied_to else {})
            for e in self.entries
        ]


class Weights(Mapping[str, torch.Tensor]):
    """Named tensors of a model with their :class:`Layout`.

    Parameters
    ----------
    tensors : mapping of str to Tensor
        The entries, keyed like ``model.state_dict()``. Aliases of tied tensors may be
        omitted; whatever is given for them, they hold the tensor of the name they are
        tied to.
    layout : Layout
        Must list the keys of ``tensors`` with matching shapes.
    source : str, optional
        Where the weights came from (a path), recorded in result files.
    sha256 : str, optional
        Digest of the source file.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = torch.nn.Linear(3, 2)
    >>> w = ls.Weights.from_module(model)
    >>> w.flatten().shape
    torch.Size([8])
    >>> torch.equal(w.unflatten(w.flatten())["weight"], model.weight.detach())
    True
    """

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        layout: Layout,
        *,
        source: str | None = None,
        sha256: str | None = None,
    ):
        self.tensors: OrderedDict[str, torch.Tensor] = OrderedDict(
            (e.name, tensors[e.name if e.tied_to is None else e.tied_to]) for e in layout
        )
        self.layout = layout
        self.source = source
        self.sha256 = sha256

    @classmethod
    def from_module(cls, model: nn.Module) -> Weights:
        """The current weights of ``model`` (detached copies; the model is not touched)."""
        layout = Layout.from_module(model)
        sd = model.state_dict()
        return cls({k: v.detach().clone() for k, v in sd.items()}, layout)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def flatten(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Concatenate the floating-point entries into one vector ``Tensor[P]``."""
        parts = [self.tensors[e.name].reshape(-1) for e in self.layout.flat_entries()]
        if not parts:
            return torch.zeros(0, dtype=dtype or torch.float32)
        dtype = dtype or torch.promote_types(parts[0].dtype, torch.float32)
        return torch.cat([p.to(dtype) for p in parts])

    def unflatten(self, vector: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Split ``Tensor[P]`` back into named tensors (views); non-float entries are copied
        from these weights."""
        if vector.dim() != 1 or vector.numel() != self.layout.size:
            raise ValueError(f"vector should have shape [{self.layout.size}], got {list(vector.shape)}")
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for e in self.layout:
            if e.flat:
                out[e.name] = vector[e.slice].view(e.shape)
            elif e.tied_to is not None:
                out[e.name] = out[e.tied_to]
            else:
                out[e.name] = self.tensors[e.name]
        return out

    def to(self, device=None, dtype: torch.dtype | None = None) -> Weights:
        """A copy on ``device``; ``dtype`` applies to floating-point entries only."""
        t = {
            k: v.to(device=device, dtype=dtype if (dtype and v.is_floating_point()) else None)
            for k, v in self.tensors.items()
        }
        return Weights(t, self.layout, source=self.source, sha256=self.sha256)

    def nonfinite(self) -> list[str]:
        """Names of floating-point entries holding NaN or Inf."""
        return [k for k, v in self.tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """A plain state_dict (for ``model.load_state_dict`` or ``torch.save``)."""
        return OrderedDict((k, v.clone()) for k, v in self.tensors.items())

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Weights({len(self)} tensors, {self.layout.size} flat values{src})"


def model_skeleton(
    model: nn.Module, device=None, dtype: torch.dtype | None = None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``model`` that holds no weights, for :func:`torch.func.functional_call`.

    Its parameters and buffers are empty ``meta`` tensors (ties kept: a tensor under two names
    is one meta tensor), so the copy costs no memory whatever the model's size; every call must
    pass the tensors of the model's ``state_dict`` plus the returned non-persistent buffers
    (the ones ``state_dict`` leaves out, such as attention masks), which are copied to
    ``device`` (floating ones cast to ``dtype``). The user's module is never touched.

    Returns
    -------
    (nn.Module, dict of str to Tensor)
        The skeleton in eval mode, and the non-persistent buffers by name.
    """
    import copy

    persistent = set(model.state_dict(keep_vars=True))
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    fixed: dict[str, torch.Tensor] = {}
    for name, b in model.named_buffers(remove_duplicate=False):
        if id(b) not in memo:
            memo[id(b)] = torch.empty_like(b, device="meta")
        if name not in persistent and b is not None:
            fixed[name] = b.detach().to(device=device, dtype=dtype if (dtype and b.is_floating_point()) else None)
    skeleton = copy.deepcopy(model, memo)
    return skeleton.eval(), fixed


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_state_dict(value: Any) -> bool:
    """A non-empty mapping of tensors, or a module (whose ``state_dict`` it stands for)."""
    if isinstance(value, nn.Module):
        return True
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DataParallel, DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def split_checkpoint_key(path: str | os.PathLike) -> tuple[str, str | None]:
    """``'FILE.pt:KEY'`` -> ``('FILE.pt', 'KEY')``; anything else -> ``(path, None)``.

    A path that exists as given is a file name even when it holds ``':'``; otherwise the text
    after the last ``':'`` is the key when the text before it exists.
    """
    path = os.fspath(path)
    if os.path.exists(path) or ":" not in path:
        return path, None
    file, _, key = path.rpartition(":")
    if not file or not os.path.exists(file):
        return path, None
    return file, key


def _select(obj: Any, path: str, key: str) -> Any:
    """The value under ``key`` of the object a ``FILE.pt:KEY`` names."""
    if not key:
        raise CheckpointError(f"checkpoint '{path}' names no key after ':'; expected FILE.pt:KEY")
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint '{path}': the file holds a {type(obj).__name__}, not a dict, so ':{key}' selects nothing; "
            "give the file alone"
        )
    found = [k for k in obj if str(k) == key]
    if not found:
        raise CheckpointError(
            f"checkpoint '{path}': the file has no key '{key}'; expected one of {sorted(map(str, obj))[:12]}"
        )
    value = obj[found[0]]
    if not isinstance(value, (Mapping, nn.Module)):
        holding = [str(k) for k, v in obj.items() if _is_state_dict(v)]
        raise CheckpointError(
            f"checkpoint '{path}': '{key}' is not a state dict (it holds {type(value).__name__}); "
            f"the keys holding state dicts are {holding}"
        )
    return value


def _unwrap(
    obj: Any,
    path: str,
    key: str | None = None,
    fits: Callable[[dict[str, torch.Tensor]], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Find the state_dict inside common checkpoint wrappers.

    ``key`` selects the entry a ``FILE.pt:KEY`` names. Otherwise a dict whose values hold
    several state dicts (the SWA repository's ``state_dict`` and ``swa_state_dict``) is refused,
    naming them, unless ``fits`` (does this state dict match the model?) leaves exactly one.
    """
    file = path if key is None else path[: -len(key) - 1]
    if key is not None:
        obj = _select(obj, path, key)
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        candidates = [k for k, v in obj.items() if _is_state_dict(v)]
        if len(candidates) > 1:
            matching = candidates if fits is None else [k for k in candidates if fits(_as_state_dict(obj[k]))]
            if len(matching) != 1:
                names = ", ".join(f"'{k}'" for k in (matching or candidates))
                which = "" if fits is None else (" that match the model" if matching else ", none matching the model")
                raise CheckpointError(
                    f"checkpoint '{path}' holds {len(matching or candidates)} state dicts{which}: {names}; "
                    f"choose one as '{file}:KEY' (e.g. '{file}:{(matching or candidates)[-1]}')"
                )
            obj = obj[matching[0]]
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            for wrapper in _WRAPPER_KEYS:
                if wrapper in obj and isinstance(obj[wrapper], (Mapping, nn.Module)):
                    obj = obj[wrapper]
                    break
            else:
                if candidates and not tensors:
                    obj = obj[candidates[0]]
                    seen += 1
                    continue
                if tensors:
                    obj = tensors
                    break
                raise CheckpointError(
                    f"checkpoint '{path}' holds no tensors (top-level keys {sorted(map(str, obj))[:8]}); "
                    f"expected a state_dict or a dict with one of {list(_WRAPPER_KEYS)}"
                )
        seen += 1
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint '{path}' holds a {type(obj).__name__}; expected a state_dict (a dict of tensors)"
        )
    return _as_state_dict(obj)


def _as_state_dict(obj: Mapping | nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a state dict (or a module's), string keys, wrapper prefixes dropped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    return _strip_prefixes({str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)})


def _model_names(model: nn.Module) -> tuple[set[str], set[str]]:
    """(names a checkpoint must hold, names it may hold): tied aliases and BatchNorm's
    ``num_batches_tracked`` may be left out."""
    layout = Layout.from_module(model)
    aliases = layout.aliases()
    allowed = set(layout.names())
    required = {n for n in allowed if n not in aliases and not n.endswith("num_batches_tracked")}
    return required, allowed


def _covers(keys: Iterable[str], required: set[str], allowed: set[str]) -> bool:
    keys = set(keys)
    return keys <= allowed and required <= keys


def _peer_renaming(keys: Iterable[str], model: nn.Module, required: set[str], allowed: set[str]):
    """``(naming, {checkpoint key: model key})`` when the keys are the model's under a peer
    repository's naming (:func:`landscape.models.peers.peer_key_map`), else ``None``."""
    from .models.peers import peer_key_map

    found = peer_key_map(model, keys)
    if found is None or not _covers(found[1].values(), required, allowed):
        return None
    return found


def _fits_model(model: nn.Module) -> Callable[[dict[str, torch.Tensor]], bool]:
    """Whether a state dict holds the model's names, as they are or under a peer's naming."""
    required, allowed = _model_names(model)

    def fits(sd: dict[str, torch.Tensor]) -> bool:
        return _covers(sd, required, allowed) or _peer_renaming(sd, model, required, allowed) is not None

    return fits


HF_INDEX = "model.safetensors.index.json"
HF_SINGLE = "model.safetensors"


def model_folder_files(folder: str | os.PathLike) -> list[str]:
    """The weight files of a Hugging Face model folder: ``model.safetensors``, or the shards
    that ``model.safetensors.index.json`` lists (each must exist)."""
    folder = os.fspath(folder)
    index = os.path.join(folder, HF_INDEX)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"'{index}' is not a readable shard index (expected a JSON 'weight_map'): {e}"
            ) from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise CheckpointError(
                f"checkpoint folder '{folder}' lacks shard '{missing[0]}' listed in {HF_INDEX}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        return [os.path.join(folder, f) for f in files]
    if os.path.isfile(os.path.join(folder, HF_SINGLE)):
        return [os.path.join(folder, HF_SINGLE)]
    raise CheckpointError(
        f"checkpoint '{folder}' is a directory but not a model folder: expected {HF_SINGLE} or {HF_INDEX} "
        "in it (or give a .pt/.pth/.safetensors file)"
    )


def _read_files(files: list[str], path: str) -> dict[str, torch.Tensor]:
    """Every tensor of one or more safetensors files, read one tensor at a time."""
    try:
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover - a dependency
        raise CheckpointError(f"checkpoint '{path}' needs the 'safetensors' package (pip install safetensors)") from e
    out: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if key in out:
                        raise CheckpointError(
                            f"checkpoint '{path}': tensor '{key}' is stored twice (again in '{file}')"
                        )
                    out[key] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"checkpoint '{file}' is not a readable safetensors file: {e}") from e
    return out


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file; for a model folder, of its weight files' names and digests."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return file_sha256(path)
    h = hashlib.sha256()
    for file in model_folder_files(path):
        h.update(f"{os.path.basename(file)}:{file_sha256(file)}\n".encode())
    return h.hexdigest()


def read_state_dict(
    path: str | os.PathLike, *, trust: bool = False, model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.pt``/``.pth``/``.safetensors`` (unwrapping common wrappers)
    or a Hugging Face model folder (single-file or sharded safetensors, read tensor by tensor).

    Parameters
    ----------
    path : str
        The checkpoint file or model folder; ``FILE.pt:KEY`` reads the state dict under
        ``KEY`` of a ``torch.save`` dict that holds several (a file whose own name contains
        ``':'`` is read whole when it exists as given).
    trust : bool
        Allow arbitrary pickled Python objects (runs code from the file). Off by default:
        ``torch.load(weights_only=True)``.
    model : nn.Module, optional
        When the file holds several state dicts and no ``KEY`` is given, the one whose names
        are the model's is read; without a model, or when several are, the file is refused
        with a message naming each.

    Raises
    ------
    CheckpointError
        A missing or unreadable file, an unknown ``KEY``, several candidate state dicts.
    """
    path = os.fspath(path)
    file, key = split_checkpoint_key(path)
    if not os.path.exists(file):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if key is not None and (os.path.isdir(file) or file.endswith(".safetensors")):
        what = "a model folder" if os.path.isdir(file) else "a .safetensors file"
        raise CheckpointError(
            f"checkpoint '{path}': '{file}' is {what}, which holds one state dict; ':{key}' selects one of "
            "several in a torch.save file"
        )
    if os.path.isdir(file):
        return _read_files(model_folder_files(file), file)
    if file.endswith(".safetensors"):
        return _unwrap(_read_files([file], file), file)
    if os.path.getsize(file) == 0:
        raise CheckpointError(f"checkpoint '{file}' is empty (0 bytes); expected a file written by torch.save")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        text = str(e)
        if not trust and ("GLOBAL" in text or "global" in text):
            found = re.search(r"GLOBAL ([\w.]+)|([\w.]+) was not an allowed global", text)
            what = next((g for g in found.groups() if g), "an object") if found else "an object"
            raise CheckpointError(
                f"checkpoint '{file}' contains pickled Python objects ({what}) that safe loading "
                f"refuses; loading it would run code from the file: pass trust=True "
                f"(CLI: --trust-checkpoint) only if you trust its origin"
            ) from e
        raise CheckpointError(f"checkpoint '{file}' is not a readable PyTorch checkpoint (unpickling failed)") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        # torch.load of a file torch.save did not write fails with whatever its reader hits first
        # (KeyError 101 for a text file, IndexError for a truncated one): one sentence for all.
        raw = str(e).splitlines()[0][:160] if str(e) else ""
        reason = f"{type(e).__name__}: {raw}" if isinstance(e, (KeyError, IndexError)) else raw
        raise CheckpointError(
            f"checkpoint '{file}' is not a readable PyTorch checkpoint ({reason}); expected a file written by "
            f"torch.save, a .safetensors file or a model folder"
        ) from e
    return _unwrap(obj, path, key, fits=None if model is None else _fits_model(model))


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, *, trust: bool = False, check_finite: bool = True
) -> Weights:
    """Load a checkpoint and match it to ``model`` by name.

    Parameters
    ----------
    path : str
        ``.pt``, ``.pth`` or ``.safetensors``; plain state_dicts and the usual wrappers
        (``state_dict``, ``model_state``, ``model``, ``module.`` prefixes) are accepted; or a
        Hugging Face model folder (``model.safetensors`` or the shards of
        ``model.safetensors.index.json``). ``FILE.pt:KEY`` takes the state dict under ``KEY``
        of a file that holds several (the SWA repository's ``FILE.pt:swa_state_dict``); a file
        holding several that match the model is refused unless one is named so. Tensors keep
        the checkpoint's values; they are cast to the model's dtype only where the two differ.
    model : nn.Module
        Gives the expected names, shapes and the layout. It is not modified. A checkpoint of
        a peer repository whose names differ from the model's (dnn-mode-connectivity's VGG,
        Anokhin & Yarotsky's MLPs) is renamed onto it (:func:`landscape.models.peer_key_map`).
    trust : bool
        See :func:`read_state_dict`.
    check_finite : bool
        Warn when tensors hold NaN or Inf.

    Returns
    -------
    Weights
        In the model's ``state_dict`` order, with ``source`` (``path`` as given, ``:KEY``
        included) and ``sha256`` (of the file) set.

    Raises
    ------
    CheckpointError
        Naming the first mismatched key and both shapes, or each of several candidate state
        dicts.
    """
    path = os.fspath(path)
    sd = read_state_dict(path, trust=trust, model=model)
    file, _ = split_checkpoint_key(path)
    return weights_from_state_dict(sd, model, source=path, sha256=checkpoint_sha256(file), check_finite=check_finite)


def weights_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    source: str,
    sha256: str | None = None,
    check_finite: bool = True,
) -> Weights:
    """Match named tensors to ``model`` by name, as :func:`load_checkpoint` does for a file.

    ``sd`` may use a peer repository's names (:func:`landscape.models.peer_key_map`); tied
    aliases may be left out, BatchNorm's ``num_batches_tracked`` too. ``source`` names the
    tensors in messages (``checkpoint '<source>' ...``) and becomes ``Weights.source``.

    Raises
    ------
    CheckpointError
        Naming the first missing, extra or mis-shaped key and both shapes.
    """
    path = source
    sd = dict(sd)
    layout = Layout.from_module(model)
    expected = model.state_dict()
    required, allowed = _model_names(model)
    peer_name: dict[str, str] = {}  # model key -> the checkpoint's key, when renamed
    naming = ""
    if not _covers(sd, required, allowed):
        found = _peer_renaming(sd, model, required, allowed)
        if found is not None:
            naming, renaming = found
            sd = {renaming[k]: v for k, v in sd.items()}
            peer_name = {ours: theirs for theirs, ours in renaming.items()}

    def named(name: str) -> str:
        return f"'{name}' ('{peer_name[name]}' in {naming}'s naming)" if name in peer_name else f"'{name}'"

    for alias, name in layout.aliases().items():
        if alias not in sd:
            continue  # files omit tied copies (Hugging Face omits lm_head.weight)
        if name in sd and not torch.equal(sd[alias], sd[name]):
            raise CheckpointError(
                f"checkpoint '{path}' has different values for '{alias}' and '{name}', which the model ties "
                "(one tensor under two names); expected equal tensors or only one of the two"
            )
        sd.setdefault(name, sd[alias])
        del sd[alias]
    for name, ref in expected.items():
        if name in layout.aliases():
            continue
        if name not in sd:
            if name.endswith("num_batches_tracked"):
                sd[name] = torch.zeros_like(ref)
                continue
            raise CheckpointError(
                f"checkpoint '{path}' does not match the model: key '{name}' (shape "
                f"{tuple(ref.shape)}) is in the model but not in the checkpoint"
            )
        if tuple(sd[name].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"checkpoint '{path}' does not match the model: key {named(name)} has shape "
                f"{tuple(sd[name].shape)} in the checkpoint and {tuple(ref.shape)} in the model"
            )
    extra = [k for k in sd if k not in expected]
    if extra:
        raise CheckpointError(
            f"checkpoint '{path}' does not match the model: key '{extra[0]}' (shape "
            f"{tuple(sd[extra[0]].shape)}) is in the checkpoint but not in the model"
        )
    tensors = {k: sd[k].to(dtype=expected[k].dtype) for k in expected if k in sd}
    w = Weights(tensors, layout, source=path, sha256=sha256)
    if check_finite:
        bad = w.nonfinite()
        if bad:
            warnings.warn(
                f"checkpoint '{path}' has NaN/Inf values in {len(bad)} tensor(s): {', '.join(bad[:5])}",
                stacklevel=2,
            )
    return w


def load_weights(model: nn.Module, paths: Iterable[str | os.PathLike], *, trust: bool = False) -> list[Weights]:
    """:func:`load_checkpoint` for several files."""
    return [load_checkpoint(p, model, trust=trust) for p in paths]


def save_weights(weights: Mapping[str, torch.Tensor], path: str | os.PathLike, *, force: bool = False) -> None:
    """Save named tensors as a plain state_dict (``.pt``) or ``.safetensors``, atomically
    (:func:`save_atomic`); never overwrites an existing file unless ``force``."""
    path = os.fspath(path)
    sd = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in weights.items())
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(dict(sd), tmp), force=force)
    else:
        save_atomic(sd, path, force=force)


def save_atomic(obj: Any, path: str | os.PathLike, *, force: bool = False) -> None:
    """``torch.save(obj, path)`` that leaves a complete file or none: written next to
    ``path`` and renamed over it (:func:`landscape.io.atomic_write`); an existing file is
    replaced only with ``force`` (else ``FileExistsError``). Every ``.pt`` file landscape
    writes (weights, curves, variational networks, connection models) goes through here."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), force=force)
