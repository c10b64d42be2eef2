"""Ensembles at equal training budgets, as in Table 1 of the FGE paper (seeds 000, 004).

A budget ``B`` is the number of epochs that trains one network. Every method spends ``n B``
epochs for the ``nB`` column, and every member is stamped with the epochs spent when it
became available, so accuracy can be drawn against the budget:

* ``ind``: ``n`` networks from different seeds, ``B`` epochs each (cosine schedule).
* ``sse``: ``n`` snapshot-ensemble runs from fresh initialisations, ``B`` epochs each with
  ``cycles`` cosine restarts (a snapshot per cycle).
* ``fge``: ``n`` runs, each training a fresh network for ``(1 - f) B`` epochs and then
  running FGE for the remaining ``f B`` epochs with ``cycles`` cycles (a snapshot per cycle).
* ``swa``: ``n`` runs of the SWA repository's procedure (:func:`~landscape.ensembles.swa`):
  one optimizer for ``B`` epochs, the repository's schedule from ``lr`` down to ``swa_lr``
  over the first ``(1 - f) B`` epochs, then ``swa_lr`` while the weights after every epoch
  from ``(1 - f) B`` on are averaged; the members are the ``n`` SWA solutions. With
  ``swa_restart=True`` (the library's earlier procedure) each run trains ``(1 - f) B``
  epochs with the cosine schedule, then averages the ``f B`` epochs after it with a fresh
  optimizer.

Beyond ``1B`` the fast methods ensemble ``n`` independent runs, so every column spends the
same number of epochs; ``f`` is the share of the budget spent in the fast phase (the FGE
paper spends roughly the last fifth of the budget on FGE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..train import TrainBatches, fresh_copy, train_classifier
from ..weights import Weights

__all__ = ["METHODS", "Run", "run_at_budget"]

METHODS = ("ind", "sse", "fge", "swa")


@dataclass
class Run:
    """Ensemble members and the training budget (epochs) spent when each became available."""

    label: str
    members: list[Weights]
    budgets: list[float]
    attrs: dict = field(default_factory=dict)

    @property
    def budget(self) -> float:
        return float(self.budgets[-1]) if self.budgets else 0.0


def run_at_budget(
    model: nn.Module,
    data,
    method: str,
    *,
    budget_epochs: int,
    n: int = 1,
    first: int = 0,
    seed: int = 0,
    lr: float = 0.05,
    fast_fraction: float = 0.2,
    cycles: int = 4,
    fge_lr: tuple[float, float] | None = None,
    swa_lr: float | None = None,
    swa_restart: bool = False,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    loss=None,
    forward=None,
) -> Run:
    """Train ``method``'s ensemble at budget ``n B`` (``B = budget_epochs``).

    Parameters
    ----------
    model : nn.Module
        The architecture (its initial weights are not used: every run starts from a fresh
        initialisation seeded by ``seed``).
    data : TensorData, (x, y), DataLoader, Dataset or iterable of batches
        Training data (:class:`landscape.train.TrainBatches`; a loader's epoch is its own
        batches).
    method : {"ind", "sse", "fge", "swa"}
    budget_epochs : int
        ``B``, the epochs of one network.
    n : int
        The budget in units of ``B``.
    first : int
        Index of the first run: runs ``first .. first + n - 1`` are trained, and budgets
        count from ``first * B`` (so a long comparison can be trained, saved and resumed
        one run at a time; ``run_at_budget(..., n=1, first=j)`` is run ``j`` of ``n=J``).
    seed : int
        Seeds of run ``j`` are ``1000 * seed + j``.
    lr : float
        Peak rate of the ordinary training (``ind``, the first phase of ``fge``/``swa``) and
        of every SSE cycle.
    fast_fraction : float
        ``f``: the share of each budget spent by FGE or SWA after ordinary training.
    cycles : int
        SSE cycles per run, FGE cycles (snapshots) per run.
    fge_lr : (alpha1, alpha2), optional
        FGE's rates; default ``(lr / 2, lr / 100)``.
    swa_lr : float, optional
        SWA's constant rate; default ``lr / 2``.
    swa_restart : bool
        SWA after cosine training with a fresh optimizer (see above) instead of the
        repository's procedure.
    loss, forward : optional
        The training loss and model call of every phase (:func:`landscape.train.loss_of`).

    Returns
    -------
    Run
        Members in training order; ``budgets[m]`` is the epochs spent when member ``m`` was
        available.
    """
    fast = _check_budget_arguments(method, budget_epochs, n, first, cycles, fast_fraction)
    B, n = int(budget_epochs), int(n)
    steps = TrainBatches(data, batch_size)  # iterations per epoch, for the budgets
    opts = dict(momentum=momentum, weight_decay=weight_decay, batch_size=batch_size, loss=loss, forward=forward)
    rates = dict(lr=lr, cycles=cycles, fge_lr=fge_lr, swa_lr=swa_lr, swa_restart=swa_restart)
    members, budgets = [], []
    for j in range(int(first), int(first) + n):
        s = 1000 * int(seed) + j
        got, when = _train_run(method, fresh_copy(model, s), data, steps, B, fast, j * B, s, **rates, **opts)
        members += got
        budgets += when
    attrs = {
        "method": method,
        "budget-epochs": B,
        "n": n,
        "seed": int(seed),
        "lr": float(lr),
        "fast-fraction": float(fast_fraction),
        "cycles": int(cycles),
        "batch-size": int(batch_size),
    }
    if method == "swa":
        attrs["swa-procedure"] = "restart" if swa_restart else "repository"
    return Run(f"{method.upper() if method != 'ind' else 'Ind'} {n}B", members, budgets, attrs)


def _check_budget_arguments(method: str, budget_epochs, n, first, cycles, fast_fraction) -> int:
    """One ``ValueError`` line for each argument of :func:`run_at_budget` outside its range;
    returns the epochs of FGE's or SWA's phase, ``max(1, round(fast_fraction * B))``."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    for name, v in (("budget_epochs", budget_epochs), ("n", n), ("cycles", cycles)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} should be a positive integer, got {v!r}")
    if not 0 < fast_fraction < 1:
        raise ValueError(f"fast_fraction should be in (0, 1), got {fast_fraction!r}")
    B = int(budget_epochs)
    fast = max(1, round(fast_fraction * B))
    if method in ("fge", "swa") and fast >= B:
        raise ValueError(f"a budget of {B} epochs leaves no ordinary training before {method} ({fast} epochs)")
    if int(first) != first or first < 0:
        raise ValueError(f"first should be a non-negative integer, got {first!r}")
    return fast


def _train_run(
    method: str,
    net: nn.Module,
    data,
    steps: TrainBatches,
    B: int,
    fast: int,
    spent: int,
    seed: int,
    *,
    lr: float,
    cycles: int,
    fge_lr: tuple[float, float] | None,
    swa_lr: float | None,
    swa_restart: bool,
    **opts,
) -> tuple[list[Weights], list[float]]:
    """One run of :func:`run_at_budget`: ``net`` (freshly initialised) trained by ``method`` for
    ``B`` epochs with seed ``seed``, ``spent`` epochs into the budget; ``opts`` are the training
    settings every phase shares. Returns its members and the epochs spent when each was
    available."""
    from .fge import fge
    from .sse import sse
    from .swa import swa

    members, budgets = [], []
    if method == "ind":
        train_classifier(net, data, epochs=B, lr=lr, seed=seed, **opts)
        members.append(Weights.from_module(net))
        budgets.append(spent + B)
    elif method == "sse":
        run = sse(net, data, epochs=B, cycles=cycles, lr=lr, seed=seed, **opts)
        per_epoch = steps.steps_per_epoch()
        members += run.members
        budgets += [spent + i / per_epoch for i in run.iterations]
    elif method == "swa" and not swa_restart:
        rate = swa_lr if swa_lr is not None else lr / 2
        init = Weights.from_module(net)
        run = swa(net, init, data, epochs=B, swa_start=B - fast, lr=lr, swa_lr=rate, seed=seed, **opts)
        members.append(run.weights)
        budgets.append(spent + B)
    else:
        train_classifier(net, data, epochs=B - fast, lr=lr, seed=seed, **opts)
        start = Weights.from_module(net)
        if method == "fge":
            per_epoch = steps.stream_steps_per_epoch()  # FGE drops the incomplete batch
            c = 2 * max(1, (fast * per_epoch) // (2 * cycles))
            a1, a2 = fge_lr if fge_lr is not None else (lr / 2, lr / 100)
            run = fge(net, start, data, cycles=cycles, cycle_length=c, alpha1=a1, alpha2=a2, seed=seed, **opts)
            members += run.snapshots
            budgets += [spent + B - fast + i / per_epoch for i in run.iterations]
        else:
            rate = swa_lr if swa_lr is not None else lr / 2
            run = swa(net, start, data, epochs=fast, lr=rate, include_start=False, seed=seed, **opts)
            members.append(run.weights)
            budgets.append(spent + B)
    return members, budgets
