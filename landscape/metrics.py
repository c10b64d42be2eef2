"""Metrics computed by the evaluation engine at many weight points at once.

A metric turns the outputs of K points on a batch, ``Tensor[K, n, ...]``, into K partial
sums and the count they are over (samples, or tokens); the engine adds sums and counts over
all batches in float64 and :meth:`Metric.finalize` turns them into the value per point, so
every average is exact over the data set whatever the batching.

Built-in names:

- ``loss`` (mean cross-entropy, nats), ``acc`` (accuracy, fraction), ``err`` (error, percent),
  ``mse``. ``loss``, ``acc`` and ``err`` average over the samples whose target is not
  ``-100``; on sequence outputs ``[n, T, V]`` with targets ``[n, T]`` (token classification)
  over the positions whose target is not ``-100``.
- ``token_loss``, ``perplexity``, ``token_acc`` for causal language models: the logits at
  position ``i`` predict the target at ``i + 1``; targets equal to ``-100`` and positions where
  the batch's ``attention_mask`` is 0 are not counted; the average is over counted tokens.
  The targets are the batch's ``labels``, or its ``input_ids`` when it has none.

Two user contracts:

- a callable ``fn(output, target) -> scalar`` that averages over its batch (``nn.MSELoss()``,
  ``F.cross_entropy``...), weighted by the batch's sample count;
- :func:`batch_metric` wraps ``fn(output, batch) -> (sum, count)``, which sees the whole batch
  (masks, weights) and says what it counted.

:func:`l2_regularized` adds a weight penalty.

Non-finite outputs: a point whose counted outputs on any batch hold a NaN or an infinity gets
NaN for every built-in metric and callable (see :meth:`Metric.batch_stats`); outputs a metric
does not count (targets ``-100``, masked tokens) never make it NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Metric",
    "MetricError",
    "NonFiniteWarning",
    "resolve_metrics",
    "l2_regularized",
    "batch_metric",
    "BUILTIN_METRICS",
]

IGNORE_INDEX = -100


class MetricError(ValueError):
    """Outputs and targets that a metric cannot compare."""


class NonFiniteWarning(RuntimeWarning):
    """Computed values (losses, accuracies, cells of a result file) that are NaN or Inf."""


class Metric:
    """A metric evaluated at K points.

    Subclasses implement :meth:`batch_sum`; ``needs_weight_norm`` metrics also receive the
    squared L2 norm of each point's parameters in :meth:`finalize`.
    """

    name: str = "metric"
    needs_weight_norm: bool = False

    def batch_sum(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Tensor[K]``: the sum over the batch of the per-sample metric.

        Parameters
        ----------
        out : Tensor[K, n, ...]
            Model outputs of K points on one batch.
        y : Tensor[n, ...]
            Targets of the batch.
        """
        raise NotImplementedError

    def counted(self, out: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | int]:
        """``(outputs[K, m, ...], targets[m, ...], count)``: the outputs this metric counts on
        one batch, their targets and how many they are. By default all samples of the batch;
        class and token metrics leave out positions whose target is ``-100`` (and, for tokens,
        where the ``attention_mask`` is 0).
        """
        return out, _targets(batch, self.name), batch.count

    def batch_stats(self, out: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor | int]:
        """``(sums[K], count)`` of one batch: :meth:`batch_sum` over the outputs and targets
        that :meth:`counted` selects, and their count.

        The non-finite policy lives here: a point whose counted outputs hold a NaN or an
        infinity gets a NaN sum, so every metric computed from them is NaN at that point,
        whatever its formula would make of the value (an arg-max still picks a class);
        outputs that are not counted never make it NaN.

        Parameters
        ----------
        out : Tensor[K, n, ...]
            Model outputs (logits) of K points on the batch.
        batch : landscape.batches.Batch
            The batch (targets, sample count, and the raw fields such as ``attention_mask``).
        """
        out, y, count = self.counted(out, batch)
        return _nan_where_nonfinite(self.batch_sum(out, y), out), count

    def finalize(self, total: torch.Tensor, count, sq_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Value per point from the float64 sums and counts over the dataset."""
        return total / count


def _nan_where_nonfinite(sums: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``sums[K]`` in float64, NaN at the points whose outputs ``out[K, ...]`` are not all finite."""
    sums = sums.to(torch.float64)
    finite = torch.isfinite(out.reshape(out.shape[0], -1)).all(1)
    return torch.where(finite, sums, torch.full_like(sums, math.nan))


def _targets(batch, name: str) -> torch.Tensor:
    if batch.target is None:
        raise MetricError(
            f"metric '{name}' needs targets but the batch has none (a dict batch needs 'labels', "
            "a tuple batch a second element)"
        )
    return batch.target


def _float(out: torch.Tensor) -> torch.Tensor:
    return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out


def _class_targets(out: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """Check that integer targets ``y[n, *S]`` fit outputs ``out[K, n, *S, C]``."""
    if y.is_floating_point() or y.dtype == torch.bool:
        raise MetricError(
            f"metric '{name}' needs integer class targets, got {y.dtype} targets {list(y.shape)} "
            f"for outputs {list(out.shape[1:])}"
        )
    if tuple(out.shape[1:-1]) != tuple(y.shape):
        raise MetricError(
            f"metric '{name}': outputs {list(out.shape[1:])} and targets {list(y.shape)} do not match; expected "
            f"targets {list(out.shape[1:-1])} (one class index per output row)"
        )
    y = y.to(out.device)
    _check_class_range(y, out.shape[-1], name, "targets", "class indices", "samples")
    return y


def _check_class_range(y: torch.Tensor, classes: int, name: str, what: str, index: str, unit: str) -> None:
    """Integer targets must index the ``classes`` outputs (or be ``-100``, not counted): an
    out-of-range target is an IndexError in the cross-entropy, and never right for an arg-max."""
    bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= classes))
    if bool(bad.any()):
        wrong = y[bad]
        got = int(wrong[0]) if wrong.numel() == 1 else f"{int(wrong.min())} to {int(wrong.max())}"
        raise MetricError(
            f"metric '{name}': {what} outside the {classes} classes of the outputs, {wrong.numel()} of "
            f"{y.numel()} (got {got}); expected {index} 0..{classes - 1}, or -100 for {unit} not counted"
        )


def _counted_classes(out: torch.Tensor, batch, name: str):
    """Outputs ``[K, m, C]``, class targets ``[m]`` and count of the positions whose target is
    not ``-100`` (samples, or positions of sequence outputs)."""
    y = _class_targets(out, _targets(batch, name), name)
    keep = y != IGNORE_INDEX
    return out[:, keep], y[keep], keep.sum()


class CrossEntropy(Metric):
    """Mean cross-entropy over the samples (or positions of sequence outputs) whose target is
    not ``-100``."""

    name = "loss"

    def counted(self, out, batch):
        return _counted_classes(out, batch, self.name)

    def batch_sum(self, out, y):
        return _ce_sum(out, y)


def _ce_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``out[K, n, C]`` against ``y[n]``, per point."""
    K, n = out.shape[:2]
    logits = _float(out).reshape(K * n, out.shape[-1])
    return F.cross_entropy(logits, y.repeat(K), reduction="none").view(K, n).sum(1)


class Accuracy(Metric):
    """Fraction of the samples (or positions) whose target is not ``-100`` predicted right."""

    name = "acc"

    def counted(self, out, batch):
        return _counted_classes(out, batch, self.name)

    def batch_sum(self, out, y):
        return (out.argmax(-1) == y).sum(1)


class ErrorPercent(Accuracy):
    name = "err"

    def finalize(self, total, count, sq_norm=None):
        return 100.0 * (1.0 - total / count)


class MeanSquaredError(Metric):
    name = "mse"

    def batch_sum(self, out, y):
        K, n = out.shape[:2]
        if y.numel() != math.prod(out.shape[1:]):
            raise MetricError(
                f"metric 'mse': outputs {list(out.shape[1:])} and targets {list(y.shape)} do not match; "
                "expected as many target values as outputs"
            )
        diff = _float(out) - y.to(device=out.device, dtype=_float(out).dtype).reshape(1, n, *out.shape[2:])
        return diff.pow(2).reshape(K, n, -1).mean(-1).sum(1)


# ---------------------------------------------------------------------------- causal LM tokens
def _next_token(out: torch.Tensor, batch, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[K, m, V]`` and targets ``[m]`` of the counted next-token positions."""
    y = batch.target if batch.target is not None else batch.get("input_ids")
    if y is None:
        raise MetricError(
            f"metric '{name}' needs token targets: a batch with 'labels' or 'input_ids' (or (ids, labels) tuples)"
        )
    if out.dim() != 4 or tuple(out.shape[1:3]) != tuple(y.shape):
        raise MetricError(
            f"metric '{name}': outputs {list(out.shape[1:])} and targets {list(y.shape)} do not match; "
            f"expected logits [n, T, V] and token targets [n, T]"
        )
    y = y.to(out.device)
    keep = y[:, 1:] != IGNORE_INDEX
    mask = batch.get("attention_mask")
    if mask is not None:
        keep &= mask[:, 1:].to(device=out.device) != 0
    targets = y[:, 1:][keep]
    _check_class_range(targets, out.shape[-1], name, "counted token targets", "token ids", "positions")
    return out[:, :, :-1][:, keep], targets


class TokenLoss(Metric):
    """Next-token cross-entropy of a causal language model, averaged over counted tokens."""

    name = "token_loss"

    def counted(self, out, batch):
        logits, y = _next_token(out, batch, self.name)
        return logits, y, y.numel()

    def batch_sum(self, out, y):
        return _ce_sum(out, y)


class Perplexity(TokenLoss):
    """``exp(token_loss)``."""

    name = "perplexity"

    def finalize(self, total, count, sq_norm=None):
        return torch.exp(total / count)


class TokenAccuracy(Metric):
    """Fraction of counted next tokens whose arg-max prediction is right."""

    name = "token_acc"

    def counted(self, out, batch):
        logits, y = _next_token(out, batch, self.name)
        return logits, y, y.numel()

    def batch_sum(self, out, y):
        return (out.argmax(-1) == y).sum(1)


class BatchMetric(Metric):
    """Wraps ``fn(output[n, ...], batch) -> (sum, count)`` evaluated per point.

    Only ``fn`` knows which outputs it counts, so its sums are taken as they come: the
    non-finite policy of :meth:`Metric.batch_stats` is ``fn``'s to follow.
    """

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def batch_stats(self, out, batch):
        sums, counts = [], []
        for o in out:
            s, c = self.fn(o, batch)
            sums.append(torch.as_tensor(s, dtype=torch.float64, device=out.device).reshape(()))
            counts.append(torch.as_tensor(c, dtype=torch.float64, device=out.device).reshape(()))
        return torch.stack(sums), torch.stack(counts)


def batch_metric(fn: Callable, name: str | None = None) -> Metric:
    """A metric that sees the whole batch: ``fn(output, batch) -> (sum, count)``.

    ``output`` is one point's logits on the batch, ``batch`` a
    :class:`landscape.batches.Batch` (``batch.target``, ``batch.get("attention_mask")``,
    ``batch.raw``). The value at a point is the sum of ``sum`` over all batches divided by
    the sum of ``count``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> def weighted_err(out, batch):
    ...     w = batch.get("weight")
    ...     return ((out.argmax(-1) != batch.target).double() * w).sum(), w.sum()
    >>> ls.metrics.batch_metric(weighted_err).name
    'weighted_err'
    """
    return BatchMetric(fn, name)


class CallableMetric(Metric):
    """Wraps ``fn(output[n, ...], target[n]) -> scalar`` that averages over its batch (so it
    counts every sample of the batch)."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def batch_sum(self, out, y):
        n = out.shape[1]
        return torch.stack([torch.as_tensor(self.fn(o, y)).reshape(()) for o in out]) * n


class L2Regularized(Metric):
    """``base + weight_decay / 2 * ||w||^2`` over the parameters (not buffers)."""

    needs_weight_norm = True

    def __init__(self, weight_decay: float, base: Metric | str | Callable = "loss"):
        self.base = resolve_metrics([base])[0]
        self.weight_decay = float(weight_decay)
        self.name = f"{self.base.name}+l2"

    def batch_stats(self, out, batch):
        return self.base.batch_stats(out, batch)

    def finalize(self, total, count, sq_norm=None):
        if sq_norm is None:
            raise ValueError("l2_regularized needs the squared weight norms of the points")
        return self.base.finalize(total, count) + 0.5 * self.weight_decay * sq_norm


def l2_regularized(weight_decay: float, base: str | Callable = "loss") -> Metric:
    """The L2-regularised loss :math:`L(w) + \\frac{\\lambda}{2}\\lVert w\\rVert^2`.

    The norm covers the model's parameters (not BatchNorm running statistics) and is
    computed from the basis Gram matrix, so it costs nothing per point.

    Examples
    --------
    >>> import landscape as ls
    >>> m = ls.metrics.l2_regularized(5e-4)
    >>> m.name
    'loss+l2'
    """
    return L2Regularized(weight_decay, base)


BUILTIN_METRICS: dict[str, type[Metric]] = {
    "loss": CrossEntropy,
    "nll": CrossEntropy,
    "acc": Accuracy,
    "err": ErrorPercent,
    "mse": MeanSquaredError,
    "token_loss": TokenLoss,
    "perplexity": Perplexity,
    "token_acc": TokenAccuracy,
}


def resolve_metrics(metrics: Sequence[str | Callable | Metric]) -> list[Metric]:
    """Turn names, callables and :class:`Metric` objects into metrics with unique names."""
    if isinstance(metrics, (str, Metric)) or callable(metrics):
        metrics = [metrics]
    out: list[Metric] = []
    for m in metrics:
        if isinstance(m, Metric):
            out.append(m)
        elif isinstance(m, str):
            if m not in BUILTIN_METRICS:
                raise ValueError(f"unknown metric '{m}'; expected one of {sorted(BUILTIN_METRICS)} or a callable")
            metric = BUILTIN_METRICS[m]()
            metric.name = m
            out.append(metric)
        elif callable(m):
            out.append(CallableMetric(m))
        else:
            raise TypeError(f"metric should be a name, a callable or a Metric, got {type(m).__name__}")
    names = [m.name for m in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"metric names must be unique, got {sorted(dup)} more than once")
    if not out:
        raise ValueError("no metrics asked for; expected at least one (e.g. 'loss')")
    return out
