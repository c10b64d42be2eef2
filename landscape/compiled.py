"""The compiled evaluation path: one ``torch.compile`` graph for all points of a model.

The compiled function takes a point's weights (the named tensors
:func:`torch.func.functional_call` takes) and a batch as inputs, so every point of a run, and
every later run of the same model structure, dtype, device and batch shapes in the process,
goes through one graph: nothing is recompiled per point. Short last batches are padded to the
batch size (the padding rows' outputs are dropped), so a dataset that does not divide into
batches compiles once too.

BatchNorm layers that follow a convolution or linear layer are folded into it per point
(exact algebra, :func:`fold_batchnorm`); the layers to fold are found once per model by
tracing it with :mod:`torch.fx`. A BatchNorm that follows anything else stays as it is.

The warm-up (Dynamo tracing plus Inductor code generation, up to 40 s for a ResNet-20 on one
CPU core; Inductor's own on-disk cache makes a rerun in a new process cheaper) is measured on
the first call and recorded in a small JSON file under the user's cache directory
(``$LANDSCAPE_CACHE_DIR``, default ``~/.cache/landscape``), which ``path="auto"`` weighs
against the time the compiled graph saves (:func:`compiled_pays`). Precision fp64 never
compiles (the engine keeps its oracle mode on the loop). Precision bf16 runs real bf16: the
point's weights (BatchNorm folded in float32 first) and the inputs are cast to bf16 inside the
graph, autocast is off, and the output comes back in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from . import bn as bnlib
from .batches import Batch, _UserForward, call_model, model_output

__all__ = [
    "CompiledForward",
    "compiled_forward",
    "compiled_pays",
    "failure_reason",
    "fold_batchnorm",
    "foldable_pairs",
    "forward_macs",
]

#: the ``torch.compile`` backend (tests swap in a counting backend)
BACKEND: Any = "inductor"
#: warm-up assumed for a model never compiled on this machine, in seconds (ResNet-20: 41 s on
#: one CPU core with cold caches, 27 s with Inductor's kernel cache partly warm, 7-10 s when
#: its graph cache holds the model; GPUs compile about as long)
DEFAULT_COMPILE_SECONDS = 40.0
#: share of the eager forward's time the compiled graph saves (ResNet-20, 256 CIFAR images,
#: one thread: 534 ms eager loop, 334 ms compiled per point, 37%)
SAVED_FRACTION = 0.35
#: multiply-adds per second of the eager per-point forward (ResNet-20's 40.8 M per image at
#: 534 ms per 256 images is 20 G/s on one core; a GPU rate well below an H100's peak)
EAGER_MACS_PER_SECOND = {"cpu": 25e9, "cuda": 10e12}

#: run 2-d convolutional models in channels_last memory order (inputs and 4-d weights put in
#: that order inside the graph). Off: it does not pay on this CPU. Measured with Inductor,
#: ResNet-20, 256 CIFAR-shaped images, 16 points of a plane, one thread, both variants in one
#: process, best of three: 199.6 ms per point contiguous, 197.4 ms channels_last (1%, inside
#: the noise; the three runs spread 3.2-3.7 s either way) and bit-identical losses, which
#: suggests Inductor already picks the convolutions' layout itself; at precision bf16 the same
#: 292.5 against 286.6 ms (2%), losses identical again. GPUs: the GPU issue.
CHANNELS_LAST = False

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FOLD_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d, nn.Linear: nn.BatchNorm1d}


# ---------------------------------------------------------------------------- BN folding
def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` names of the BatchNorm layers that can be folded into the
    convolution or linear layer before them, found by tracing ``model`` with :mod:`torch.fx`.

    A pair qualifies when the layer's output goes only to the BatchNorm, each of the two
    modules is called once, the BatchNorm normalises with running statistics in eval mode and
    its channels are the layer's outputs. Models that ``torch.fx`` cannot trace fold nothing.
    """
    try:
        graph = torch.fx.Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: fold nothing
        return []
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    tracked = {name for name, _ in bnlib.batchnorm_modules(model)}
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in tracked or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer, norm = modules[prev.target], modules[node.target]
        if type(layer) not in _FOLD_BN or type(norm) is not _FOLD_BN[type(layer)]:
            continue
        out_channels = layer.out_channels if isinstance(layer, _CONV) else layer.out_features
        if out_channels != norm.num_features or calls[prev.target] != 1 or calls[node.target] != 1:
            continue
        pairs.append((prev.target, node.target))
    return pairs


def fold_batchnorm(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a convolution or linear layer with the eval-mode BatchNorm after it
    folded in.

    .. math::

        s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}, \\quad W' = s\\,W, \\quad
        b' = s\\,(b - \\mu) + \\beta

    with :math:`s` applied per output channel.

    Parameters
    ----------
    weight : Tensor[k, C_out, ...]
        The layer's weights at ``k`` points (the leading point dimension is optional and shared
        by all arguments).
    bias : Tensor[k, C_out] or None
    mean, var : Tensor[k, C_out]
        The BatchNorm's running statistics.
    gamma, beta : Tensor[k, C_out] or None
        Its affine weight and bias (None: 1 and 0).
    eps : float

    Examples
    --------
    >>> import torch
    >>> conv, norm = torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3).eval()
    >>> norm.running_mean.fill_(0.5); norm.running_var.fill_(4.0)  # doctest: +ELLIPSIS
    tensor(...
    >>> w, b = fold_batchnorm(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.weight, norm.bias, 0.0)
    >>> x = torch.randn(1, 2, 4, 4)
    >>> torch.allclose(torch.nn.functional.conv2d(x, w, b), norm(conv(x)), atol=1e-6)
    True
    """
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean if bias is None else bias - mean
    shift = shift * scale
    if beta is not None:
        shift = shift + beta
    extra = weight.dim() - scale.dim()
    return weight * scale.reshape(*scale.shape, *([1] * extra)), shift


# ---------------------------------------------------------------------------- cost model
def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    # the CPU's fused attention op, which torch's flop table leaves out
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, **kwargs) -> int:
    # nn.MultiheadAttention's inference fast path: the q, k, v and output projections and
    # the two products of attention, in one op that torch's flop table leaves out
    *lead, length, width = query_shape
    source = key_shape[-2]
    return 2 * math.prod(lead) * (2 * length * width * width + 2 * source * width * width + 2 * length * source * width)


#: ops torch's flop counter has no formula for, with ours (flops: two per multiply-add)
_EXTRA_FLOPS = {
    getattr(torch.ops.aten, name): formula
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_flops),
        ("_native_multi_head_attention", _native_mha_flops),
    )
    if hasattr(torch.ops.aten, name)
}


def forward_macs(model: nn.Module, tensors: Mapping[str, torch.Tensor], probe: Batch, forward=None) -> int:
    """Multiply-adds for one sample of ``probe`` (a one-sample batch) at the point
    ``tensors``: the matrix products, convolutions and attention of the forward, whatever
    module runs them (``nn.Linear``, Hugging Face's ``Conv1D``, ``F.linear`` in a user
    forward, fused attention), counted at the op level by
    :class:`torch.utils.flop_counter.FlopCounterMode`. This is the part of the forward a
    compiled graph speeds up."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
        call_model(model, tensors, probe, forward)
    return counter.get_total_flops() // 2 // max(probe.count, 1)


def _cache_file() -> str:
    root = os.environ.get("LANDSCAPE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "landscape")
    return os.path.join(root, "compile_seconds.json")


def _read_cache() -> dict[str, float]:
    try:
        with open(_cache_file()) as f:
            data = json.load(f)
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def recorded_compile_seconds(signature: str) -> float | None:
    """The warm-up measured for this model signature on this machine, or None."""
    return _read_cache().get(signature)


def record_compile_seconds(signature: str, seconds: float) -> None:
    """Keep a measured warm-up for :func:`compiled_pays` (best effort: an unwritable cache
    directory only loses the record)."""
    data = _read_cache()
    data[signature] = round(float(seconds), 3)
    path = _cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def compiled_pays(macs_per_sample: int, samples: int, points: int, device: torch.device, signature: str) -> bool:
    """Whether compiling saves time: the eager forward's estimated time over all points,
    times the share the compiled graph saves, against the warm-up (none when this model is
    already compiled in the process, else the recorded one, else
    :data:`DEFAULT_COMPILE_SECONDS`); never when compiling it failed in the process.

    .. math::

        K\\,N\\,\\mathrm{MACs} / r \\cdot f > T_\\mathrm{compile}

    Examples
    --------
    >>> cpu = torch.device("cpu")
    >>> compiled_pays(41_000_000, 512, 5, cpu, "never-seen")  # a 5-point line of ResNet-20
    False
    >>> compiled_pays(41_000_000, 10_000, 2601, cpu, "never-seen")  # a 51 x 51 plane
    True
    """
    entries = [entry for entry in _COMPILED.values() if entry.signature == signature]
    if any(entry.failure is not None for entry in entries):
        return False  # it failed in this process
    if entries:
        warmup = 0.0
    else:
        warmup = recorded_compile_seconds(f"{signature}:{BACKEND}")
        warmup = DEFAULT_COMPILE_SECONDS if warmup is None else warmup
    rate = EAGER_MACS_PER_SECOND.get(device.type, EAGER_MACS_PER_SECOND["cpu"])
    return points * samples * macs_per_sample / rate * SAVED_FRACTION > max(warmup, 1.0)


# ---------------------------------------------------------------------------- the compiled forward
def model_signature(work: nn.Module, dtype: torch.dtype, device: torch.device) -> str:
    """A stable name of a model structure on a device in a dtype (the key of recorded warm-ups)."""
    shapes = [(n, tuple(t.shape)) for n, t in work.state_dict().items()]
    text = f"{type(work).__module__}.{type(work).__qualname__}|{work!r}|{shapes}|{dtype}|{device.type}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class CompiledForward:
    """A model's forward with its foldable BatchNorm layers folded, compiled once.

    Parameters
    ----------
    work : nn.Module
        The weightless skeleton (:func:`landscape.weights.model_skeleton`); copied, not changed.
    forward : callable or None
        A user ``forward(model, batch)`` (see :mod:`landscape.batches`).
    signature : str
        :func:`model_signature` of the skeleton.
    """

    def __init__(
        self,
        work: nn.Module,
        forward: Callable | None,
        signature: str,
        backend: Any,
        compute_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ):
        import copy

        self.signature, self.backend = signature, backend
        self.compute_dtype, self.channels_last = compute_dtype, channels_last
        self.pairs = foldable_pairs(work)
        self.norms = {b: dict(work.named_modules())[b] for _, b in self.pairs}
        folded = copy.deepcopy(work)
        mods = dict(folded.named_modules())
        for layer, norm in self.pairs:
            parent, _, attr = norm.rpartition(".")
            setattr(mods[parent] if parent else folded, attr, nn.Identity())
            lay = mods[layer]
            if lay.bias is None:
                out = lay.out_channels if isinstance(lay, _CONV) else lay.out_features
                lay.bias = nn.Parameter(torch.empty(out, device="meta"), requires_grad=False)
        self.module = folded
        self.user_forward = forward
        self.compile_seconds: float | None = None  # measured on the first call
        self.failure: str | None = None  # why compiling or running failed (the engine then uses the loop)

        # what call_model does, with the user forward's wrapper built once (a module built
        # inside the compiled function would break its graph)
        wrapper = _UserForward(folded, forward) if forward is not None else None

        cast = _caster(compute_dtype, channels_last)

        def run(params, args, kwargs, raw):
            if cast is not None:
                params, args, kwargs, raw = cast((params, args, kwargs, raw))
            if wrapper is None:
                out = model_output(functional_call(folded, params, args, kwargs))
            else:
                out = model_output(functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, (raw,)))
            return out.float() if compute_dtype is not None and out.is_floating_point() else out

        # Dynamo keeps its graphs and its recompilation limit (8) per code object: a code
        # object of its own per model, so many models in one process all stay compiled
        code = run.__code__.replace(co_name=f"compiled_forward_{len(_COMPILED)}")
        fresh = types.FunctionType(code, run.__globals__, code.co_name, run.__defaults__, run.__closure__)
        self._fn = torch.compile(fresh, backend=backend, dynamic=False)

    def fold(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Point tensors (``[k, ...]`` or one point's) of the folded model: each folded layer's
        weight and bias from its BatchNorm's statistics and affine parameters, whose entries
        are dropped."""
        out = dict(tensors)
        for layer, norm in self.pairs:
            mod = self.norms[norm]
            get = lambda suffix, n=norm: out.pop(f"{n}.{suffix}", None)  # noqa: E731
            mean, var, gamma, beta = get("running_mean"), get("running_var"), get("weight"), get("bias")
            get("num_batches_tracked")
            w, b = fold_batchnorm(
                out[f"{layer}.weight"], out.get(f"{layer}.bias"), mean, var, gamma, beta, float(mod.eps)
            )
            out[f"{layer}.weight"], out[f"{layer}.bias"] = w, b
        return out

    def __call__(self, params: Mapping[str, torch.Tensor], batch: Batch, size: int | None = None) -> torch.Tensor:
        """The output of one point (folded tensors ``params``) on ``batch``; a batch shorter
        than ``size`` is padded to it with copies of its first sample and the padding's outputs
        dropped, so every batch of a dataset has one shape."""
        count = batch.count
        padded = _pad(batch, size) if (size and count < size and self.user_forward is None) else None
        use = padded or batch
        raw = use.raw if self.user_forward is not None else None
        with _no_autocast() if self.compute_dtype is not None else contextlib.nullcontext():
            out = self._timed_call(params, use, raw)
        return out[:count] if padded is not None else out

    def _timed_call(self, params, use: Batch, raw) -> torch.Tensor:
        if self.compile_seconds is None:
            t0 = time.perf_counter()
            out = self._fn(dict(params), use.args, use.kwargs, raw)
            self.compile_seconds = time.perf_counter() - t0
            if isinstance(self.backend, str):  # a test's stand-in backend says nothing about real warm-ups
                record_compile_seconds(f"{self.signature}:{self.backend}", self.compile_seconds)
        else:
            out = self._fn(dict(params), use.args, use.kwargs, raw)
        return out


def _no_autocast() -> contextlib.ExitStack:
    """Autocast switched off on every device where it is on (the engine's bf16 mode autocasts
    the other paths; the compiled graph casts its weights and inputs itself)."""
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            stack.enter_context(torch.autocast(device_type=device, enabled=False))
    return stack


def _caster(compute_dtype: torch.dtype | None, channels_last: bool):
    """The function applied, inside the compiled graph, to a call's (weights, inputs): floating
    tensors cast to ``compute_dtype`` (real low-precision weights and activations, not
    autocast), 4-d ones put in channels_last memory order; None when there is nothing to do."""
    if compute_dtype is None and not channels_last:
        return None

    def one(t):
        if not torch.is_tensor(t) or not t.is_floating_point():
            return t
        if compute_dtype is not None:
            t = t.to(compute_dtype)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return lambda tree: torch.utils._pytree.tree_map(one, tree)


def _pad(batch: Batch, size: int) -> Batch | None:
    """``batch`` with every input tensor's sample dimension filled up to ``size`` by repeating
    the first sample; None when an input has no sample dimension of ``batch.count``."""
    count = batch.count
    tensors = [*batch.args, *batch.kwargs.values()]
    if not tensors or not all(torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == count for t in tensors):
        return None

    def fill(t):
        return torch.cat([t, t[:1].expand(size - count, *t.shape[1:])])

    args = tuple(fill(t) for t in batch.args)
    kwargs = {k: fill(v) for k, v in batch.kwargs.items()}
    return Batch(args, kwargs, None, size, None)


def failure_reason(e: BaseException) -> str:
    """One line naming why compiling or running the compiled graph failed: the innermost
    cause (Dynamo wraps a backend's error), its type and the first line of its message."""
    seen = {id(e)}
    while True:
        inner = getattr(e, "inner_exception", None) or e.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        e = inner
        seen.add(id(e))
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


#: compiled forwards of this process, by model structure, forward, dtype, device and backend
_COMPILED: dict[tuple, CompiledForward] = {}


def compiled_forward(
    work: nn.Module,
    forward: Callable | None,
    dtype: torch.dtype,
    device: torch.device,
    compute_dtype: torch.dtype | None = None,
):
    """The process's compiled forward for this skeleton (built on first use, then reused by
    every engine of the same model structure, so a second evaluation does not recompile).

    ``compute_dtype`` (``torch.bfloat16`` for precision bf16) is the dtype the graph runs in:
    the point's weights, folded in ``dtype``, and the inputs are cast to it inside the graph,
    and the output comes back in float32. Convolutional models run in channels_last memory
    order when :data:`CHANNELS_LAST` says so.
    """
    channels_last = CHANNELS_LAST and any(isinstance(m, nn.Conv2d) for m in work.modules())
    signature = model_signature(work, dtype, device)
    if compute_dtype is not None or channels_last:
        signature = hashlib.sha256(f"{signature}|{compute_dtype}|{channels_last}".encode()).hexdigest()[:24]
    key = (type(work), signature, forward, BACKEND)
    if key not in _COMPILED:
        _COMPILED[key] = CompiledForward(work, forward, signature, BACKEND, compute_dtype, channels_last)
    return _COMPILED[key]
