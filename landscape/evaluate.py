"""The batched evaluation engine: metrics of a model at many weight points.

:func:`evaluate` takes any ``nn.Module``, a :class:`~landscape.pointset.PointSet` (or a list
of :class:`~landscape.weights.Weights`) and a dataset, and returns loss, accuracy or any
other metric at every point. The user's module is never modified: points are evaluated with
:func:`torch.func.functional_call` on a private copy.

Four execution paths, chosen automatically (``path="auto"``) and reported in the result:

``fused``
    Models that are a plain stack of ``nn.Linear`` layers and elementwise activations
    (an MLP) run through the compiled ``batched_linear`` / ``fused_mlp2`` ops, which
    synthesise each point's weights from the basis inside the kernel: the first layer costs
    J products for any number of points, and a two-layer network never writes the hidden
    activations of its points out.
``compiled``
    One ``torch.compile`` graph of the model that takes a point's weights as inputs, with
    BatchNorm folded into the layer before it per point (:mod:`landscape.compiled`); chosen
    when the time it saves over all points outweighs the warm-up of compiling. Never at fp64
    (the oracle mode stays the loop's); at fp32 its results differ from the loop's in the
    last digits (at most 1e-5 relative) and do not depend on which points share the run.
    ``auto`` weighs the warm-up against the points still to evaluate (those pending when
    resuming). A model that fails to compile warns once, naming the reason, and takes the
    loop for the rest of the process.
``vmap``
    ``torch.func.vmap`` of ``functional_call`` over a chunk of points (the default on GPUs).
``loop``
    One point after another through ``functional_call`` with large sample batches. On CPUs
    this is faster than ``vmap`` for convolutional networks, and models that ``vmap``
    cannot trace fall back to it with a warning.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from . import bn as bnlib
from . import compiled as compiledlib
from .batches import Batch, DataSource, as_source, call_model, input_checks, read_batch
from .budget import format_seconds
from .metrics import Metric, NonFiniteWarning, resolve_metrics
from .pointset import PointSet
from .weights import Weights, model_skeleton

__all__ = [
    "Engine",
    "EvalResult",
    "MemoryBudgetError",
    "PRECISIONS",
    "PATHS",
    "evaluate",
    "evaluate_points",
]

PRECISIONS = ("fp64", "fp32", "tf32", "bf16")
PATHS = ("auto", "fused", "compiled", "vmap", "loop")
_ACTIVATIONS = {nn.ReLU: ("relu", 1), nn.Tanh: ("tanh", 2), nn.Identity: ("identity", 0), nn.Dropout: ("identity", 0)}


_CPU_ACT_TARGET = 64 << 20
_POINT_BYTES = 256 << 20  # the points of one chunk, unless points_per_pass says otherwise
_CPU_BATCH_MIN, _CPU_BATCH_MAX = 16, 1024
#: the compiled path's batch on CPUs for convolutional models. Its graph fuses the elementwise
#: work into the convolutions, so the activation rule above (batches of 16-32 for conv nets)
#: starves them. Per point, the batch sizes in one process, best of three, 256 CIFAR-shaped
#: images, 4-8 points of a plane (2 cores, AVX512-BF16, 2026-12-04), in ms at batch 16/32/64/128:
#: ResNet-20 one thread -/183/176/202 (512 images: 452/421/354/486), two threads 170/130/128/133;
#: VGG16-BN one thread 1928/1758/1602/1763, two threads 1173/1041/930/- (another run: 846 at
#: 64, 874 at 128); ResNet-56 one thread 647/564/569/560 (at 64, within 2% of the best).
#: Models without convolutions keep the activation rule: the GPT-2 language model of the
#: benchmarks (64 sequences of 128 bytes) gets 16, within 2% of its best at one thread (222 ms
#: at 16, 218 at 32, 247 at 64) and its best at two (144, 152, 158)
_COMPILED_CONV_BATCH = 64


def _pow2_floor(n: int) -> int:
    return 1 << (int(n).bit_length() - 1)


class MemoryBudgetError(MemoryError):
    """The memory budget cannot hold the evaluation of a single point."""


@dataclass
class EvalResult:
    """Metrics at every point of a point set.

    Attributes
    ----------
    metrics : dict of str to ndarray[K]
        One float64 array per metric; NaN for points not evaluated.
    path : str
        The execution path used (``fused``, ``compiled``, ``vmap`` or ``loop``).
    points_per_pass, batch_size : int
        Chunking chosen from the memory budget.
    seconds : float
        Wall time of the evaluation (excluding file set-up).
    evaluated : int
        Number of points computed in this call (fewer than K when resuming).
    """

    metrics: dict[str, np.ndarray]
    path: str
    points_per_pass: int
    batch_size: int
    seconds: float
    evaluated: int
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]

    @property
    def points_per_second(self) -> float:
        return self.evaluated / self.seconds if self.seconds > 0 else float("nan")

    def __repr__(self) -> str:
        ms = ", ".join(f"{k}: [{v.shape[0]}]" for k, v in self.metrics.items())
        return f"EvalResult({ms}, path={self.path!r}, {self.points_per_second:.1f} points/s)"


# ---------------------------------------------------------------------------- precision
@contextlib.contextmanager
def _precision_context(precision: str, device: torch.device):
    cuda_matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    cudnn_det = torch.backends.cudnn.deterministic
    cudnn_bench = torch.backends.cudnn.benchmark
    try:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        if precision in ("fp32", "fp64"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_matmul
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench


_PROBS = "__probabilities__"  # per-point class probabilities travelling with a chunk's metrics


# ---------------------------------------------------------------------------- fused MLP plan
def linear_stack(model: nn.Module) -> tuple[list[tuple[str, int]], bool] | None:
    """If ``model`` is a plain ``nn.Sequential`` chain of (optional leading ``Flatten``)
    ``Linear`` layers and elementwise activations: the linear layers' names, each with the
    activation code that follows it (0 identity, 1 relu, 2 tanh), and whether the input is
    flattened first; otherwise None."""

    def leaves(mod: nn.Module, prefix: str):
        if isinstance(mod, nn.Sequential) and type(mod).forward is nn.Sequential.forward:
            for name, child in mod.named_children():
                yield from leaves(child, f"{prefix}{name}.")
        elif type(mod).forward is not nn.Sequential.forward and list(mod.children()):
            # a custom container whose forward we cannot see through
            yield prefix.rstrip("."), None
        else:
            yield prefix.rstrip("."), mod

    seq = list(leaves(model, ""))
    if any(m is None for _, m in seq):
        return None
    plan: list[list] = []
    flatten = False
    for i, (name, mod) in enumerate(seq):
        if isinstance(mod, nn.Flatten):
            if i != 0 or mod.start_dim != 1 or mod.end_dim != -1:
                return None
            flatten = True
        elif isinstance(mod, nn.Linear):
            plan.append([name, 0])
        elif type(mod) in _ACTIVATIONS:
            code = _ACTIVATIONS[type(mod)][1]
            if code == 0:
                continue
            if not plan or plan[-1][1] != 0:
                return None  # activation before the first layer, or two in a row
            plan[-1][1] = code
        else:
            return None
    if not plan:
        return None
    return [(n, c) for n, c in plan], flatten


def _activate(h: torch.Tensor, code: int) -> torch.Tensor:
    if code == 1:
        return torch.relu(h)
    if code == 2:
        return torch.tanh(h)
    return h


class _FusedMLP:
    """Evaluates an MLP at many points from the basis, through the compiled ops."""

    def __init__(self, plan, points: PointSet, dtype, device, flatten: bool):
        from . import ops

        self.ops = ops
        self.plan = plan
        self.flatten = flatten
        self.layers = []
        for name, act in plan:
            p = f"{name}." if name else ""
            w = points.basis_tensor(p + "weight", dtype=dtype).to(device)
            b = points.basis_tensor(p + "bias", dtype=dtype).to(device) if (p + "bias") in points.layout else None
            self.layers.append((w, b, act))

    def nonfinite_entry(self) -> str | None:
        """The first basis entry holding NaN or inf, or None. The kernels combine every basis
        vector (``0 * nan`` is NaN) where points are built from their non-zero coefficients
        only, so such a basis is evaluated per point."""
        for (name, _), (w, b, _) in zip(self.plan, self.layers, strict=True):
            for suffix, t in (("weight", w), ("bias", b)):
                if t is not None and not bool(torch.isfinite(t).all()):
                    return f"{name}.{suffix}" if name else suffix
        return None

    def __call__(self, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.flatten(1)
        L = self.layers
        if len(L) == 2:
            (w1, b1, a1), (w2, b2, a2) = L
            out = self.ops.fused_mlp2(x, w1, b1, w2, b2, coeffs, a1)
            return _activate(out, a2)
        h = x
        for w, b, act in L:
            h = _activate(self.ops.batched_linear(h, w, b, coeffs), act)
        return h


# ---------------------------------------------------------------------------- runners
def _per_point_apply(vectorized: bool):
    """``apply(fn, tensors, batch)``: ``fn(point, batch)`` at every point, stacked along dim 0
    (the batch is shared by all points)."""
    if vectorized:

        def apply(fn, tensors, batch):
            return vmap(lambda t: fn(t, batch))(tensors)

    else:

        def apply(fn, tensors, batch):
            k = next(iter(tensors.values())).shape[0]
            return torch.stack([fn({n: t[i] for n, t in tensors.items()}, batch) for i in range(k)])

    return apply


def _batch_bytes(batch: Batch) -> int:
    """Bytes of the tensors of a batch (inputs and targets)."""
    total = sum(t.numel() * t.element_size() for t in (*batch.args, *batch.kwargs.values()) if torch.is_tensor(t))
    if torch.is_tensor(batch.target):
        total += batch.target.numel() * batch.target.element_size()
    return total


def _activation_bytes_per_sample(model: nn.Module, point: dict, probe, forward: Callable | None = None) -> int:
    """Bytes of module outputs for one sample (a probe forward with hooks on a one-sample batch);
    the first forward pass of a run, so inputs that do not fit the model fail here, in one line
    (:func:`landscape.batches.input_checks`)."""
    probe = read_batch(probe)
    total = [0]

    def hook(mod, args, out):
        if torch.is_tensor(out):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), input_checks(model, probe):
            call_model(model, point, probe, forward)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], _batch_bytes(probe) // max(probe.count, 1))


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.6 * free)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return int(0.25 * info.get("MemAvailable", info.get("MemFree", 8 << 30)))
    except OSError:  # pragma: no cover
        return 4 << 30


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


# ---------------------------------------------------------------------------- engine
class Engine:
    """The engine set up once for a model and a point set, run on any data and any points.

    :func:`evaluate` and :func:`evaluate_points` use it for one dataset; surfaces keep one
    engine and run it on chunks of cells for several data splits. Arguments are those of
    :func:`evaluate`.
    """

    def __init__(
        self,
        model: nn.Module,
        points: PointSet | Weights | Sequence[Weights],
        metrics: Sequence[str | Callable | Metric] = ("loss", "acc"),
        *,
        bn: str = "running",
        precision: str = "fp32",
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        bn_batch_size: int = 128,
        max_memory: int | float | None = None,
        points_per_pass: int | None = None,
        path: str = "auto",
        forward: Callable | None = None,
        offload: bool = False,
    ):
        points = _as_pointset(points)
        #: ``forward(model, batch) -> output`` replacing the default model call (see landscape.batches)
        self.forward = forward
        self.metrics = resolve_metrics(metrics)
        #: with ``keep_probabilities``, ``run`` also stores every point's predicted class
        #: probabilities (softmax of the outputs, float64) in ``probabilities[K, N, C]``
        self.keep_probabilities = False
        self.probabilities: np.ndarray | None = None
        if bn not in bnlib.BN_MODES:
            raise ValueError(f"bn should be one of {bnlib.BN_MODES}, got {bn!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision should be one of {PRECISIONS}, got {precision!r}")
        if path not in PATHS:
            raise ValueError(f"path should be one of {PATHS}, got {path!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model should be a torch.nn.Module, got {type(model).__name__}")
        for name, value in (("batch_size", batch_size), ("points_per_pass", points_per_pass)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} should be a positive integer or None, got {value!r}")
        state = model.state_dict()
        model_names = list(state.keys())
        if model_names != points.layout.names():
            missing = [n for n in model_names if n not in points.layout]
            extra = [n for n in points.layout.names() if n not in model_names]
            what = (
                f"model has '{missing[0]}' which the points lack"
                if missing
                else (f"points have '{extra[0]}' which the model lacks" if extra else "their order differs")
            )
            raise ValueError(f"points do not match the model: {what}")
        for e in points.layout:
            if tuple(state[e.name].shape) != tuple(e.shape):
                raise ValueError(
                    f"points do not match the model: '{e.name}' is {list(e.shape)} in the points and "
                    f"{list(state[e.name].shape)} in the model"
                )
        self.model_name = type(model).__name__
        self.bn, self.precision, self.path_asked = bn, precision, path
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        # the dtype points are built in: fp64 for the oracle mode; a bf16 basis stays bf16 under
        # bf16 precision (a bf16 model is never widened); fp32 otherwise (bf16 then autocasts)
        if precision == "fp64":
            self.dtype = torch.float64
        elif precision == "bf16" and points.dtype == torch.bfloat16:
            self.dtype = torch.bfloat16
        else:
            self.dtype = torch.float32
        self.batch_size, self.bn_batch_size = batch_size, bn_batch_size
        self.budget = int(max_memory) if max_memory is not None else _default_budget(self.device)
        self.max_points = points_per_pass or 64
        self.points_per_pass_asked = points_per_pass is not None
        self.points = points
        #: the model's structure without its weights (every call passes a point's tensors and
        #: ``self.fixed``, the non-persistent buffers); the user's module is never copied
        self.work, self.fixed = model_skeleton(model, self.device, self.dtype)
        #: keep the basis in host memory and stream its entries to the device per chunk
        self.offload = bool(offload) and self.device.type != "cpu"
        self.pts = points if (self.offload or points.device == self.device) else points.to(self.device)
        self.has_bn = bnlib.has_batchnorm(self.work)
        self.sq_norms = None
        if any(m.needs_weight_norm for m in self.metrics):
            G = self.pts.gram(points.layout.parameter_mask())
            self.sq_norms = torch.einsum("kj,jl,kl->k", points.coeffs, G, points.coeffs)
        stack = linear_stack(self.work)
        self.plan, self.flatten = stack if stack is not None else (None, False)
        self._fused = None
        #: the compiled forward (path "compiled") and the warm-up this engine paid for it
        self._compiled: compiledlib.CompiledForward | None = None
        self.compile_seconds = 0.0
        self._bar: Any = _NullBar()  # the progress bar of the run in progress
        self._sources: dict[int, tuple[Any, DataSource]] = {}
        self.path: str | None = None
        self.points_per_pass: int | None = None
        self.n_batch: int | None = None

    def point_tensors(self, idx) -> dict[str, torch.Tensor]:
        """What ``functional_call`` of the skeleton takes for the points ``idx``: their named
        tensors ``[k, ...]`` in the compute dtype on the device (built entry by entry), and the
        non-persistent buffers."""
        tensors = self.pts.tensors(idx, dtype=self.dtype)
        if self.offload:
            tensors = {n: t.to(self.device, non_blocking=True) for n, t in tensors.items()}
        k = len(idx)
        for name, buf in self.fixed.items():
            tensors[name] = buf.expand(k, *buf.shape)
        return dict(tensors)

    # ------------------------------------------------------------------ set-up per dataset
    def _source(self, data) -> DataSource:
        key = id(data)
        if key not in self._sources:
            self._sources[key] = (data, as_source(data))
        return self._sources[key][1]

    @property
    def data_passes(self) -> int:
        """Passes over the data (evaluation and BatchNorm statistics) made so far."""
        return sum(src.passes for _, src in self._sources.values())

    def _batches(self, src: DataSource, batch_size: int | None, *, split: bool = True):
        return src.batches(batch_size, self.device, self.dtype, split=split)

    def _choose_path(self, src: DataSource, points: int) -> str:
        probe = src.first(1)
        fused_ok = (
            self.plan is not None
            and self.forward is None
            and self.precision in ("fp32", "fp64", "tf32")
            and not probe.kwargs
            and len(probe.args) == 1
            and torch.is_tensor(probe.args[0])
            and (probe.args[0].dim() == 2 or self.flatten)
        )
        if self.path_asked == "fused" and not fused_ok:
            raise ValueError(
                "path='fused' needs an nn.Sequential of Linear layers and ReLU/Tanh activations "
                f"at precision fp32/tf32/fp64, fed one input tensor; got {self.model_name} at {self.precision}"
            )
        if self.path_asked == "compiled" and self.precision == "fp64":
            warnings.warn(
                "path='compiled' does not run at precision fp64 (the oracle mode stays bit for bit the "
                "loop's); using the loop path",
                stacklevel=4,
            )
            return "loop"
        if self.path_asked != "auto":
            return self.path_asked
        # The fused kernels win where the first layer's input is shared (J products for any
        # number of points) and the hidden activations of a two-layer network never leave
        # the cache; deeper stacks spend their time in per-point layers, where the loop of
        # large GEMMs is as fast (measured in tools/bench_engine.py).
        if fused_ok and len(self.plan) <= 2 and self._fused_pays():
            return "fused"
        if self._compiled_pays(src, points):
            return "compiled"
        return "vmap" if self.device.type == "cuda" else "loop"

    def _compiled_pays(self, src: DataSource, points: int) -> bool:
        """Whether ``auto`` takes the compiled path: never in fp64 or bf16, and otherwise when
        the estimated time it saves over the ``points`` to evaluate (those pending when
        resuming) exceeds the warm-up (:func:`landscape.compiled.compiled_pays`)."""
        if self.precision not in ("fp32", "tf32") or points < 2:
            return False
        n = src.n
        if n is None and src.kind == "loader":
            with contextlib.suppress(TypeError, AttributeError):
                n = len(src.data.dataset)
        if not n:
            return False
        point0 = {name: t[0] for name, t in self.point_tensors([0]).items()}
        probe = src.first(1).to(self.device, self.dtype)
        macs = compiledlib.forward_macs(self.work, point0, probe, self.forward)
        signature = compiledlib.model_signature(self.work, self.dtype, self.device)
        return compiledlib.compiled_pays(macs, int(n), points, self.device, signature)

    def _fused_pays(self) -> bool:
        """Whether the fused kernels beat the loop for this basis size.

        The fused two-layer kernel forms the hidden activations of every point from the
        ``J`` per-basis products, about ``J n H (d + K)`` multiply-adds for ``K`` points
        (``d`` inputs, ``H`` hidden units, ``n`` samples), where the loop spends about
        ``K n H (d + C)`` (``C`` outputs). Large bases (explicit points: OT swaps, WA
        paths) are therefore faster through the loop; the 0.4 is the measured ratio of the
        two kernels' speeds on the CPU (64-512-10: the loop wins from J = 16; 784-256-10:
        from J = 50), with some margin.
        """
        J = self.pts.J
        if J <= 4:
            return True
        first, last = self.plan[0][0], self.plan[-1][0]
        d = self.pts.layout[f"{first}.weight" if first else "weight"].shape[1]
        C = self.pts.layout[f"{last}.weight" if last else "weight"].shape[0]
        K = min(self.pts.K, 256)
        return J <= 0.4 * K * (d + C) / (d + K)

    def _plan_memory(self, src: DataSource, chosen: str) -> tuple[int, int]:
        itemsize = torch.finfo(self.dtype).bits // 8
        point0 = {n: t[0] for n, t in self.point_tensors([0]).items()}
        probe = src.first(1).to(self.device, self.dtype)
        act = _activation_bytes_per_sample(self.work, point0, probe, self.forward)
        n_data = src.n or src.batch_size or _CPU_BATCH_MAX
        if self.batch_size:
            n_batch = int(self.batch_size)
        elif src.batch_size:
            n_batch = int(src.batch_size)  # a DataLoader's batches, split only if memory says so
        elif self.device.type == "cuda":
            n_batch = min(n_data, 2048)
        elif chosen == "compiled" and any(isinstance(m, nn.modules.conv._ConvNd) for m in self.work.modules()):
            n_batch = min(n_data, _COMPILED_CONV_BATCH)
        else:
            # CPU: batches whose activations stay near the caches (about 64 MB) run fastest;
            # measured on ResNet-20, ConvFC and VGG-16 (larger batches are up to 1.6x slower)
            n_batch = min(n_data, _CPU_BATCH_MAX, _pow2_floor(max(_CPU_BATCH_MIN, _CPU_ACT_TARGET // max(act, 1))))
        P_bytes = self.pts.P * itemsize
        # in-memory data lives on the device whole; streamed data one batch at a time
        data_bytes = src.x.numel() * src.x.element_size() if src.in_memory else n_batch * _batch_bytes(probe)
        base = self.pts.J * P_bytes + data_bytes

        def need(k: int, n: int) -> int:
            if chosen == "fused":
                return base + k * n * act
            if chosen == "vmap":
                return base + k * (P_bytes + n * act)
            return base + k * P_bytes + n * act

        while n_batch > 1 and need(1, n_batch) > self.budget:
            n_batch //= 2
        if need(1, n_batch) > self.budget:
            raise MemoryBudgetError(
                f"max_memory={self.budget} bytes is too small for one point: it needs at least "
                f"{need(1, 1)} bytes (basis {self.pts.J} x {P_bytes} bytes, data, and {act} bytes of "
                "activations per sample)"
            )
        k_pass = max(1, min(self.max_points, self.points.K or 1))
        if chosen != "fused" and not self.points_per_pass_asked:
            # the points of a chunk are built whole: for large models keep them few, so a run
            # needs the basis, the model and about one point (reading the data once per chunk
            # saves little where each point's forward pass dominates)
            k_pass = min(k_pass, max(1, _POINT_BYTES // max(P_bytes, 1)))
        while k_pass > 1 and need(k_pass, n_batch) > self.budget:
            k_pass //= 2
        return k_pass, n_batch

    def prepare(self, data, points: int | None = None) -> int:
        """Choose the path and chunking for ``data``; returns the points per pass. ``points``:
        how many points the run will evaluate (default all), what ``auto`` weighs the compiled
        path's warm-up against."""
        src = self._source(data)
        if self.path is None:
            self.path = self._choose_path(src, self.points.K if points is None else int(points))
            if self.path == "fused":
                fused = _FusedMLP(self.plan, self.pts, self.dtype, self.device, self.flatten)
                entry = fused.nonfinite_entry()
                if entry is None:
                    self._fused = fused
                else:
                    self.path = "vmap" if self.device.type == "cuda" else "loop"
                    if self.path_asked == "fused":
                        warnings.warn(
                            f"path='fused' cannot evaluate a basis with NaN or inf values (in '{entry}'): "
                            f"the kernels would spread them to points whose coefficient on it is 0; "
                            f"using the {self.path} path",
                            stacklevel=3,
                        )
            if self.path == "compiled":
                # bf16 on the compiled path is real bf16 (weights and inputs cast in the graph), not autocast
                real = torch.bfloat16 if self.precision == "bf16" and self.dtype != torch.bfloat16 else None
                self._compiled = compiledlib.compiled_forward(self.work, self.forward, self.dtype, self.device, real)
                if self._compiled.failure is not None:  # failed before in this process, and warned then
                    self._compiled, self.path = None, "loop"
        if self.points_per_pass is None:
            self.points_per_pass, self.n_batch = self._plan_memory(src, self.path)
        return self.points_per_pass

    # ------------------------------------------------------------------ evaluation
    def _chunk_values(
        self, idx: np.ndarray, src: DataSource, bsrc: DataSource | None, vectorized: bool
    ) -> dict[str, np.ndarray]:
        device, dtype, work, user_forward = self.device, self.dtype, self.work, self.forward
        coeffs = self.points.coeffs[torch.as_tensor(idx)].to(device=device, dtype=dtype)
        tensors = None if self._fused is not None else self.point_tensors(idx)
        apply = _per_point_apply(vectorized)
        forward = lambda p, b: call_model(work, p, b, user_forward)  # noqa: E731
        if self.has_bn and tensors is not None and self.bn in bnlib.RECOMPUTE_WEIGHTING:
            tensors = bnlib.recompute_bn(
                lambda t, b: apply(forward, t, b),
                work,
                tensors,
                self._batches(bsrc, self.bn_batch_size, split=False),
                weighting=bnlib.RECOMPUTE_WEIGHTING[self.bn],
            )
        elif self.has_bn and tensors is not None and self.bn == "recompute-exact":
            tensors = bnlib.recompute_bn_exact(
                apply, work, tensors, lambda: self._batches(bsrc, self.bn_batch_size), forward=user_forward
            )
        compiled = self._compiled
        if compiled is not None:
            tensors = compiled.fold(tensors)
            forward = lambda p, b: self._compiled_call(compiled, p, b)  # noqa: E731
        sums = {m.name: torch.zeros(len(idx), dtype=torch.float64, device=device) for m in self.metrics}
        counts = {m.name: torch.zeros(len(idx), dtype=torch.float64, device=device) for m in self.metrics}
        probs = [] if self.keep_probabilities else None
        for batch in self._batches(src, self.n_batch):
            if self._fused is not None:
                out = self._fused(coeffs, batch.args[0])
            else:
                out = apply(forward, tensors, batch)
            for m in self.metrics:
                total, count = m.batch_stats(out, batch)
                sums[m.name] += total.to(torch.float64)
                counts[m.name] += torch.as_tensor(count, dtype=torch.float64, device=device)
            if probs is not None:
                probs.append(torch.softmax(out.to(torch.float64), -1).cpu())
        vals = {}
        if probs is not None:
            vals[_PROBS] = torch.cat(probs, 1).numpy()  # [k, N, C]
        for m in self.metrics:
            sq = self.sq_norms[torch.as_tensor(idx)].to(device) if self.sq_norms is not None else None
            vals[m.name] = m.finalize(sums[m.name], counts[m.name], sq).cpu().numpy()
        return vals

    def _compiled_call(self, compiled: compiledlib.CompiledForward, params, batch: Batch) -> torch.Tensor:
        """One point through the compiled forward; the first call's warm-up is this engine's,
        shown on the progress bar while it lasts and reported in one line after."""
        if compiled.compile_seconds is not None:
            return compiled(params, batch, self.n_batch)
        self._bar.set_postfix_str(f"compiling {self.model_name} (one-time)")
        try:
            out = compiled(params, batch, self.n_batch)
        finally:
            self._bar.set_postfix_str("")
        seconds = compiled.compile_seconds or 0.0
        self.compile_seconds += seconds
        self._bar.write(f"compiling {self.model_name} (one-time, {format_seconds(seconds)})", file=sys.stderr)
        return out

    def run(
        self,
        data,
        indices=None,
        *,
        bn_data=None,
        on_chunk=None,
        progress: bool = True,
        desc: str = "evaluate",
        bar=None,
    ) -> dict[str, np.ndarray]:
        """Metrics at the points ``indices`` (all when None) over ``data``.

        Returns ``{metric: ndarray[K]}`` with NaN at points not in ``indices``; calls
        ``on_chunk(indices, values)`` after every finished chunk. ``bar``: a progress bar of
        the caller's, which counts the points itself, for the compiled path's warm-up message
        (instead of a bar of this call's own, ``progress``).
        """
        K = self.points.K
        todo = np.arange(K, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if todo.size and (todo.min() < 0 or todo.max() >= K):
            raise IndexError(f"indices should lie in [0, {K}), got min {todo.min()} and max {todo.max()}")
        results = {m.name: np.full(K, np.nan) for m in self.metrics}
        if not todo.size:
            return results
        src = self._source(data)
        bsrc = None
        if self.bn != "running" and self.has_bn:
            bsrc = self._source(bn_data if bn_data is not None else data)
        self.prepare(data, len(todo))
        vectorized = self.path == "vmap"
        own = bar is None
        bar = _progress(len(todo), desc, progress) if own else bar
        self._bar = bar
        pos = 0
        try:
            with _precision_context(self.precision, self.device), torch.no_grad():
                while pos < len(todo):
                    idx = todo[pos : pos + self.points_per_pass]
                    try:
                        vals = self._chunk_values(idx, src, bsrc, vectorized)
                    except Exception as e:  # noqa: BLE001 - classified below
                        if _is_oom(e):
                            self._back_off(e)
                            continue
                        if self.path == "compiled":
                            # remembered in the process's compiled forward: later runs of the
                            # model take the loop without trying or warning again
                            self._compiled.failure = compiledlib.failure_reason(e)
                            warnings.warn(
                                f"the compiled path cannot evaluate {self.model_name} "
                                f"({self._compiled.failure}); falling back to the per-point path",
                                stacklevel=3,
                            )
                            self._compiled, self.path = None, "loop"
                            continue
                        if vectorized and _is_vmap_failure(e):
                            warnings.warn(
                                f"vmap cannot evaluate {self.model_name} ({str(e).splitlines()[0][:120]}); "
                                "falling back to the per-point path",
                                stacklevel=3,
                            )
                            vectorized, self.path = False, "loop"
                            continue
                        raise
                    if _PROBS in vals:
                        p = vals.pop(_PROBS)
                        if self.probabilities is None:
                            self.probabilities = np.full((K, *p.shape[1:]), np.nan)
                        self.probabilities[idx] = p
                    for name, v in vals.items():
                        results[name][idx] = v
                    if on_chunk is not None:
                        on_chunk(idx, vals)
                    pos += len(idx)
                    if own:
                        bar.update(len(idx))
        finally:
            self._bar = _NullBar()
            if own:
                bar.close()
        return results

    def _back_off(self, e: BaseException) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.points_per_pass > 1:
            self.points_per_pass = max(1, self.points_per_pass // 2)
        elif self.n_batch > 1:
            self.n_batch = max(1, self.n_batch // 2)
        else:
            raise MemoryBudgetError("out of memory evaluating a single point on a single sample") from e


def evaluate_points(
    model: nn.Module,
    points: PointSet | Weights | Sequence[Weights],
    data,
    metrics: Sequence[str | Callable | Metric] = ("loss", "acc"),
    *,
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    max_memory: int | float | None = None,
    points_per_pass: int | None = None,
    path: str = "auto",
    forward: Callable | None = None,
    offload: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
    on_chunk: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    warn_nonfinite: bool = True,
) -> EvalResult:
    """Metrics at the points of ``points``; the in-memory core of :func:`evaluate`.

    Takes the same arguments as :func:`evaluate` apart from the file ones, plus
    ``indices`` (evaluate only these points; others stay NaN), ``on_chunk`` (called
    with the point indices and metric values of every finished chunk, in order) and
    ``warn_nonfinite``: warn once (:class:`~landscape.metrics.NonFiniteWarning`) when computed
    values are NaN or inf, saying how many points, which metrics and the first point indices
    (:func:`evaluate` with ``out=`` leaves that to its result file, which warns when it closes).
    """
    t_start = time.perf_counter()
    engine = Engine(
        model,
        points,
        metrics,
        bn=bn,
        precision=precision,
        device=device,
        batch_size=batch_size,
        bn_batch_size=bn_batch_size,
        max_memory=max_memory,
        points_per_pass=points_per_pass,
        path=path,
        forward=forward,
        offload=offload,
    )
    results = engine.run(data, indices, bn_data=bn_data, on_chunk=on_chunk, progress=progress, desc=desc)
    done = np.arange(engine.points.K) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    evaluated = int(done.size)
    message = _nonfinite_message(results, done) if warn_nonfinite else None
    if message is not None:
        warnings.warn(message, NonFiniteWarning, stacklevel=2)
    return EvalResult(
        metrics=results,
        path=engine.path or engine.path_asked,
        points_per_pass=engine.points_per_pass or 0,
        batch_size=engine.n_batch or 0,
        seconds=time.perf_counter() - t_start,
        evaluated=evaluated,
        info={
            "device": str(engine.device),
            "precision": precision,
            "bn": bn,
            "memory_budget": engine.budget,
            "data_passes": engine.data_passes,
            "compile_seconds": engine.compile_seconds,
        },
    )


def _nonfinite_message(
    values: Mapping[str, np.ndarray], done: np.ndarray, first: int = 5, what: str = "evaluate"
) -> str | None:
    """One line saying which of the computed points ``done`` have NaN or inf values, for which
    metrics, with the first point indices; None when all are finite.

    Examples
    --------
    >>> import numpy as np
    >>> _nonfinite_message({"loss": np.array([0.5, np.nan, np.inf]), "acc": np.array([1.0, np.nan, np.nan])}, np.arange(3))
    'evaluate: computed values not finite (NaN/Inf) at 2 of 3 points: loss, acc at 2 points (1, 2)'
    """
    groups: dict[tuple[int, ...], list[str]] = {}  # metrics bad at the same points
    bad_points: set[int] = set()
    for name, v in values.items():
        bad = done[~np.isfinite(np.asarray(v)[done])]
        if bad.size:
            groups.setdefault(tuple(bad.tolist()), []).append(name)
            bad_points.update(bad.tolist())
    if not groups:
        return None
    parts = []
    for idx, names in groups.items():
        shown = ", ".join(map(str, idx[:first])) + (", ..." if len(idx) > first else "")
        parts.append(f"{', '.join(names)} at {len(idx)} point{'s' if len(idx) > 1 else ''} ({shown})")
    where = "; ".join(parts)
    return f"{what}: computed values not finite (NaN/Inf) at {len(bad_points)} of {done.size} points: {where}"


def _is_vmap_failure(e: BaseException) -> bool:
    msg = str(e)
    return isinstance(e, (RuntimeError, NotImplementedError, ValueError)) and (
        "vmap" in msg or "Batching rule" in msg or "batched" in msg.lower() or ".item()" in msg
    )


class _NullBar:
    def update(self, n):
        pass

    def set_postfix_str(self, s=""):
        pass

    def write(self, s, file=None):
        pass

    def close(self):
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt", dynamic_ncols=True, leave=False)


def _as_pointset(points) -> PointSet:
    if isinstance(points, PointSet):
        return points
    if isinstance(points, Weights):
        return PointSet.explicit([points])
    if isinstance(points, (list, tuple)) and points and all(isinstance(p, Weights) for p in points):
        return PointSet.explicit(list(points))
    raise TypeError(f"points should be a PointSet, Weights or a list of Weights, got {type(points).__name__}")


def evaluate(
    model: nn.Module,
    points: PointSet | Weights | Sequence[Weights],
    data,
    metrics: Sequence[str | Callable | Metric] = ("loss", "acc"),
    *,
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    max_memory: int | float | None = None,
    points_per_pass: int | None = None,
    path: str = "auto",
    forward: Callable | None = None,
    offload: bool = False,
    progress: bool = True,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    attrs: Mapping[str, Any] | None = None,
    allow_large: bool = False,
) -> EvalResult:
    """Evaluate metrics of ``model`` at every weight point of ``points`` over ``data``.

    Parameters
    ----------
    model : nn.Module
        Any module, never modified; only its structure is used (:func:`torch.func.functional_call`).
    points : PointSet or Weights or list of Weights
        K weight points ``C @ B`` sharing the model's layout.
    data : TensorData, (Tensor[N, ...], Tensor[N]), DataLoader, Dataset or iterable of batches
        What the metrics average over (see :mod:`landscape.batches`): in-memory tensors are
        moved to the device once; a DataLoader's batches stream to it one at a time, each
        read once per chunk of points. Batches may be tuples ``(input, target)`` or dicts
        (``labels`` are the targets, the other keys the model's keyword arguments).
    metrics : sequence of str or callable or Metric
        ``"loss"`` (mean cross-entropy), ``"acc"``, ``"err"`` (%), ``"mse"``, the causal-LM
        token metrics ``"token_loss"``, ``"perplexity"``, ``"token_acc"``, any ``fn(output,
        target) -> scalar`` averaging over its batch, :func:`landscape.metrics.batch_metric`
        or :func:`landscape.metrics.l2_regularized`.
    bn : {"running", "recompute", "recompute-batches", "recompute-exact"}
        BatchNorm statistics: the points' own; recomputed per point with each batch weighted
        by its size (the mode-connectivity and SWA repositories' ``update_bn``) or equally
        (``torch.optim.swa_utils.update_bn``); or exactly those of the whole dataset as one
        batch (see :mod:`landscape.bn`).
    bn_data : TensorData or tuple, optional
        Data for recomputing statistics (default ``data``); usually the train split.
    precision : {"fp32", "fp64", "tf32", "bf16"}
        fp32 is the default and deterministic; fp64 the oracle mode. Points are built in it
        entry by entry whatever the basis dtype; ``bf16`` autocasts (a bf16 basis stays bf16),
        except on the compiled path, which casts weights and inputs to bf16 (real bf16).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    batch_size : int, optional
        Samples per pass. Default on GPUs: 2048 (less if the memory budget says so); on CPUs
        a power of two in [16, 1024] whose activations take about 64 MB (fastest there).
    bn_batch_size : int
        Batch size of the statistics pass (``update_bn`` uses the loader's).
    max_memory : int, optional
        Memory budget in bytes (default 60% of free GPU memory, 25% of available RAM); points
        per pass and batch size follow from it, and out-of-memory errors halve them.
    points_per_pass : int, optional
        Upper bound on points per pass (default 64).
    path : {"auto", "fused", "compiled", "vmap", "loop"}
        See the module docstring; ``auto`` picks fused for MLPs of one or two linear layers,
        compiled at fp32/tf32 when its estimated saving outweighs its warm-up, else vmap on
        GPUs and the loop on CPUs.
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing ``model(x)`` or ``model(**inputs)``; outputs
        may be tensors, tuples, dicts with ``logits`` or objects with ``.logits``.
    offload : bool
        On a GPU, keep the basis in host memory and stream each entry to the device as the
        points of a chunk are built.
    progress : bool
        Show a progress bar (``tqdm.auto``) with points per second; the compiled path's
        warm-up shows on it while it lasts, then in one line on stderr.
    out : path, optional
        Also write the results to this HDF5 file (see ``docs/h5-format.md``).
    resume : bool
        Continue an existing ``out`` file: only points not yet done are computed.
    force : bool
        Overwrite an existing ``out`` file.
    attrs : mapping, optional
        Extra attributes for the file (model spec, checkpoints, data spec...).
    allow_large : bool
        Create an ``out`` file above 2 GB (:mod:`landscape.budget`); refused otherwise.

    Returns
    -------
    EvalResult
        ``result["loss"]`` etc. as float64 arrays of shape [K], plus the path used; ``info``
        has ``data_passes`` (passes over the data) and ``compile_seconds`` (warm-up paid).

    Examples
    --------
    >>> import torch, landscape as ls
    >>> _ = torch.manual_seed(0)
    >>> model = ls.models.build_model("mlp", {"in_features": 64, "widths": [32]})
    >>> train = ls.load_data("digits", "train")
    >>> w0, w1 = ls.Weights.from_module(model), ls.Weights.from_module(ls.models.build_model("mlp", {"in_features": 64, "widths": [32]}))
    >>> line = ls.PointSet.from_weights([w0, w1], [[1 - t, t] for t in (0.0, 0.5, 1.0)])
    >>> res = ls.evaluate(model, line, train, progress=False)
    >>> res["loss"].shape, res.path
    ((3,), 'fused')
    """
    points = _as_pointset(points)
    opts = dict(bn=bn, bn_data=bn_data, precision=precision, device=device, batch_size=batch_size, path=path)
    opts.update(bn_batch_size=bn_batch_size, max_memory=max_memory, points_per_pass=points_per_pass, offload=offload)
    opts.update(forward=forward, progress=progress)
    if out is None:
        return evaluate_points(model, points, data, metrics, **opts)
    with _eval_file(out, points, data, metrics, bn, bn_data, precision, attrs, resume, force, allow_large) as f:
        res = evaluate_points(  # the file warns about the non-finite cells it wrote when it closes
            model, points, data, metrics, indices=f.pending(), on_chunk=f.write_cells, warn_nonfinite=False, **opts
        )
        res.metrics = {name: f.read_metric(name) for name in res.metrics}
        res.info["file"] = os.fspath(out)
    return res


def _eval_file(
    out, points: PointSet, data, metrics, bn, bn_data, precision, attrs, resume: bool, force: bool, allow_large: bool
):
    """The result file of :func:`evaluate` (kind ``eval``), created or opened to resume."""
    from . import io

    metric_names = [m.name for m in resolve_metrics(metrics)]
    file_attrs = run_attributes(points, data, metric_names, bn=bn, bn_data=bn_data, precision=precision)
    file_attrs.update(dict(attrs or {}))
    return io.open_or_create(
        out,
        kind="eval",
        shape=(points.K,),
        metrics=metric_names,
        attrs=file_attrs,
        arrays={"coefficients": points.coeffs.numpy()},
        resume=resume,
        force=force,
        allow_large=allow_large,
    )


def describe_data(d) -> dict[str, Any] | None:
    """What a dataset is, for result-file attributes: ``TensorData.describe()``, the size and
    input shape of an ``(x, y)`` tuple, the kind and batch size of a loader; None for None."""
    if d is None:
        return None
    if hasattr(d, "describe"):
        return d.describe()
    return as_source(d).describe()


def run_attributes(points: PointSet, data, metric_names, *, bn, bn_data, precision) -> dict[str, Any]:
    """Attributes that identify a run (compared when resuming)."""
    from ._version import __version__

    return {
        "library-version": __version__,
        "metrics": list(metric_names),
        "bn": bn,
        "bn-data": describe_data(bn_data),
        "precision": precision,
        "data": describe_data(data),
        "basis-names": list(points.names),
        "num-points": int(points.K),
        "basis-size": int(points.J),
        "num-weights": int(points.P),
    }
