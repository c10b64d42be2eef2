"""The least squares of weight adjustment: a layer's weights from its inputs and wanted outputs.

:func:`weight_adjustment` solves :math:`[H | \\mathbf 1]^+ Y` (or its ridge form) in float64
for a batch of feature matrices; :func:`assemble` writes the solutions into copies of a set of
weights. Both are shared by the sequential construction (:mod:`landscape.connect.stack`,
:mod:`landscape.connect.adjust`) and the residual one (:mod:`landscape.connect.adjust_graph`).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from ..weights import Weights

__all__ = ["assemble", "weight_adjustment"]


def weight_adjustment(features: torch.Tensor, targets: torch.Tensor, *, bias: bool = True, ridge: float = 0.0):
    """Least-squares weights of a linear layer from its inputs and wanted outputs.

    .. math::

        [W \\,|\\, b]^\\top = \\operatorname*{arg\\,min}_{W, b}
        \\lVert [H \\,|\\, \\mathbf 1] [W | b]^\\top - Y \\rVert_F^2 + \\lambda \\lVert W \\rVert_F^2

    With ``ridge = 0`` this is the pseudo-inverse solution :math:`[H|\\mathbf 1]^+ Y` (the
    minimum-norm one when the system is under-determined), computed by
    :func:`scipy.linalg.lstsq` (``gelsy``, rank-revealing QR) on the CPU and
    :func:`torch.linalg.pinv` elsewhere; with ``ridge = lambda > 0`` it is
    :math:`(\\tilde H^\\top \\tilde H + \\lambda D)^{-1} \\tilde H^\\top Y` with
    :math:`\\tilde H = [H|\\mathbf 1]` and :math:`D` the identity except for a 0 on the bias
    (the bias is not penalised). Everything is solved in float64.

    Parameters
    ----------
    features : Tensor[..., N, m]
        Inputs :math:`H` of the layer for ``N`` samples (leading dims are a batch, e.g. ``t``).
    targets : Tensor[..., N, o]
        Wanted outputs :math:`Y`; broadcast against the batch of ``features``.
    bias : bool
        Fit a bias (a column of ones appended to ``H``).
    ridge : float
        :math:`\\lambda \\ge 0`.

    Returns
    -------
    W : Tensor[..., o, m]
        float64.
    b : Tensor[..., o] or None
        float64; None when ``bias=False``.

    Examples
    --------
    >>> H = torch.randn(50, 4, dtype=torch.float64)
    >>> W, b = weight_adjustment(H, H @ torch.ones(4, 2, dtype=torch.float64) + 3.0)
    >>> torch.allclose(W, torch.ones(2, 4, dtype=torch.float64)), torch.allclose(b, torch.full((2,), 3.0, dtype=torch.float64))
    (True, True)
    """
    ridge = float(ridge)
    if not np.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge should be a finite number >= 0, got {ridge!r}")
    H = features.to(torch.float64)
    Y = targets.to(torch.float64)
    if H.dim() < 2 or Y.dim() < 2 or H.shape[-2] != Y.shape[-2]:
        raise ValueError(
            f"features [..., N, m] and targets [..., N, o] should have the same N, got "
            f"{list(features.shape)} and {list(targets.shape)}"
        )
    m = H.shape[-1]
    if bias:
        H = torch.cat([H, H.new_ones(*H.shape[:-1], 1)], -1)
    batch = torch.broadcast_shapes(H.shape[:-2], Y.shape[:-2])
    H = H.expand(*batch, *H.shape[-2:])
    Y = Y.expand(*batch, *Y.shape[-2:])
    if ridge > 0:
        G = H.transpose(-1, -2) @ H
        d = torch.ones(H.shape[-1], dtype=torch.float64, device=H.device)
        if bias:
            d[-1] = 0.0
        G = G + ridge * torch.diag(d)
        sol = torch.linalg.solve(G, H.transpose(-1, -2) @ Y)
    elif H.device.type == "cpu":
        sol = _lstsq_cpu(H, Y)
    else:
        sol = torch.linalg.pinv(H) @ Y
    sol = sol.transpose(-1, -2)  # [..., o, m (+1)]
    if bias:
        return sol[..., :m].contiguous(), sol[..., m].contiguous()
    return sol.contiguous(), None


def _lstsq_cpu(H: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares ``H^+ Y`` for a batch ``H[..., N, m]``, ``Y[..., N, o]``.

    LAPACK ``gelsy`` (complete orthogonal factorization with column pivoting) through SciPy,
    one matrix at a time: the minimum-norm solution like ``gelsd`` (SVD) in 0.65 of its time
    (1437 x 513, one thread: 51 ms against 79 ms). Not ``torch.linalg.lstsq(driver="gelsy")``:
    in PyTorch 2.13 it returns wrong solutions, differing from call to call, when columns are
    zero (dead ReLU units), while SciPy's is exact.
    """
    from scipy.linalg import lstsq

    batch = H.shape[:-2]
    Hf = H.reshape(-1, *H.shape[-2:]).numpy()
    Yf = Y.reshape(-1, *Y.shape[-2:]).numpy()
    cond = float(np.finfo(np.float64).eps * max(H.shape[-2:]))
    out = [lstsq(h, y, cond=cond, lapack_driver="gelsy", check_finite=False)[0] for h, y in zip(Hf, Yf)]
    return torch.from_numpy(np.stack(out)).reshape(*batch, H.shape[-1], Y.shape[-1])


def assemble(base: Weights, updates: list[dict[str, torch.Tensor]]) -> list[Weights]:
    """Copies of ``base``, one per mapping of ``updates``, with those entries replaced.

    Each new value is cast to the entry's dtype and device, reshaped to its shape and cloned;
    the other entries are ``base``'s own tensors (shared, not copied).

    Examples
    --------
    >>> import landscape as ls
    >>> w = ls.Weights.from_module(torch.nn.Linear(3, 2))
    >>> (v,) = assemble(w, [{"bias": torch.zeros(2, dtype=torch.float64)}])
    >>> v["bias"].tolist(), v["bias"].dtype, v["weight"] is w["weight"]
    ([0.0, 0.0], torch.float32, True)
    """
    out = []
    for upd in updates:
        tensors = OrderedDict(base.tensors)
        for key, v in upd.items():
            tensors[key] = v.to(dtype=base[key].dtype, device=base[key].device).reshape(base[key].shape).clone()
        out.append(Weights(tensors, base.layout))
    return out
