"""The normalizing flows of the Flow and Bijection connections: :class:`RealNVP` and :class:`IAF`.

Both are bijections of ``R^D`` (:class:`Flow`): a fixed Gaussian base transform (per-dimension
standardisation, optionally whitening by a shrunk correlation matrix) followed by trainable
layers that start at the identity. ``forward`` maps data to latent with the log-determinant,
``inverse`` maps back. References: L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation
using Real NVP", ICLR 2017; D. P. Kingma et al., "Improved variational inference with inverse
autoregressive flow", NeurIPS 2016; M. Germain et al., "MADE: masked autoencoder for
distribution estimation", ICML 2015.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_int

__all__ = ["DTYPES", "FLOW_KINDS", "IAF", "Flow", "RealNVP"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
    last = nn.Linear(hidden, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    net.append(last)
    return net


class Flow(nn.Module):
    """A bijection of ``R^D`` with a fixed per-dimension standardisation in front.

    Subclasses provide ``self.layers`` (each with ``forward(u) -> (v, logdet)`` in the
    data -> latent direction and ``inverse(v) -> u``).
    """

    kind = ""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = check_int(dim, "dim", 1)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))
        self.register_buffer("chol", torch.eye(self.dim))
        self.layers = nn.ModuleList()

    def _check(self, x: Tensor, what: str) -> Tensor:
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.dim:
            got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{type(self).__name__}.{what} takes a tensor [N, {self.dim}], got {got}")
        if x.dtype != self.mean.dtype:
            raise ValueError(
                f"{type(self).__name__}.{what} takes {self.mean.dtype} tensors (the flow's dtype), got {x.dtype}"
            )
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent, :math:`z = \\nu(x)`.

        Parameters
        ----------
        x : Tensor[N, D]

        Returns
        -------
        z : Tensor[N, D]
        logdet : Tensor[N]
            :math:`\\log|\\det \\partial\\nu / \\partial x|`, including the base transform's
            (:meth:`base`).
        """
        self._check(x, "forward")
        u, logdet = self.base(x)
        logdet = logdet.expand(x.shape[0])
        for layer in self.layers:
            u, ld = layer(u)
            logdet = logdet + ld
        return u, logdet

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to data, :math:`x = \\nu^{-1}(z)`.

        Parameters
        ----------
        z : Tensor[N, D]

        Returns
        -------
        Tensor[N, D]
        """
        self._check(z, "inverse")
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return self.base_inverse(z)

    def base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian base transform alone, :math:`u = L^{-1} (x - \\mu) / \\sigma`.

        :math:`\\mu` and :math:`\\sigma` are the buffers ``mean`` and ``std``, :math:`L` the
        lower triangular buffer ``chol`` (the Cholesky factor of the correlation matrix
        :func:`fit_flow` estimates with ``base="gaussian"``; the identity otherwise, which
        makes this the per-dimension standardisation).

        Parameters
        ----------
        x : Tensor[N, D]

        Returns
        -------
        u : Tensor[N, D]
        logdet : Tensor[]
            :math:`-\\sum_d \\log \\sigma_d - \\sum_d \\log L_{dd}` (the same for every row).
        """
        u = (x - self.mean) / self.std
        logdet = -torch.log(self.std).sum()
        if not self._plain_base():
            u = torch.linalg.solve_triangular(self.chol.T, u, upper=True, left=False)
            logdet = logdet - torch.log(torch.diagonal(self.chol)).sum()
        return u, logdet

    def base_inverse(self, u: Tensor) -> Tensor:
        """Inverse of :meth:`base`: :math:`x = \\mu + \\sigma \\odot (L u)`."""
        if not self._plain_base():
            u = u @ self.chol.T
        return u * self.std + self.mean

    def _plain_base(self) -> bool:
        return bool(torch.equal(self.chol, torch.eye(self.dim, dtype=self.chol.dtype, device=self.chol.device)))

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density under a standard normal base.

        .. math::

            \\log p(x) = -\\tfrac12 \\|\\nu(x)\\|^2 - \\tfrac D2 \\log 2\\pi
            + \\log|\\det \\partial\\nu / \\partial x|

        Parameters
        ----------
        x : Tensor[N, D]

        Returns
        -------
        Tensor[N]
        """
        z, logdet = self(x)
        return -0.5 * z.pow(2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet

    def config(self) -> dict[str, int]:
        """Constructor arguments (what :func:`save_connection_model` stores)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())


class _AffineCoupling(nn.Module):
    """:math:`v = m \\odot u + (1-m) \\odot (u\\, e^{s(m \\odot u)} + b(m \\odot u))`."""

    def __init__(self, dim: int, hidden: int, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.get_default_dtype()), persistent=False)
        self.net = _mlp(dim, hidden, 2 * dim)
        self.scale = nn.Parameter(torch.ones(dim))

    def _shift_log_scale(self, u: Tensor) -> tuple[Tensor, Tensor]:
        free = 1 - self.mask
        raw, shift = self.net(u * self.mask).chunk(2, dim=1)
        return self.scale * torch.tanh(raw) * free, shift * free

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        s, b = self._shift_log_scale(u)
        return u * torch.exp(s) + b, s.sum(1)

    def inverse(self, v: Tensor) -> Tensor:
        s, b = self._shift_log_scale(v)  # the conditioning dimensions are unchanged
        return (v - b) * torch.exp(-s)


class RealNVP(Flow):
    """RealNVP flow (Dinh et al. 2017): affine couplings with alternating masks.

    Coupling ``k`` keeps the dimensions selected by its mask and transforms the others,

    .. math::

        v = u_{m} \\oplus \\bigl(u_{\\bar m}\\, e^{s(u_m)} + b(u_m)\\bigr), \\qquad
        s = \\alpha \\tanh(\\cdot),

    with MLP conditioners and a learnable per-dimension bound :math:`\\alpha` (initially 1).
    Masks cycle through checkerboard, its complement, first half, second half. The last
    layer of every conditioner starts at zero, so an untrained flow is the standardisation
    :math:`(x - \\mu)/\\sigma` alone (the identity with the default ``mean = 0``, ``std = 1``).

    Parameters
    ----------
    dim : int
        Dimension ``D`` of the vectors.
    n_couplings : int
        Number of coupling layers.
    hidden : int
        Width of the two hidden layers of each conditioner.
    seed : int
        Seed of the initial weights (the global random state is left alone).

    Examples
    --------
    >>> import torch
    >>> flow = RealNVP(3, n_couplings=2, hidden=8)
    >>> x = torch.randn(5, 3)
    >>> z, logdet = flow(x)
    >>> torch.equal(z, x), logdet.tolist()
    (True, [0.0, 0.0, 0.0, 0.0, 0.0])
    """

    kind = "realnvp"

    def __init__(self, dim: int, n_couplings: int = 4, hidden: int = 64, seed: int = 0):
        super().__init__(dim)
        self.n_couplings = check_int(n_couplings, "n_couplings", 1)
        self.hidden = check_int(hidden, "hidden", 1)
        self.seed = check_int(seed, "seed", 0)
        idx = torch.arange(self.dim)
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random state is kept
            torch.manual_seed(self.seed)
            for k in range(self.n_couplings):
                keep = idx % 2 == 0 if (k // 2) % 2 == 0 else idx < (self.dim + 1) // 2
                if k % 2:
                    keep = ~keep
                self.layers.append(_AffineCoupling(self.dim, self.hidden, keep))

    def config(self) -> dict[str, int]:
        return {"dim": self.dim, "n_couplings": self.n_couplings, "hidden": self.hidden, "seed": self.seed}


class _MaskedLinear(nn.Linear):
    def __init__(self, d_in: int, d_out: int, mask: Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _IAFStep(nn.Module):
    """One IAF layer: :math:`u = v\\, e^{s(v)} + m(v)` (latent -> data), with MADE outputs
    ``s_i, m_i`` depending on the variables before ``i`` in the layer's order only."""

    def __init__(self, dim: int, hidden: int, order: Tensor):
        super().__init__()
        self.dim = dim
        d_in = order  # degrees 1..D
        if dim > 1:
            d_h = torch.arange(hidden) % (dim - 1) + 1
        else:
            d_h = torch.zeros(hidden, dtype=torch.long)  # no inputs: constant outputs
        m1 = d_h[:, None] >= d_in[None, :]
        m2 = d_h[:, None] >= d_h[None, :]
        m3 = d_in[:, None] > d_h[None, :]
        self.net = nn.Sequential(
            _MaskedLinear(dim, hidden, m1), nn.SiLU(), _MaskedLinear(hidden, hidden, m2), nn.SiLU()
        )
        self.out = _MaskedLinear(hidden, 2 * dim, torch.cat([m3, m3]))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(dim))

    def _log_scale_shift(self, v: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.out(self.net(v)).chunk(2, dim=1)
        return self.scale * torch.tanh(raw), shift

    def inverse(self, v: Tensor) -> Tensor:
        s, m = self._log_scale_shift(v)
        return v * torch.exp(s) + m

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        # Solve u = v e^{s(v)} + m(v) for v: after pass k the variables of degree <= k are exact.
        v = torch.zeros_like(u)
        s = torch.zeros_like(u)
        for _ in range(self.dim):
            s, m = self._log_scale_shift(v)
            v = (u - m) * torch.exp(-s)
        return v, -s.sum(1)


class IAF(Flow):
    """Inverse autoregressive flow (Kingma et al. 2016) with MADE conditioners.

    Each layer maps latent to data in one parallel pass,

    .. math::

        x_i = z_i\\, e^{s_i(z_{<i})} + m_i(z_{<i}), \\qquad s = \\alpha \\tanh(\\cdot),

    so :meth:`inverse` is parallel and :meth:`forward` (data -> latent, needed for the
    likelihood) takes ``D`` sequential passes per layer. The variable order is reversed from
    one layer to the next. The MADE output layers start at zero: an untrained flow is the
    standardisation alone.

    Parameters
    ----------
    dim : int
        Dimension ``D`` of the vectors.
    n_layers : int
        Number of IAF layers.
    hidden : int
        Width of the two masked hidden layers of each MADE.
    seed : int
        Seed of the initial weights (the global random state is left alone).

    Examples
    --------
    >>> import torch
    >>> flow = IAF(3, n_layers=2, hidden=8)
    >>> x = torch.randn(5, 3)
    >>> torch.equal(flow.inverse(flow(x)[0]), x)
    True
    """

    kind = "iaf"

    def __init__(self, dim: int, n_layers: int = 2, hidden: int = 64, seed: int = 0):
        super().__init__(dim)
        self.n_layers = check_int(n_layers, "n_layers", 1)
        self.hidden = check_int(hidden, "hidden", 1)
        self.seed = check_int(seed, "seed", 0)
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random state is kept
            torch.manual_seed(self.seed)
            for k in range(self.n_layers):
                order = torch.arange(1, self.dim + 1)
                self.layers.append(_IAFStep(self.dim, self.hidden, order.flip(0) if k % 2 else order))

    def config(self) -> dict[str, int]:
        return {"dim": self.dim, "n_layers": self.n_layers, "hidden": self.hidden, "seed": self.seed}


#: Flow classes by the ``kind`` names of :func:`~landscape.connect.flows.fit_flows_for` and the
#: saved files.
FLOW_KINDS: dict[str, type[Flow]] = {"realnvp": RealNVP, "iaf": IAF}
#: The flows' dtypes by the names the saved files use.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
