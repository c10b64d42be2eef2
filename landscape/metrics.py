"""Metrics computed by the evaluation engine at many weight points at once.

A metric turns the outputs of K points on a batch, ``Tensor[K, n, ...]``, into K partial
sums; the engine adds the sums over all batches in float64 and :meth:`Metric.finalize`
turns them into the value per point. Built-in names: ``loss`` (mean cross-entropy, nats),
``acc`` (accuracy, fraction), ``err`` (error, percent), ``mse``. Any callable
``fn(output, target) -> scalar`` that averages over its batch (``nn.MSELoss()``,
``F.cross_entropy``...) is accepted too, and :func:`l2_regularized` adds a weight penalty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Metric", "resolve_metrics", "l2_regularized", "BUILTIN_METRICS"]


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

    def finalize(self, total: torch.Tensor, count: int, sq_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Value per point from the float64 sums over the dataset."""
        return total / count


class CrossEntropy(Metric):
    name = "loss"

    def batch_sum(self, out, y):
        K, n = out.shape[:2]
        logits = (
            out.reshape(K * n, *out.shape[2:]).float()
            if out.dtype in (torch.bfloat16, torch.float16)
            else out.reshape(K * n, *out.shape[2:])
        )
        return F.cross_entropy(logits, y.repeat(K), reduction="none").view(K, n).sum(1)


class Accuracy(Metric):
    name = "acc"

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
        diff = out.float() - y.to(out.device).float().reshape(1, n, *out.shape[2:])
        return diff.pow(2).reshape(K, n, -1).mean(-1).sum(1)


class CallableMetric(Metric):
    """Wraps ``fn(output[n, ...], target[n]) -> scalar`` that averages over its batch."""

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

    def batch_sum(self, out, y):
        return self.base.batch_sum(out, y)

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
