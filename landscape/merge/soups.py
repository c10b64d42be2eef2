"""Greedy soups (Wortsman et al., 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time").

The ingredients are sorted by their held-out metric, best first; the soup starts as the best
one, and each next candidate is added only if the uniform average of the soup with it scores
better on the held-out data than the soup without it. "Better" is strictly better by default,
as the authors' ``main.py`` compares (``held_out_val_accuracy > best_val_acc_so_far``);
``accept="greater-equal"`` also adds a candidate that ties. The soup is therefore never worse
on the held-out data than its best ingredient.

Candidate soups are evaluated many per pass: while the soup does not change, the soups of it
with each of the next candidates are all evaluated in one engine pass (``lookahead`` of them,
default all), and the walk over them stops at the first one accepted, after which the next
pass starts from the new soup. The decisions are those of the one-at-a-time algorithm, with
one pass per accepted candidate (plus one) instead of one per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..evaluate import evaluate
from ..pointset import PointSet
from ..weights import Weights
from .vectors import check_same_layout

__all__ = ["GreedySoup", "greedy_soup", "higher_is_better"]

_ACCEPT = ("greater", "greater-equal")
_HIGHER = ("acc", "token_acc")


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised; losses, errors and perplexities minimised."""
    return metric in _HIGHER or metric.endswith("_acc")


@dataclass
class GreedySoup:
    """The outcome of :func:`greedy_soup`.

    Attributes
    ----------
    members : list of int
        The ingredients in the soup (indices into the ingredients), in the order added.
    order : list of int
        The ingredients sorted by their held-out metric, best first.
    individual : ndarray[n]
        Held-out metric of every ingredient.
    score : float
        Held-out metric of the greedy soup.
    history : list of dict
        ``{"candidate", "score", "accepted"}`` for every candidate tried, in order.
    metric : str
    passes : int
        Engine passes over the held-out data (the individual one included).
    """

    members: list[int]
    order: list[int]
    individual: np.ndarray
    score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "acc"
    passes: int = 0

    def coefficients(self, n: int) -> np.ndarray:
        """The soup's row over the ``n`` ingredients (1/|soup| on its members)."""
        row = np.zeros(n)
        row[self.members] = 1.0 / len(self.members)
        return row


def _better(new: float, best: float, higher: bool, accept: str) -> bool:
    if not np.isfinite(new):
        return False
    if accept == "greater-equal":
        return new >= best if higher else new <= best
    return new > best if higher else new < best


def greedy_soup(
    model: nn.Module,
    ingredients: Sequence[Weights],
    held_out,
    *,
    metric: str = "acc",
    accept: str = "greater",
    lookahead: int | None = None,
    progress: bool = False,
    **engine,
) -> GreedySoup:
    """The greedy soup of ``ingredients`` on ``held_out`` data.

    Parameters
    ----------
    model : nn.Module
        Structure of the network (never modified).
    ingredients : sequence of Weights
        Fine-tunes of one base (different seeds or hyperparameters), of one layout.
    held_out : data
        What the soup is selected on (any data :func:`landscape.evaluate` takes); report test
        metrics on other data.
    metric : str
        The selection metric (``acc`` by default, maximised; a loss is minimised).
    accept : {"greater", "greater-equal"}
        Add a candidate when the soup with it scores strictly better (the authors' code) or
        at least as well.
    lookahead : int, optional
        Candidate soups evaluated per pass (default all remaining).
    engine
        Options of :func:`landscape.evaluate` (``bn``, ``bn_data``, ``precision``,
        ``device``, ``batch_size``...).

    Returns
    -------
    GreedySoup

    Examples
    --------
    >>> import torch, landscape as ls
    >>> from landscape.merge import greedy_soup
    >>> _ = torch.manual_seed(0)
    >>> model = ls.build_model("mlp", {"in_features": 64, "widths": [8]})
    >>> nets = [ls.Weights.from_module(ls.build_model("mlp", {"in_features": 64, "widths": [8]})) for _ in range(3)]
    >>> soup = greedy_soup(model, nets, ls.load_data("digits", "test"))
    >>> bool(soup.score >= soup.individual.max())
    True
    """
    ingredients = list(ingredients)
    if not ingredients:
        raise ValueError("a greedy soup needs at least one ingredient, got none")
    if accept not in _ACCEPT:
        raise ValueError(f"accept {accept!r}; expected one of {list(_ACCEPT)}")
    if lookahead is not None and int(lookahead) < 1:
        raise ValueError(f"lookahead {lookahead!r} should be a positive number of candidate soups")
    check_same_layout(ingredients[0], ingredients[1:], "ingredient")
    n = len(ingredients)
    higher = higher_is_better(metric)
    opts = dict(engine, progress=progress)
    single = evaluate(model, PointSet.from_weights(ingredients), held_out, [metric], **opts)[metric]
    passes = 1
    key = -single if higher else single
    order = [int(i) for i in np.argsort(np.where(np.isfinite(key), key, np.inf), kind="stable")]
    members, best = [order[0]], float(single[order[0]])
    history: list[dict[str, Any]] = []
    remaining = order[1:]
    while remaining:
        batch = remaining[: int(lookahead)] if lookahead is not None else remaining
        C = np.zeros((len(batch), n))
        for r, c in enumerate(batch):
            C[r, [*members, c]] = 1.0 / (len(members) + 1)
        scores = evaluate(model, PointSet.from_weights(ingredients, C), held_out, [metric], **opts)[metric]
        passes += 1
        accepted_at = None
        for r, c in enumerate(batch):
            ok = _better(float(scores[r]), best, higher, accept)
            history.append({"candidate": c, "score": float(scores[r]), "accepted": ok})
            if ok:
                members.append(c)
                best = float(scores[r])
                accepted_at = r
                break
        remaining = remaining[(accepted_at if accepted_at is not None else len(batch) - 1) + 1 :]
    return GreedySoup(
        members=members,
        order=order,
        individual=np.asarray(single),
        score=best,
        history=history,
        metric=metric,
        passes=passes,
    )
