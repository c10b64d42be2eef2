"""WA-ensembles: independently trained networks made to share one backbone.

Anokhin & Yarotsky (ICML 2020): take ``m`` independently trained networks, keep the lower
layers (the *backbone*) of a reference network, and move every other network onto it with
weight adjustment: member ``j`` becomes the transitional network
:math:`\\Theta_{k}^{j,\\mathrm{ref}}` (the reference's layers below ``k``, a layer ``k``
fitted by least squares to reproduce member ``j``'s layer-``k`` output from the reference's
features, member ``j``'s layers above ``k``; see
:func:`~landscape.connect.transitional_network`). The ensemble averages the members'
predicted probabilities; the backbone is computed and stored once. ``WA(n)`` keeps ``n``
layers in each member's own head (``k = L - n + 1`` for ``L`` layers); ``WA(L)`` shares
nothing and is the ordinary ensemble of independent networks.

Networks: plain MLP stacks (:func:`~landscape.connect.linear_chain`) and sequential
convnets (Conv2d/Linear layers with BatchNorm, activations, pooling and flatten between
them). BatchNorm statistics are recomputed for every member on the fitting batch ``X``
(the shared backbone's once, each head's on the backbone's features), so predictions do
not depend on the evaluated batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import as_source, batch_input, first_inputs
from ..weights import Weights
from .stack import LayerStack

__all__ = ["WAEnsemble", "WAEnsembleCurve", "wa_ensemble", "wa_ensemble_curve"]

KIND = "wa-ensemble"


@dataclass
class WAEnsemble:
    """Members sharing the reference's first ``L - head_layers`` layers.

    Attributes
    ----------
    members : list of Weights
        ``members[0]`` is the reference; the others carry the reference's backbone.
    head_layers : int
        Layers of each member's own head (``L``: no shared layer, the ordinary ensemble).
    """

    model: nn.Module
    members: list[Weights]
    head_layers: int
    _stack: LayerStack = field(repr=False, default=None)
    sample: torch.Tensor | None = field(repr=False, default=None)  # one input, for conv costs
    #: per member, BatchNorm name -> (mean, var) from the fitting batch; None: batch statistics
    bn_stats: list[dict] | None = field(repr=False, default=None)

    def __post_init__(self) -> None:
        if self._stack is None:
            self._stack = LayerStack(self.model)

    def recompute_bn(self, X) -> WAEnsemble:
        """Record every member's BatchNorm statistics on ``X`` (the backbone's from the
        reference, each head's on the backbone's features); later predictions use them."""
        record = [dict() for _ in self.members]
        self.bn_stats = None
        self.logits(X, record=record)
        self.bn_stats = record
        return self

    def subset(self, m: int) -> WAEnsemble:
        """The first ``m`` members (with their statistics)."""
        stats = None if self.bn_stats is None else self.bn_stats[:m]
        return WAEnsemble(self.model, self.members[:m], self.head_layers, self._stack, self.sample, stats)

    @property
    def n_layers(self) -> int:
        return self._stack.n

    @property
    def shared_layers(self) -> int:
        return self.n_layers - self.head_layers

    @torch.no_grad()
    def logits(self, x, record: list[dict] | None = None) -> torch.Tensor:
        """Every member's logits ``Tensor[m, N, C]`` (float64); the backbone runs once."""
        st = self._stack
        stats = self.bn_stats or [None] * len(self.members)
        rec = record or [None] * len(self.members)
        h = st.input(x)
        ref = self.members[0]
        for k in range(1, self.shared_layers + 1):
            h = st.act(k, st.linear(ref, k, h), ref, stats[0], rec[0])
        out = []
        for j, w in enumerate(self.members):
            z = h
            for k in range(self.shared_layers + 1, st.n + 1):
                z = st.linear(w, k, z)
                if k < st.n:
                    z = st.act(k, z, w, stats[j], rec[j])
            out.append(z)
        return torch.stack(out)

    def probabilities(self, x) -> torch.Tensor:
        """The ensemble's prediction: the mean of the members' softmax, ``Tensor[N, C]``."""
        return torch.softmax(self.logits(x), -1).mean(0)

    def evaluate(self, data, batch_size: int = 4096) -> dict[str, Any]:
        """``acc`` and ``nll`` of the ensemble and ``member_acc`` of each member on ``data``
        (any data :func:`landscape.batches.as_source` reads, in batches of at most
        ``batch_size``; each batch needs one input tensor and class targets)."""
        correct, nll, member, n = 0.0, 0.0, np.zeros(len(self.members)), 0
        for batch in as_source(data).batches(batch_size):
            xb = batch_input(batch, "WA-ensemble evaluation")
            if batch.target is None:
                raise ValueError("WA-ensemble evaluation needs class targets; a batch has none")
            yb = batch.target.long()
            logits = self.logits(xb)
            p = torch.softmax(logits, -1).mean(0)
            correct += float((p.argmax(-1) == yb).sum())
            nll += float(-torch.log(p[torch.arange(len(yb)), yb].clamp_min(1e-300)).sum())
            member += (logits.argmax(-1) == yb).sum(1).double().numpy()
            n += len(yb)
        return {"acc": correct / n, "nll": nll / n, "member_acc": (member / n).tolist()}

    def cost(self) -> dict[str, int]:
        """Parameters stored and multiply-adds per sample, against the ordinary ensemble of
        the same members (weighted layers only: a convolution costs its weights times its
        output positions; activations, BatchNorm and pooling are not counted)."""
        st, m = self._stack, len(self.members)
        positions = [1] * st.n
        if not st.mlp:
            if self.sample is None:
                raise ValueError("cost() of a convolutional WA-ensemble needs the ensemble built by wa_ensemble")
            h = st.input(self.sample[:1])
            for k in range(1, st.n + 1):
                z = st.linear(self.members[0], k, h)
                positions[k - 1] = int(z[0, 0].numel()) if z.dim() > 2 else 1
                h = st.act(k, z, self.members[0]) if k < st.n else z
        per_layer = []
        for k in range(1, st.n + 1):
            w = self.members[0][f"{st.layer(k)}.weight"]
            n_bias = w.shape[0] if st.has_bias(self.members[0], k) else 0
            per_layer.append((w.numel() + n_bias, w.numel() * positions[k - 1]))
        shared = per_layer[: self.shared_layers]
        head = per_layer[self.shared_layers :]
        params = sum(p for p, _ in shared) + m * sum(p for p, _ in head)
        macs = sum(c for _, c in shared) + m * sum(c for _, c in head)
        return {
            "params": params,
            "params_ordinary": m * sum(p for p, _ in per_layer),
            "macs": macs,
            "macs_ordinary": m * sum(c for _, c in per_layer),
        }


def wa_ensemble(
    model: nn.Module,
    members: Sequence[Weights],
    X,
    head_layers: int,
    *,
    ridge: float = 0.0,
) -> WAEnsemble:
    """Move ``members[1:]`` onto the backbone of ``members[0]`` by weight adjustment.

    Parameters
    ----------
    model : nn.Module
        A plain MLP stack with parameter-free activations, or a sequential convnet.
    members : sequence of Weights
        Independently trained networks; the first is the reference whose backbone is kept.
    X : Tensor[N, ...], TensorData, DataLoader, Dataset or iterable of batches
        The batch the adjusted layers are fitted on (more samples than the widest layer's
        inputs for an exact fit), and where every member's BatchNorm statistics are
        recomputed; of data, all its inputs (:func:`landscape.batches.first_inputs`).
    head_layers : int
        ``1..L``: layers of each member's own head. The first ``L - head_layers`` layers are
        the reference's; layer ``L - head_layers + 1`` of member ``j`` is refitted to
        reproduce member ``j``'s output there from the reference's features. ``L`` keeps the
        members as they are (the ordinary ensemble).
    ridge : float
        See :func:`~landscape.connect.weight_adjustment`.

    Returns
    -------
    WAEnsemble
    """
    members = list(members)
    if not members:
        raise ValueError("members is empty; expected at least one network")
    st = LayerStack(model)
    for w in members[1:]:
        LayerStack.for_pair(members[0], w, model)
    if int(head_layers) != head_layers or not 1 <= head_layers <= st.n:
        raise ValueError(f"head_layers should be an integer in 1..{st.n} for this model, got {head_layers!r}")
    head_layers = int(head_layers)
    k = st.n - head_layers + 1  # the refitted layer
    if not torch.is_tensor(X) and not isinstance(X, np.ndarray):
        X = first_inputs(X, what="weight adjustment")
    sample = torch.as_tensor(X)[:1]
    if k == 1:
        return WAEnsemble(model, members, head_layers, st, sample).recompute_bn(X)
    h0 = st.input(X)
    ref = members[0]
    moved = [ref] + [st.transitional(w, ref, k, h0, ridge) for w in members[1:]]
    return WAEnsemble(model, moved, head_layers, st, sample).recompute_bn(X)


@dataclass
class WAEnsembleCurve:
    """Ensemble accuracy against the number of members, per head size."""

    head_layers: list[int]
    sizes: list[int]
    acc: np.ndarray  # [n_heads, n_sizes]
    nll: np.ndarray
    member_acc: list[list[float]]  # per head: accuracy of each (adjusted) member
    cost: list[dict[str, int]]  # per head, for the largest ensemble
    n_layers: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def markdown(self, digits: int = 2) -> str:
        """One row per head size (``WA(n)``; ``Ind`` for the ordinary ensemble), one column per
        ensemble size, accuracy in %; the last columns give parameters and multiply-adds of
        the largest ensemble relative to the ordinary one."""
        head = "| Ensemble | " + " | ".join(f"m={m}" for m in self.sizes) + " | params | compute |"
        lines = [head, "|---|" + "---:|" * (len(self.sizes) + 2)]
        for i, n in enumerate(self.head_layers):
            name = "Ind" if n == self.n_layers else f"WA({n})"
            c = self.cost[i]
            cells = [f"{100 * a:.{digits}f}" for a in self.acc[i]]
            cells += [f"{c['params'] / c['params_ordinary']:.2f}x", f"{c['macs'] / c['macs_ordinary']:.2f}x"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> str:
        """One result file of kind ``"wa-ensemble"``: grid ``[n_heads, n_sizes]``, metrics
        ``acc`` and ``nll``; arrays ``head_layers``, ``sizes``; attrs ``cost``,
        ``member_acc``, ``table``."""
        from ..io import create_result

        attrs = dict(self.attrs)
        attrs.update(
            n_layers=self.n_layers,
            cost=[dict(c) for c in self.cost],
            member_acc=[list(map(float, m)) for m in self.member_acc],
            table=self.markdown(),
        )
        with create_result(
            path,
            kind=KIND,
            shape=self.acc.shape,
            metrics=["acc", "nll"],
            attrs=attrs,
            arrays={"head_layers": np.asarray(self.head_layers, np.int64), "sizes": np.asarray(self.sizes, np.int64)},
            force=force,
        ) as rf:
            cells = list(range(self.acc.size))
            rf.write_cells(cells, {"acc": self.acc.reshape(-1), "nll": self.nll.reshape(-1)})
        return os.fspath(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WAEnsembleCurve:
        """Read a file written by :meth:`save` (:func:`landscape.io.read_wa_ensemble`)."""
        from ..io import read_wa_ensemble

        return cls(**read_wa_ensemble(path))


def wa_ensemble_curve(
    model: nn.Module,
    members: Sequence[Weights],
    X,
    data,
    *,
    head_layers: Sequence[int] | None = None,
    sizes: Sequence[int] | None = None,
    ridge: float = 0.0,
    progress: bool = False,
) -> WAEnsembleCurve:
    """Accuracy of WA-ensembles of the first ``m`` members for every head size.

    Parameters
    ----------
    model, members, X, ridge
        See :func:`wa_ensemble`.
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Where the ensembles are evaluated (a held-out split).
    head_layers : sequence of int, optional
        Head sizes (default ``1..L``; ``L`` is the ordinary ensemble).
    sizes : sequence of int, optional
        Ensemble sizes ``m`` (default ``1..len(members)``); the first ``m`` members.

    Returns
    -------
    WAEnsembleCurve
    """
    st = LayerStack(model)
    if not torch.is_tensor(X) and not isinstance(X, np.ndarray):
        X = first_inputs(X, what="weight adjustment")  # read once for every head size
    heads = list(range(1, st.n + 1)) if head_layers is None else [int(n) for n in head_layers]
    sizes = list(range(1, len(members) + 1)) if sizes is None else [int(m) for m in sizes]
    if not sizes or min(sizes) < 1 or max(sizes) > len(members):
        raise ValueError(f"sizes should be in 1..{len(members)}, got {sizes}")
    acc = np.full((len(heads), len(sizes)), np.nan)
    nll = np.full_like(acc, np.nan)
    member_acc, cost = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(heads), desc="WA-ensembles", unit="head")
    for i, n in enumerate(heads):
        ens = wa_ensemble(model, members, X, n, ridge=ridge)
        for j, m in enumerate(sizes):
            r = ens.subset(m).evaluate(data)
            acc[i, j], nll[i, j] = r["acc"], r["nll"]
        member_acc.append(ens.evaluate(data)["member_acc"])
        cost.append(ens.cost())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return WAEnsembleCurve(heads, sizes, acc, nll, member_acc, cost, st.n, attrs={"ridge": float(ridge)})
