"""Batches: the one place that reads a data argument and turns a batch into model inputs,
targets and a sample count.

Every analysis that takes ``data`` (the engine, surfaces, curves, connections, ensembles,
Hessians, variational prediction) hands it to :func:`as_source`, and every batch goes through
:func:`read_batch` and :func:`model_output`. Nothing else parses batches.

What ``data`` may be
--------------------
- a :class:`~landscape.data.TensorData` or a pair ``(x, y)`` of tensors: held in memory,
  moved to the device once and sliced into batches (the fast path);
- a :class:`torch.utils.data.DataLoader`, or any re-iterable of batches (a list of batches,
  an object whose ``__iter__`` starts a new pass): its batches are used as they come, one at a
  time (pinned host memory and non-blocking copies on GPUs), so the data set may exceed host
  memory;
- a map-style :class:`torch.utils.data.Dataset` (``__getitem__`` and ``__len__``): read in
  order through a ``DataLoader`` with the batch size the caller picks.

What a batch may be (the default rule)
--------------------------------------
- a tensor: the model input, no targets;
- a tuple or list: the first element is the model input, the second the targets (further
  elements are ignored);
- a mapping (Hugging Face style): ``labels`` (or ``label``) are the targets and every other key
  is passed to the model as a keyword argument, ``model(**inputs)``; the model never sees the
  labels, so it never computes its own loss.

A ``forward=fn(model, batch) -> output`` given to an analysis replaces the default call; the
batch reaches it as the data gave it (on the device).

What a model output may be
--------------------------
A tensor, a tuple or list (its first element), a mapping with ``logits``, or an object with a
``.logits`` attribute (Hugging Face ``ModelOutput``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "Batch",
    "BatchError",
    "DataError",
    "DataSource",
    "as_source",
    "batch_input",
    "call_model",
    "first_inputs",
    "input_checks",
    "model_output",
    "read_batch",
    "to_device",
]

TARGET_KEYS = ("labels", "label")


class DataError(ValueError):
    """A data spec, file, array or data set that cannot be read (re-exported by
    :mod:`landscape.data`)."""


class BatchError(TypeError):
    """A data argument, batch or model output that the default rules cannot read."""


def _describe(obj: Any) -> str:
    if torch.is_tensor(obj):
        return f"Tensor{list(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"{type(obj).__name__} with keys {sorted(map(str, obj))[:8]}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)} ({', '.join(_describe(o) for o in obj[:3])})"
    return type(obj).__name__


@dataclass
class Batch:
    """One batch, read by the default rule.

    Attributes
    ----------
    args : tuple
        Positional model inputs.
    kwargs : dict
        Keyword model inputs (the keys of a dict batch other than the targets).
    target : Tensor or None
        Targets (``None`` when the batch has none).
    count : int
        Samples in the batch (the leading dimension).
    raw : object
        The batch as the data gave it (what a user ``forward`` receives).
    """

    args: tuple
    kwargs: dict[str, Any]
    target: Tensor | None
    count: int
    raw: Any = field(repr=False, default=None)

    @property
    def input(self) -> Any:
        """The first positional input, or the kwargs for a dict batch (for probes)."""
        return self.args[0] if self.args else self.kwargs

    def get(self, name: str) -> Tensor | None:
        """A named tensor of a dict batch (``attention_mask``, ``input_ids``...), or None."""
        return self.raw.get(name) if isinstance(self.raw, Mapping) else None

    def to(self, device, dtype: torch.dtype | None = None, non_blocking: bool = False) -> Batch:
        """The batch on ``device``; floating model inputs cast to ``dtype`` (targets keep theirs)."""
        return read_batch(to_device(self.raw, device, dtype, non_blocking, targets_too=False))

    def slice(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop`` of the batch."""
        return read_batch(_slice(self.raw, start, stop, self.count))

    def split(self, size: int) -> Iterator[Batch]:
        """Consecutive pieces of at most ``size`` samples (the batch itself when it fits)."""
        if self.count <= size:
            yield self
            return
        for start in range(0, self.count, size):
            yield self.slice(start, min(start + size, self.count))


def _slice(obj: Any, start: int, stop: int, n: int) -> Any:
    if torch.is_tensor(obj):
        return obj[start:stop] if obj.dim() > 0 and obj.shape[0] == n else obj
    if isinstance(obj, Mapping):
        return {k: _slice(v, start, stop, n) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(v, start, stop, n) for v in obj)
    return obj


def to_device(
    obj: Any,
    device,
    dtype: torch.dtype | None = None,
    non_blocking: bool = False,
    *,
    targets_too: bool = True,
) -> Any:
    """Move every tensor of a batch to ``device``; floating tensors are cast to ``dtype``
    (the targets, ``labels``/``label`` or the second element of a tuple, only when
    ``targets_too``)."""

    def move(t, cast: bool):
        if not torch.is_tensor(t):
            return t
        return t.to(
            device=device,
            dtype=dtype if (cast and dtype is not None and t.is_floating_point()) else None,
            non_blocking=non_blocking,
        )

    if torch.is_tensor(obj):
        return move(obj, True)
    if isinstance(obj, Mapping):
        return {k: move(v, targets_too or k not in TARGET_KEYS) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(move(v, targets_too or i != 1) for i, v in enumerate(obj))
    return obj


def _leading(t: Any) -> int | None:
    return int(t.shape[0]) if torch.is_tensor(t) and t.dim() > 0 else None


def read_batch(batch: Any) -> Batch:
    """Read one batch by the default rule (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> b = read_batch({"input_ids": torch.zeros(4, 7, dtype=torch.long), "labels": torch.ones(4, 7)})
    >>> sorted(b.kwargs), b.count, tuple(b.target.shape)
    (['input_ids'], 4, (4, 7))
    """
    if isinstance(batch, Batch):
        return batch
    if torch.is_tensor(batch):
        count = _leading(batch)
        if count is None:
            raise BatchError(f"a batch tensor needs a leading sample dimension, got a 0-d tensor ({_describe(batch)})")
        return Batch((batch,), {}, None, count, batch)
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        kwargs = {str(k): v for k, v in batch.items() if k != key}
        target = batch[key] if key is not None else None
        count = _leading(target)
        if count is None:
            count = next((c for c in map(_leading, kwargs.values()) if c is not None), None)
        if count is None:
            raise BatchError(
                f"cannot read a batch of type {_describe(batch)}: no tensor with a leading sample dimension; "
                "expected a dict of tensors with 'labels' as the targets (or pass forward=)"
            )
        return Batch((), kwargs, target, count, batch)
    if isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
        target = batch[1] if len(batch) > 1 else None
        count = _leading(target) if torch.is_tensor(target) else None
        if count is None:
            count = _leading(x) if torch.is_tensor(x) else None
        if count is None and isinstance(x, Mapping):
            count = next((c for c in map(_leading, x.values()) if c is not None), None)
        if count is None:
            raise BatchError(
                f"cannot read a batch of type {_describe(batch)}: expected (input tensor, targets) with a "
                "leading sample dimension (or pass forward=)"
            )
        if isinstance(x, Mapping):
            return Batch((), dict(x), target, count, batch)
        return Batch((x,), {}, target, count, batch)
    raise BatchError(
        f"cannot read a batch of type {_describe(batch)}; expected a tensor, a tuple/list (input, target) "
        "or a dict with 'labels' (or pass forward=fn(model, batch))"
    )


def model_output(out: Any) -> Tensor:
    """The logits of a model output: a tensor, the first element of a tuple/list, ``out['logits']``
    or ``out.logits``; one clear error otherwise."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, Mapping):
        if "logits" in out and torch.is_tensor(out["logits"]):
            return out["logits"]
    elif isinstance(out, (tuple, list)):
        if out and torch.is_tensor(out[0]):
            return out[0]
    logits = getattr(out, "logits", None)
    if torch.is_tensor(logits):
        return logits
    raise BatchError(
        f"model output of type {_describe(out)} has no logits; expected a tensor, a tuple whose first element is "
        "a tensor, a dict with 'logits' or an object with .logits (or pass forward=fn(model, batch))"
    )


class _UserForward(nn.Module):
    """Calls ``fn(model, batch)``, so functional_call can swap the model's tensors under it."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch):
        return self.fn(self.model, batch)


def call_model(
    model: nn.Module,
    tensors: Mapping[str, Tensor] | tuple | None,
    batch: Batch,
    forward: Callable | None = None,
) -> Tensor:
    """The logits of ``model`` at the named ``tensors`` (``None``: its own) on ``batch``.

    ``tensors`` is what :func:`torch.func.functional_call` takes (a mapping, or a tuple of
    mappings); tied tensors are passed once, under their first name.
    """
    if forward is None:
        if tensors is None:
            out = model(*batch.args, **batch.kwargs)
        else:
            out = functional_call(model, tensors, batch.args, batch.kwargs)
    else:
        if tensors is None:
            out = forward(model, batch.raw)
        else:
            wrapper = _UserForward(model, forward)
            parts = tensors if isinstance(tensors, tuple) else (tensors,)
            prefixed = tuple({f"model.{k}": v for k, v in p.items()} for p in parts)
            out = functional_call(wrapper, prefixed, (batch.raw,))
    return model_output(out)


def _input_mismatch(mod: nn.Module, x: Tensor) -> str | None:
    """What a Linear, Conv or Embedding layer would fail on in ``x``, or None."""
    if isinstance(mod, nn.Linear):
        if x.dim() == 0 or x.shape[-1] != mod.in_features:
            return f"takes {mod.in_features} input features (the last dimension), got Tensor{list(x.shape)}"
    elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        d = len(mod.kernel_size)
        if x.dim() not in (d + 1, d + 2) or x.shape[-d - 1] != mod.in_channels:
            return (
                f"takes {mod.in_channels} channels in [N, C{', *' * d}] inputs "
                f"({d} spatial dimensions), got Tensor{list(x.shape)}"
            )
    elif isinstance(mod, nn.Embedding) and not x.is_floating_point() and x.numel():
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= mod.num_embeddings:
            return f"has {mod.num_embeddings} rows (ids 0..{mod.num_embeddings - 1}), got ids {low} to {high}"
    return None


@contextlib.contextmanager
def input_checks(model: nn.Module, batch: Batch, what: str = "the data"):
    """Within this context, the ``Linear``, ``Conv`` and ``Embedding`` layers of ``model``
    refuse inputs that do not fit them with one :class:`DataError` naming the layer, what it
    takes, what it got and the batch's inputs, instead of PyTorch's "mat1 and mat2 shapes
    cannot be multiplied". For probe passes on a first batch (a forward pre-hook per layer).
    """

    def hook_for(name: str):
        def hook(mod, args):
            x = args[0] if args else None
            problem = _input_mismatch(mod, x) if torch.is_tensor(x) else None
            if problem is not None:
                inputs = batch.input
                given = f"samples of shape {list(inputs.shape[1:])}" if torch.is_tensor(inputs) else _describe(inputs)
                raise DataError(
                    f"{what} does not fit the model: its layer '{name}' ({type(mod).__name__}) {problem} from {given}"
                )

        return hook

    handles = [
        mod.register_forward_pre_hook(hook_for(name))
        for name, mod in model.named_modules()
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding))
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------- data sources
def _is_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def _is_map_dataset(data: Any) -> bool:
    return (
        isinstance(data, torch.utils.data.Dataset)
        and not isinstance(data, torch.utils.data.IterableDataset)
        and hasattr(data, "__len__")
        and hasattr(data, "__getitem__")
    )


class DataSource:
    """A data argument as re-iterable :class:`Batch` es.

    Parameters
    ----------
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        See the module docstring.

    Attributes
    ----------
    kind : str
        ``"tensors"`` (in memory), ``"loader"``, ``"dataset"`` or ``"iterable"``.
    passes : int
        Full passes over the data started so far (every analysis reports it).
    """

    def __init__(self, data: Any):
        self.data = data
        self.passes = 0
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self._n: int | None = None
        if hasattr(data, "x") and hasattr(data, "y") and torch.is_tensor(data.x):
            self.kind, self.x, self.y = "tensors", data.x, data.y
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
            self.kind, self.x, self.y = "tensors", data[0], data[1]
        elif _is_loader(data):
            self.kind = "loader"
        elif _is_map_dataset(data):
            self.kind = "dataset"
            self._n = len(data)
        elif isinstance(data, (str, bytes, Mapping)) or torch.is_tensor(data) or not isinstance(data, Iterable):
            raise BatchError(
                f"data of type {_describe(data)} is not a data set; expected a TensorData (landscape.load_data), "
                "a tuple (x, y) of tensors, a DataLoader, a map-style Dataset or an iterable of batches"
            )
        elif iter(data) is data:
            raise BatchError(
                f"data of type {type(data).__name__} is a one-shot iterator; analyses pass over the data several "
                "times: give a DataLoader, a list of batches or an object whose __iter__ starts a new pass"
            )
        else:
            self.kind = "iterable"
        if self.kind == "tensors":
            if self.x.dim() < 1 or self.y.dim() < 1 or self.x.shape[0] != self.y.shape[0]:
                raise DataError(
                    f"data has {self.x.shape[0] if self.x.dim() else 0} inputs but "
                    f"{self.y.shape[0] if self.y.dim() else 0} targets; expected the same number of samples in both"
                )
            self._n = int(self.x.shape[0])
            if self._n == 0:
                raise DataError("data is empty (0 samples)")
        self._device_xy: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._first: dict[int, Batch] = {}
        self.raw_batches: int | None = None

    # ------------------------------------------------------------------ facts
    @property
    def in_memory(self) -> bool:
        return self.kind == "tensors"

    @property
    def n(self) -> int | None:
        """Number of samples (None for loaders and iterables until one full pass was made)."""
        return self._n

    def num_samples(self) -> int:
        """Samples in the data: in memory its size, a Dataset's ``len``, a loader's
        ``len(loader.sampler)`` or ``len(loader.dataset)``, else one counting pass (counted in
        :attr:`passes`)."""
        if self._n is None and self.kind == "loader":
            data = self.data
            size = None
            if not isinstance(data.dataset, torch.utils.data.IterableDataset):
                size = _length(data.sampler)
            if size is None:
                size = _length(data.dataset)
            if size is not None:
                self._n = int(size)
        if self._n is None:
            for _ in self.batches(None, split=False):
                pass
        return int(self._n)

    @property
    def batch_size(self) -> int | None:
        """The batch size the data imposes (a DataLoader's), or None when the caller picks."""
        if self.kind == "loader":
            return getattr(self.data, "batch_size", None)
        return None

    def __repr__(self) -> str:
        return f"DataSource(kind={self.kind!r}, n={self.n}, passes={self.passes})"

    def describe(self) -> dict[str, Any]:
        """What the data is, for result-file attributes."""
        if hasattr(self.data, "describe"):
            return self.data.describe()
        if self.kind == "tensors":
            return {"spec": "tensors", "n": self._n, "input_shape": list(self.x.shape[1:])}
        out: dict[str, Any] = {"spec": getattr(self.data, "spec", type(self.data).__name__), "kind": self.kind}
        if self._n is not None:
            out["n"] = self._n
        bs = self.batch_size
        if bs is not None:
            out["batch_size"] = int(bs)
        return out

    # ------------------------------------------------------------------ iteration
    def _raw(self, batch_size: int | None) -> Iterable[Any]:
        if self.kind == "dataset":
            return torch.utils.data.DataLoader(self.data, batch_size=batch_size or 128, shuffle=False)
        return self.data

    def batches(
        self,
        batch_size: int | None = None,
        device=None,
        dtype: torch.dtype | None = None,
        *,
        split: bool = True,
    ) -> Iterator[Batch]:
        """One pass over the data as :class:`Batch` es on ``device`` (floating inputs in ``dtype``).

        ``batch_size`` slices in-memory data and batches a map-style Dataset; a loader's or
        iterable's batches are split into pieces of at most ``batch_size`` samples when
        ``split`` (memory), and used as they come otherwise.
        """
        self.passes += 1
        device = torch.device(device) if device is not None else torch.device("cpu")
        if self.kind == "tensors":
            x, y = self._on(device, dtype)
            bs = batch_size or self._n
            for start in range(0, self._n, bs):
                xb, yb = x[start : start + bs], y[start : start + bs]
                yield Batch((xb,), {}, yb, int(xb.shape[0]), (xb, yb))
            return
        pin = device.type == "cuda"
        seen = raws = 0
        for raw in self._raw(batch_size):
            if pin:
                raw = _pin(raw)
            batch = read_batch(to_device(raw, device, dtype, non_blocking=pin, targets_too=False))
            seen += batch.count
            raws += 1
            if split and batch_size:
                yield from batch.split(batch_size)
            else:
                yield batch
        if seen == 0:
            raise DataError(f"data of type {type(self.data).__name__} yielded no samples")
        self._n = seen
        #: batches the data itself gave in its last full pass
        self.raw_batches = raws

    def _on(self, device: torch.device, dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
        key = (str(device), dtype)
        if key not in self._device_xy:
            x = self.x.to(device=device, dtype=dtype if (dtype is not None and self.x.is_floating_point()) else None)
            self._device_xy[key] = (x, self.y.to(device))
        return self._device_xy[key]

    def first(self, samples: int = 1) -> Batch:
        """The first ``samples`` samples of the data (on the CPU), for probes; not counted as a
        pass (the first batch is read once and kept)."""
        if samples in self._first:
            return self._first[samples]
        self._first[samples] = self._read_first(samples)
        return self._first[samples]

    def _read_first(self, samples: int) -> Batch:
        if self.kind == "tensors":
            return Batch(
                (self.x[:samples],), {}, self.y[:samples], min(samples, self._n), (self.x[:samples], self.y[:samples])
            )
        for raw in self._raw(samples):
            batch = read_batch(raw)
            return batch.slice(0, min(samples, batch.count))
        raise DataError(f"data of type {type(self.data).__name__} yielded no batch")


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _pin(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj if obj.is_cuda or obj.is_pinned() else obj.pin_memory()
    if isinstance(obj, Mapping):
        return {k: _pin(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_pin(v) for v in obj)
    return obj


def as_source(data: Any) -> DataSource:
    """A :class:`DataSource` for any data argument (itself when it already is one)."""
    return data if isinstance(data, DataSource) else DataSource(data)


# ---------------------------------------------------------------------------- raw inputs
def batch_input(batch: Batch, what: str = "this analysis") -> Tensor:
    """The single input tensor of a batch: the first element of a tuple batch, or the one
    tensor of a dict batch other than its labels; one clear error otherwise."""
    if len(batch.args) == 1 and not batch.kwargs and torch.is_tensor(batch.args[0]):
        return batch.args[0]
    if not batch.args:
        tensors = [k for k, v in batch.kwargs.items() if torch.is_tensor(v)]
        if len(tensors) == 1:
            return batch.kwargs[tensors[0]]
        got = f"a dict batch with input keys {sorted(batch.kwargs)}"
    else:
        got = f"a batch with {len(batch.args)} positional input(s) and keyword inputs {sorted(batch.kwargs)}"
    raise BatchError(
        f"{what} needs one input tensor per batch (a tensor, (inputs, targets) or a dict with one input tensor "
        f"besides 'labels'); got {got}"
    )


def first_inputs(data: Any, samples: int | None = None, what: str = "this analysis") -> Tensor:
    """The inputs of the first ``samples`` samples of ``data`` (all when None), on the CPU.

    In memory: ``x[:samples]`` (``x`` itself for all); otherwise the single input tensors of
    the first batches (:func:`batch_input`), concatenated.
    """
    if torch.is_tensor(data):
        return data if samples is None else data[:samples]
    src = as_source(data)
    if src.in_memory:
        return src.x if samples is None else src.x[:samples]
    parts, seen = [], 0
    for batch in src.batches(None, "cpu", split=False):
        parts.append(batch_input(batch, what))
        seen += batch.count
        if samples is not None and seen >= samples:
            break
    x = torch.cat(parts)
    return x if samples is None else x[:samples]
