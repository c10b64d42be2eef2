"""Ensemble evaluation: members as points of the engine, averaged probabilities.

The members (any number of weight points: FGE or SSE snapshots, independent networks, the
samples of a variational network) are a :class:`~landscape.pointset.PointSet` with
identity coefficients, evaluated by :class:`landscape.evaluate.Engine` many members per
pass; the ensemble's prediction is the mean of the members' softmax probabilities. Reported:
accuracy, negative log-likelihood and expected calibration error of the ensemble, of every
member, and of the ensemble of the first ``m`` members for every ``m`` (accuracy as members
are added).

:func:`ensemble_token_metrics` does the same for causal language models: the ensemble's
next-token distribution is the mean of the members' softmax probabilities at every counted
position (the ``token_loss`` positions: logits at ``i`` predict the token at ``i + 1``), and
its token loss is the mean NLL of that mixture, summed in float64 batch by batch, so no
``[K, N, T, V]`` array is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..metrics import Metric, _float, _next_token

__all__ = [
    "EnsembleResult",
    "TokenEnsembleResult",
    "ensemble_token_metrics",
    "evaluate_ensemble",
    "expected_calibration_error",
]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: :math:`\\sum_b \\frac{|B_b|}{N} \\lvert \\mathrm{acc}(B_b) - \\mathrm{conf}(B_b) \\rvert`
    over ``bins`` equal-width bins of the top-class confidence in ``(0, 1]``.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 1]), bins=2), 4)
    0.0667
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


@dataclass
class EnsembleResult:
    """Ensemble metrics (accuracy as a fraction, NLL in nats, ECE)."""

    acc: float
    nll: float
    ece: float
    member_acc: np.ndarray  # [K]
    member_nll: np.ndarray  # [K]
    cumulative_acc: np.ndarray  # [K]: ensemble of the first m members
    cumulative_nll: np.ndarray  # [K]
    probabilities: np.ndarray  # [N, C], the ensemble's


def _scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    acc = float((p.argmax(-1) == y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())
    return acc, nll


class _Targets(Metric):
    """Records the targets of every batch the engine evaluates, per pass over the data (the
    value it reports is 0); the ensemble's scores need them in the order of the probabilities."""

    name = "__targets__"

    def __init__(self, src):
        self.src = src
        self.by_pass: dict[int, list[torch.Tensor]] = {}

    def batch_stats(self, out, batch):
        if batch.target is None:
            raise ValueError(
                "ensemble evaluation needs class targets but a batch has none (a dict batch needs 'labels', a "
                "tuple batch a second element)"
            )
        y = batch.target
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"ensemble evaluation needs one integer class label per sample, got {y.dtype} targets {list(y.shape)}"
            )
        self.by_pass.setdefault(self.src.passes, []).append(y.detach().cpu())
        return torch.zeros(out.shape[0], dtype=torch.float64, device=out.device), batch.count

    def latest(self) -> torch.Tensor:
        return torch.cat(self.by_pass[max(self.by_pass)])


def evaluate_ensemble(
    model: nn.Module,
    members,
    data,
    *,
    bn: str = "running",
    bn_data=None,
    precision: str = "fp32",
    device=None,
    bins: int = 15,
    forward=None,
    progress: bool = False,
) -> EnsembleResult:
    """Evaluate an ensemble of weight points on ``data`` through the engine.

    Parameters
    ----------
    model : nn.Module
        The architecture (a classifier: outputs are logits).
    members : PointSet, or sequence of Weights
        The members; a sequence becomes a PointSet with identity coefficients.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Streamed through the engine; the targets come from its batches (in a fixed order:
        a loader that shuffles differently on every pass is refused).
    bn, bn_data, precision, device
        As for :func:`landscape.evaluate` (``bn="recompute"`` for snapshots whose BatchNorm
        statistics were not updated).
    bins : int
        Bins of the expected calibration error.
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.

    Returns
    -------
    EnsembleResult
    """
    from ..batches import as_source
    from ..evaluate import Engine
    from ..pointset import PointSet

    pts = members if isinstance(members, PointSet) else PointSet.explicit(list(members))
    if pts.K < 1:
        raise ValueError("an ensemble needs at least one member")
    src = as_source(data)
    targets = _Targets(src)
    engine = Engine(model, pts, ("loss", "acc", targets), bn=bn, precision=precision, device=device, forward=forward)
    engine.keep_probabilities = True
    labels: list[torch.Tensor] = []

    def on_chunk(idx, vals):  # the targets of the pass that gave this chunk's probabilities
        y_chunk = targets.latest()
        if labels and not torch.equal(y_chunk, labels[0]):
            raise ValueError(
                "the data gave its samples in a different order on another pass (a DataLoader with "
                "shuffle=True?); evaluate ensembles on data in a fixed order"
            )
        labels.append(y_chunk)
        targets.by_pass.clear()

    engine.run(src, bn_data=bn_data, progress=progress, desc="ensemble", on_chunk=on_chunk)
    P = engine.probabilities  # [K, N, C]
    y = labels[0].numpy()
    member = [_scores(P[k], y) for k in range(pts.K)]
    cum = np.cumsum(P, axis=0) / np.arange(1, pts.K + 1)[:, None, None]
    cumulative = [_scores(cum[k], y) for k in range(pts.K)]
    ens = cum[-1]
    acc, nll = _scores(ens, y)
    return EnsembleResult(
        acc=acc,
        nll=nll,
        ece=expected_calibration_error(ens, y, bins),
        member_acc=np.array([a for a, _ in member]),
        member_nll=np.array([n for _, n in member]),
        cumulative_acc=np.array([a for a, _ in cumulative]),
        cumulative_nll=np.array([n for _, n in cumulative]),
        probabilities=ens,
    )


# ---------------------------------------------------------------------------- causal LM tokens
@dataclass
class TokenEnsembleResult:
    """Next-token metrics of an ensemble of causal language models (nats per token).

    ``token_loss`` is the mean NLL of the averaged next-token probabilities,
    :math:`-\\frac{1}{M}\\sum_i \\log \\frac{1}{K}\\sum_k p_k(y_i \\mid x_{<i})` over the ``tokens``
    counted positions; ``perplexity`` is its exp; ``token_acc`` the fraction of positions whose
    arg-max of the averaged probabilities is right. ``member_*`` are each member's own
    ``token_loss``/``perplexity``/``token_acc``; ``cumulative_*[m - 1]`` those of the ensemble of
    the first ``m`` members (``cumulative_*[-1]`` is the whole ensemble).
    """

    token_loss: float
    perplexity: float
    token_acc: float
    tokens: int
    member_token_loss: np.ndarray  # [K]
    member_perplexity: np.ndarray  # [K]
    member_token_acc: np.ndarray  # [K]
    cumulative_token_loss: np.ndarray  # [K]
    cumulative_perplexity: np.ndarray  # [K]
    cumulative_token_acc: np.ndarray  # [K]


class _TokenEnsembleStats(Metric):
    """Float64 sums over the counted next-token positions of all K members of one pass: the
    members' NLLs and hits, and those of the ensembles of the first m members. The engine must
    hand it every member at once (one chunk of K points); the value it reports per point is the
    member's summed NLL (so its finalized value is the member's token loss)."""

    name = "__token_ensemble__"

    def __init__(self, K: int, src):
        self.K, self.src = K, src
        self.pass_id = None

    def _reset(self, device) -> None:
        z = lambda: torch.zeros(self.K, dtype=torch.float64, device=device)  # noqa: E731
        self.member_nll, self.member_hits, self.cum_nll, self.cum_hits = z(), z(), z(), z()
        self.tokens = 0

    def batch_stats(self, out, batch):
        if out.shape[0] != self.K:
            raise RuntimeError(
                f"ensemble_token_metrics needs all {self.K} members in one pass but the engine evaluated "
                f"{out.shape[0]}; raise max_memory (or lower batch_size)"
            )
        if self.pass_id != self.src.passes:  # a new pass (or a retry with smaller batches): start over
            self.pass_id = self.src.passes
            self._reset(out.device)
        logits, y = _next_token(out, batch, "ensemble_token_metrics")  # [K, m, V], [m]
        logp = torch.log_softmax(_float(logits), -1)
        target = logp.gather(-1, y.expand(self.K, -1).unsqueeze(-1)).squeeze(-1).to(torch.float64)  # [K, m]
        member_nll = -target.sum(1)
        self.member_nll += member_nll
        self.member_hits += (logp.argmax(-1) == y).sum(1).to(torch.float64)
        # the ensemble of the first m members: log of the mean of their probabilities of the target
        m = torch.arange(1, self.K + 1, dtype=torch.float64, device=out.device)
        self.cum_nll -= (torch.logcumsumexp(target, 0) - torch.log(m)[:, None]).sum(1)
        total = torch.zeros(logp.shape[1:], dtype=torch.float64, device=out.device)  # [m, V]
        for k in range(self.K):
            total += logp[k].to(torch.float64).exp()
            self.cum_hits[k] += (total.argmax(-1) == y).sum().to(torch.float64)
        self.tokens += int(y.numel())
        return member_nll, y.numel()


def ensemble_token_metrics(
    model: nn.Module,
    members,
    data,
    *,
    precision: str = "fp32",
    device=None,
    batch_size: int | None = None,
    max_memory=None,
    forward=None,
    progress: bool = False,
) -> TokenEnsembleResult:
    """Token loss, perplexity and accuracy of an ensemble of causal language models.

    The members are evaluated together, one pass over ``data`` (every batch read once, all
    members on it), through :class:`landscape.evaluate.Engine`; at every counted next-token
    position (as for the ``token_loss`` metric: targets ``-100`` and positions whose
    ``attention_mask`` is 0 are skipped) the members' probabilities are averaged. Sums are
    float64; memory holds one batch's logits of the K members, never the data set's.

    Parameters
    ----------
    model : nn.Module
        The architecture (outputs are logits ``[n, T, V]``, or objects with ``.logits``).
    members : PointSet, or sequence of Weights
        The members; a sequence becomes a PointSet with identity coefficients.
    data : TensorData, (ids, labels), DataLoader, Dataset or iterable of batches
        Token batches (tuple batches ``(ids, labels)``, or dicts with ``input_ids``,
        ``attention_mask``, ``labels``).
    precision, device, batch_size, max_memory, forward
        As for :func:`landscape.evaluate`.

    Returns
    -------
    TokenEnsembleResult
    """
    from ..batches import as_source
    from ..evaluate import Engine
    from ..pointset import PointSet

    pts = members if isinstance(members, PointSet) else PointSet.explicit(list(members))
    K = pts.K
    if K < 1:
        raise ValueError("an ensemble needs at least one member")
    src = as_source(data)
    stats = _TokenEnsembleStats(K, src)
    engine = Engine(
        model,
        pts,
        (stats,),
        precision=precision,
        device=device,
        batch_size=batch_size,
        max_memory=max_memory,
        points_per_pass=K,
        forward=forward,
    )
    if engine.prepare(src) < K:
        raise RuntimeError(
            f"ensemble_token_metrics needs all {K} members in one pass but the memory budget allows "
            f"{engine.points_per_pass}; raise max_memory (or lower batch_size)"
        )
    engine.run(src, progress=progress, desc="token ensemble")
    n = getattr(stats, "tokens", 0)
    if n == 0:
        raise ValueError("the data has no counted next-token position (every target is -100 or masked)")

    def per(v):
        return (v / n).cpu().numpy()

    member_loss, cum_loss = per(stats.member_nll), per(stats.cum_nll)
    member_acc, cum_acc = per(stats.member_hits), per(stats.cum_hits)
    return TokenEnsembleResult(
        token_loss=float(cum_loss[-1]),
        perplexity=float(np.exp(cum_loss[-1])),
        token_acc=float(cum_acc[-1]),
        tokens=n,
        member_token_loss=member_loss,
        member_perplexity=np.exp(member_loss),
        member_token_acc=member_acc,
        cumulative_token_loss=cum_loss,
        cumulative_perplexity=np.exp(cum_loss),
        cumulative_token_acc=cum_acc,
    )
