"""Small training loops' shared parts: minibatches from any data and the loss of one batch.

Every training loop of the library (FGE, SSE, SWA, independent networks, curve fitting,
the ELBO of variational networks, the Bijection flows) draws its minibatches from
:class:`TrainBatches` and computes its loss with :func:`loss_of`, so each of them takes any
data :func:`landscape.batches.as_source` reads:

- in-memory data (a :class:`~landscape.data.TensorData` or ``(x, y)`` tensors) is moved to the
  device once and sliced along a seeded permutation, exactly as the loops always did
  (:meth:`TrainBatches.epoch`: a fresh ``torch.randperm`` per epoch and ``ceil(n / B)``
  slices, the last one smaller; :meth:`TrainBatches.stream`: FGE's endless stream, a fresh
  permutation whenever fewer than ``B`` samples are left);
- a map-style :class:`~torch.utils.data.Dataset` is read along the same permutations, its
  items collated by ``default_collate`` (the same stream as in memory);
- a :class:`~torch.utils.data.DataLoader` or any re-iterable of batches gives its own batches
  in its own order, restarted every epoch (a ``DataLoader(shuffle=True)`` shuffles itself).

The loss of a batch (:func:`resolve_loss`) is cross-entropy by default; a callable
``fn(output, target)`` that averages over its batch, or a metric name / :class:`~landscape.metrics.Metric`
(``"token_loss"`` for causal language models: the metric's sum over the batch divided by
its count) replace it. A user ``forward(model, batch)`` replaces the default model call
(:func:`landscape.batches.call_model`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batches import Batch, BatchError, DataSource, as_source, call_model, read_batch, to_device
from .metrics import Metric, resolve_metrics

__all__ = [
    "fresh_copy",
    "sgd",
    "Loss",
    "TrainBatches",
    "loss_of",
    "resolve_loss",
    "train_classifier",
]


def sgd(params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, *, what: str = "lr") -> torch.optim.SGD:
    """``torch.optim.SGD`` with its settings checked first, in one line naming the bad one (torch
    says only "Invalid learning rate: -1.0"). ``what`` names the rate in the message (e.g.
    ``"alpha1"``)."""
    for name, value, ok, expected in (
        (what, lr, lambda v: v > 0, "a positive number"),
        ("momentum", momentum, lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("weight_decay", weight_decay, lambda v: v >= 0, "a number >= 0"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"{name} should be {expected}, got {value!r}")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------------------- the loss of a batch
class Loss:
    """The training loss of one point's output on a batch: ``loss(output, batch) -> scalar``.

    Built by :func:`resolve_loss` from ``None`` (cross-entropy), a callable
    ``fn(output, target)`` averaging over the batch, or a metric name / :class:`Metric`.
    """

    def __init__(self, spec: Any = None):
        self.spec = spec
        self.metric: Metric | None = None
        if spec is None:
            self.fn, self.name = F.cross_entropy, "cross_entropy"
        elif isinstance(spec, (str, Metric)):
            self.metric = resolve_metrics([spec])[0]
            self.fn, self.name = None, self.metric.name
        elif callable(spec):
            self.fn, self.name = spec, getattr(spec, "__name__", None) or type(spec).__name__
        else:
            raise TypeError(
                f"loss should be None (cross-entropy), a callable fn(output, target), a metric name or a Metric, "
                f"got {type(spec).__name__}"
            )

    def __call__(self, out: Tensor, batch: Batch) -> Tensor:
        if self.metric is not None:
            sums, count = self.metric.batch_stats(out[None], batch)
            value = sums[0] / count
        else:
            if batch.target is None:
                raise BatchError(
                    f"the training loss '{self.name}' needs targets but the batch has none (a dict batch needs "
                    "'labels', a tuple batch a second element; or pass loss='token_loss' for a causal language model)"
                )
            value = self.fn(out, batch.target)
        if torch.is_grad_enabled() and out.requires_grad and not getattr(value, "requires_grad", False):
            raise ValueError(f"the training loss '{self.name}' is not differentiable (it has no gradient)")
        return value

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"


def resolve_loss(loss: Any = None) -> Loss:
    """A :class:`Loss` from ``None`` (cross-entropy), a callable ``fn(output, target)``, a
    metric name (``"loss"``, ``"token_loss"``, ``"mse"``...) or a :class:`Metric`."""
    return loss if isinstance(loss, Loss) else Loss(loss)


def loss_of(
    model: nn.Module,
    tensors: Mapping[str, Tensor] | tuple | None,
    batch: Batch,
    loss: Any = None,
    forward: Callable | None = None,
) -> Tensor:
    """The training loss of ``model`` at ``tensors`` (``None``: its own) on ``batch``.

    Parameters
    ----------
    model : nn.Module
    tensors : mapping of str to Tensor, or None
        As for :func:`landscape.batches.call_model` (``functional_call`` when given).
    batch : Batch
    loss : None, callable, str or Metric
        See :func:`resolve_loss`.
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Examples
    --------
    >>> import torch
    >>> from landscape.batches import read_batch
    >>> net = torch.nn.Linear(3, 2)
    >>> b = read_batch((torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
    >>> float(loss_of(net, None, b)) == float(torch.nn.functional.cross_entropy(net(b.args[0]), b.target))
    True
    """
    return resolve_loss(loss)(call_model(model, tensors, batch, forward), batch)


# ---------------------------------------------------------------------------- training batches
class TrainBatches:
    """Minibatches of a training loop from any data (see the module docstring).

    Parameters
    ----------
    data : TensorData, (x, y), DataLoader, Dataset, iterable of batches or DataSource
    batch_size : int
        Samples per batch for in-memory data and Datasets (a loader's own batches are used
        as they come).
    generator : torch.Generator, optional
        The permutations of in-memory data and Datasets are drawn from it (lazily, when an
        epoch starts, so a loop may draw its own numbers from the same generator in between).
    device, dtype
        Batches are moved to ``device``; floating model inputs are cast to ``dtype`` (targets
        keep theirs). In-memory data is moved once.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.src: DataSource = as_source(data)
        self.batch_size = int(batch_size)
        self.generator = generator if generator is not None else torch.Generator()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self._xy: tuple[Tensor, Tensor] | None = None
        self._steps: int | None = None
        self._n: int | None = None

    @classmethod
    def for_module(
        cls, module: nn.Module, data: Any, batch_size: int, generator: torch.Generator | None = None
    ) -> TrainBatches:
        """Batches on the device and in the floating dtype of ``module``'s first parameter."""
        first = next(iter(module.parameters()), None)
        return cls(
            data,
            batch_size,
            generator=generator,
            device=first.device if first is not None else None,
            dtype=first.dtype if first is not None else None,
        )

    # ------------------------------------------------------------------ facts
    @property
    def indexed(self) -> bool:
        """Whether batches are drawn along permutations (in-memory data, Datasets)."""
        return self.src.kind in ("tensors", "dataset")

    @property
    def n(self) -> int:
        """Samples in the data set: in memory its size, a Dataset's ``len``, a loader's
        ``len(loader.sampler)`` or ``len(loader.dataset)``; one counting pass otherwise."""
        if self._n is None:
            self._n = self.src.num_samples()
        return self._n

    def steps_per_epoch(self) -> int:
        """Batches of one :meth:`epoch`: ``ceil(n / batch_size)`` for in-memory data and
        Datasets; a loader's ``len``, or one counting pass over it."""
        if self._steps is None:
            if self.indexed:
                self._steps = math.ceil(self.n / self.batch_size)
            else:
                size = _length(self.src.data)
                if size is None:  # one counting pass (unless one was made already)
                    if self.src.raw_batches is None:
                        for _ in self.src.batches(None, split=False):
                            pass
                    size = self.src.raw_batches
                self._steps = int(size)
        return self._steps

    def stream_steps_per_epoch(self) -> int:
        """Batches of one pass of :meth:`stream`: ``n // batch_size`` (at least 1) for in-memory
        data and Datasets (the incomplete batch is dropped); a loader's own count."""
        if self.indexed:
            return max(1, self.n // self.batch_size)
        return self.steps_per_epoch()

    # ------------------------------------------------------------------ batches
    def _tensors(self) -> tuple[Tensor, Tensor]:
        if self._xy is None:
            x, y = self.src.x, self.src.y
            cast = self.dtype if (self.dtype is not None and x.is_floating_point()) else None
            self._xy = (x.to(device=self.device, dtype=cast), y.to(self.device))
        return self._xy

    def _take(self, idx: Tensor) -> Batch:
        """The samples ``idx`` of in-memory data or a Dataset."""
        if self.src.kind == "tensors":
            x, y = self._tensors()
            idx = idx.to(x.device)
            xb, yb = x[idx], y[idx]
            return Batch((xb,), {}, yb, int(xb.shape[0]), (xb, yb))
        ds = self.src.data
        raw = torch.utils.data.default_collate([ds[int(i)] for i in idx])
        return read_batch(to_device(raw, self.device, self.dtype, targets_too=False))

    def _loader_pass(self) -> Iterator[Batch]:
        return self.src.batches(None, self.device, self.dtype, split=False)

    def permutation(self) -> Tensor:
        """A fresh permutation of the samples (drawn from the generator)."""
        return torch.randperm(self.n, generator=self.generator)

    def epoch(self) -> Iterator[Batch]:
        """One epoch: slices ``[b B, (b + 1) B)`` of a fresh permutation, ``ceil(n / B)`` of them
        (in memory and for Datasets); a loader's batches, in its order."""
        if not self.indexed:
            yield from self._loader_pass()
            return
        order = self.permutation()
        self.src.passes += 1
        B = self.batch_size
        for b in range(math.ceil(self.n / B)):
            yield self._take(order[b * B : (b + 1) * B])

    def skip_epoch(self) -> None:
        """Draw what :meth:`epoch` draws from the generator without reading data (resuming)."""
        if self.indexed:
            self.permutation()

    def stream(self) -> Iterator[Batch]:
        """An endless stream of batches (FGE): in memory and for Datasets a fresh permutation
        whenever fewer than ``B`` samples of the current one are left (the incomplete batch is
        dropped); a loader's epochs back to back."""
        if not self.indexed:
            while True:
                yield from self._loader_pass()
        B = self.batch_size
        order, pos = self.permutation(), 0
        self.src.passes += 1
        while True:
            if pos + B > self.n:  # a new epoch
                order, pos = self.permutation(), 0
                self.src.passes += 1
            idx = order[pos : pos + B]
            pos += B
            yield self._take(idx)


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


# ---------------------------------------------------------------------------- inputs for probes
# ---------------------------------------------------------------------------- a classifier
def train_classifier(
    model: nn.Module,
    data,
    *,
    epochs: int = 20,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    loss: Any = None,
    forward: Callable | None = None,
) -> nn.Module:
    """Train ``model`` in place with SGD and a cosine schedule (seeded batch order).

    ``data`` is anything :class:`TrainBatches` reads; ``loss`` and ``forward`` as for
    :func:`loss_of`. Returns the model, in eval mode.
    """
    lossfn = resolve_loss(loss)
    g = torch.Generator().manual_seed(seed)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    batches = TrainBatches.for_module(model, data, batch_size, g)
    model.train()
    for _ in range(epochs):
        for batch in batches.epoch():
            opt.zero_grad(set_to_none=True)
            loss_of(model, None, batch, lossfn, forward).backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every submodule's parameters re-initialised under ``seed``."""
    net = copy.deepcopy(model)
    torch.manual_seed(int(seed))
    for m in net.modules():
        if m is not net and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return net
