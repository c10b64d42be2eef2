"""Flow and Bijection connections between two networks (Anokhin & Yarotsky, ICML 2020).

A network's hidden neurons :math:`\\theta_i` are treated as samples of one distribution
:math:`p`. If a bijection :math:`\\nu` maps :math:`p` to :math:`\\mathcal N(0, I)`, the path

.. math::

    \\psi(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A)
    + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B)\\bigr],

applied to every neuron :math:`i` separately, keeps the neurons distributed as :math:`p` at
every ``t`` and runs from :math:`\\theta^A` (``t = 0``) to :math:`\\theta^B` (``t = 1``).

* **Flow connection**: :math:`\\nu` is a normalizing flow (:class:`RealNVP` or :class:`IAF`)
  fitted by maximum likelihood to the neurons pooled over many trained networks
  (:func:`fit_flow`, :func:`fit_flows_for`).
* **Bijection connection**: starting from those flows, :math:`\\nu_W` is trained further to
  minimise the loss along the paths between pairs of trained networks (:func:`fit_bijection`),

  .. math::

      l(W) = \\mathbb E_{t \\sim U(0, 1),\\; A \\ne B}\\; L\\bigl(\\psi_W(t, \\Theta^A, \\Theta^B)\\bigr).

Either result is a *global connection model*: once trained it connects any pair of minima
of the same architecture (:func:`flow_path`); :func:`save_connection_model` and
:func:`load_connection_model` store and restore it.

Deep and convolutional networks: a neuron of layer 2 reads the channels of layer 1, which
every network numbers differently, and a few networks give too few neurons for a flow of
dimension ~75. :func:`align_pool` reorders the pool to a template, ``base="gaussian"`` puts
a shrunk Gaussian (:func:`ledoit_wolf`) in front of identity-initialised flow layers,
``holdout`` stops the fit early on held-out networks, and :func:`aligned_flow_path` mixes
``A`` with ``B`` matched to ``A`` in the template's frame, then reaches ``B`` by the OT
connection's swaps.

Which tensors make up a neuron is described by :class:`NeuronGroup` (any number of tensors,
each sliced along one axis, so convolution filters with their BatchNorm parameters work the
same way as MLP neurons); :func:`mlp_groups` builds the groups of a plain MLP.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020. Flows: L. Dinh, J. Sohl-Dickstein, S. Bengio,
"Density estimation using Real NVP", ICLR 2017; D. P. Kingma et al., "Improved variational
inference with inverse autoregressive flow", NeurIPS 2016; M. Germain et al., "MADE: masked
autoencoder for distribution estimation", ICML 2015.
"""

from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import pt_version, result_kind
from ..pointset import PointSet
from ..weights import Layout, Weights, save_atomic
from .neurons import invert_permutation, linear_chain

__all__ = [
    "BASES",
    "FLOW_KINDS",
    "IAF",
    "NeuronGroup",
    "RealNVP",
    "align_pool",
    "aligned_flow_path",
    "fit_bijection",
    "fit_flow",
    "fit_flows_for",
    "flow_groups",
    "flow_path",
    "flow_path_tensors",
    "ledoit_wolf",
    "load_connection_model",
    "mlp_groups",
    "save_connection_model",
]

_SNAP = 1e-15
_FORMAT = "landscape.connect.flows"  # the registered kind of connection-model files
_FORMAT_VERSION = result_kind(_FORMAT).version  # 2 added the flows' "chol" buffer and the optional template
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ============================================================================ neuron groups
@dataclass
class NeuronGroup:
    """The tensors that make up one population of neurons, and how to slice them.

    Neuron ``i`` of the group is the concatenation, in part order, of
    ``tensor.select(axis, i).flatten()`` for every part ``(tensor name, axis)``.

    Parameters
    ----------
    name : str
        The group's name; flows are keyed by it (``flows[group.name]``).
    parts : list of (str, int)
        ``(entry name, axis)`` pairs. All parts have the same size ``n`` (the number of
        neurons) along their axis; negative axes count from the end.

    Examples
    --------
    The hidden neurons :math:`(b_i, l_i, c_i)` of a two-layer MLP:

    >>> import landscape as ls
    >>> model = ls.build_model("mlp", {"in_features": 64, "widths": [32]})
    >>> g = NeuronGroup("1", [("1.bias", 0), ("1.weight", 0), ("3.weight", 1)])
    >>> w = ls.Weights.from_module(model)
    >>> g.n(w), g.dim(w), tuple(g.matrix(w).shape)
    (32, 75, (32, 75))

    A convolution filter with its BatchNorm and the next layer's input channel:
    ``NeuronGroup("c", [("c.weight", 0), ("c.bias", 0), ("bn.weight", 0), ("bn.bias", 0),
    ("next.weight", 1)])``.
    """

    name: str
    parts: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"NeuronGroup name should be a non-empty str, got {self.name!r}")
        parts = []
        for p in self.parts:
            if (
                not isinstance(p, (tuple, list))
                or len(p) != 2
                or not isinstance(p[0], str)
                or isinstance(p[1], bool)
                or not isinstance(p[1], (int, np.integer))
            ):
                raise ValueError(f"NeuronGroup '{self.name}': a part should be (entry name, axis), got {p!r}")
            parts.append((p[0], int(p[1])))
        if not parts:
            raise ValueError(f"NeuronGroup '{self.name}' has no parts; expected at least one (entry name, axis)")
        names = [n for n, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"NeuronGroup '{self.name}' names an entry twice: {names}")
        self.parts = parts

    # ------------------------------------------------------------------ geometry
    def _tensor(self, weights: Mapping[str, Tensor], part: tuple[str, int]) -> tuple[Tensor, int]:
        name, axis = part
        if name not in weights:
            raise ValueError(f"NeuronGroup '{self.name}': the weights have no entry '{name}'")
        t = weights[name]
        if not torch.is_tensor(t) or not t.is_floating_point():
            what = t.dtype if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"NeuronGroup '{self.name}': entry '{name}' is {what}; expected a floating-point tensor")
        if not -t.dim() <= axis < t.dim():
            raise ValueError(
                f"NeuronGroup '{self.name}': axis {axis} of entry '{name}' is out of range for its shape "
                f"{tuple(t.shape)}"
            )
        return t, axis % t.dim()

    def n(self, weights: Mapping[str, Tensor]) -> int:
        """Number of neurons (the common size of the parts along their axes)."""
        n0 = None
        for part in self.parts:
            t, axis = self._tensor(weights, part)
            if n0 is None:
                n0 = t.shape[axis]
            elif t.shape[axis] != n0:
                raise ValueError(
                    f"NeuronGroup '{self.name}': entry '{part[0]}' has {t.shape[axis]} neurons along axis "
                    f"{part[1]} but '{self.parts[0][0]}' has {n0}; expected the same number"
                )
        return int(n0)

    def sizes(self, weights: Mapping[str, Tensor]) -> list[int]:
        """Length of each part's piece of one neuron (their sum is :meth:`dim`)."""
        n = self.n(weights)
        return [self._tensor(weights, p)[0].numel() // n if n else 0 for p in self.parts]

    def dim(self, weights: Mapping[str, Tensor]) -> int:
        """Dimension ``D`` of one neuron."""
        return sum(self.sizes(weights))

    def entries(self) -> list[str]:
        """Names of the entries the group covers."""
        return [n for n, _ in self.parts]

    # ------------------------------------------------------------------ gather / scatter
    def matrix(self, weights: Mapping[str, Tensor]) -> Tensor:
        """The neurons as rows.

        Parameters
        ----------
        weights : Weights or mapping of str to Tensor

        Returns
        -------
        Tensor[n, D]
            Row ``i`` is neuron ``i``; dtype promoted over the parts, on their device.
        """
        n = self.n(weights)
        pieces = []
        for part in self.parts:
            t, axis = self._tensor(weights, part)
            pieces.append(t.movedim(axis, 0).reshape(n, -1))
        dtype = pieces[0].dtype
        for p in pieces[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        return torch.cat([p.to(dtype) for p in pieces], 1)

    def pieces(self, M: Tensor, like: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """Split neuron rows back into the group's entries.

        Parameters
        ----------
        M : Tensor[..., n, D]
            Neurons as rows; leading dimensions (e.g. ``T`` values of ``t``) are kept.
        like : Weights or mapping of str to Tensor
            Gives the shapes and dtypes of the entries.

        Returns
        -------
        OrderedDict of str to Tensor[..., *shape]
            One tensor per part, in ``like``'s dtype, on ``M``'s device.
        """
        n, sizes = self.n(like), self.sizes(like)
        D = sum(sizes)
        if not torch.is_tensor(M) or M.dim() < 2 or tuple(M.shape[-2:]) != (n, D):
            got = list(M.shape) if torch.is_tensor(M) else type(M).__name__
            raise ValueError(f"NeuronGroup '{self.name}': M should have shape [..., {n}, {D}], got {got}")
        batch = tuple(M.shape[:-2])
        out: OrderedDict[str, Tensor] = OrderedDict()
        for part, piece in zip(self.parts, torch.split(M, sizes, dim=-1)):
            t, axis = self._tensor(like, part)
            rest = t.movedim(axis, 0).shape[1:]
            x = piece.reshape(*batch, n, *rest).movedim(len(batch), len(batch) + axis)
            out[part[0]] = x.to(t.dtype)
        return out

    def assign(self, tensors: Mapping[str, Tensor], M: Tensor) -> OrderedDict[str, Tensor]:
        """A copy of ``tensors`` with the group's entries replaced by the neurons ``M``.

        Parameters
        ----------
        tensors : Weights or mapping of str to Tensor
            Not modified.
        M : Tensor[..., n, D]
            New neurons; with leading dimensions the replaced entries get them too
            (``Tensor[..., *shape]``) while the other entries are returned as they are.

        Returns
        -------
        OrderedDict of str to Tensor
            In the order of ``tensors``.

        Examples
        --------
        >>> import torch, landscape as ls
        >>> w = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
        >>> g = mlp_groups(ls.build_model("mlp", {"widths": [8]}))[0]
        >>> new = g.assign(w, torch.zeros(8, g.dim(w)))
        >>> float(new["3.weight"].abs().sum()), torch.equal(new["3.bias"], w["3.bias"])
        (0.0, True)
        """
        out = OrderedDict(tensors.items())
        out.update(self.pieces(M, tensors))
        return out


def mlp_groups(model: nn.Module) -> list[NeuronGroup]:
    """The neuron groups of a plain MLP stack.

    With one hidden layer (``Linear k, act, Linear o``) the single group is the paper's hidden
    neuron :math:`\\theta_i = (b_i, l_i, c_i)`: ``[(f"{k}.bias", 0), (f"{k}.weight", 0),
    (f"{o}.weight", 1)]``; the output bias belongs to no group. Otherwise every Linear layer
    ``k`` (the output layer included) is one group of its rows, ``[(f"{k}.weight", 0),
    (f"{k}.bias", 0)]``, so every parameter belongs to exactly one group.

    Parameters
    ----------
    model : nn.Module
        A plain MLP stack (see :func:`~landscape.connect.linear_chain`).

    Returns
    -------
    list of NeuronGroup
        Named by their (first) Linear layer.

    Examples
    --------
    >>> import landscape as ls
    >>> mlp_groups(ls.build_model("mlp", {"widths": [32]}))[0].parts
    [('1.bias', 0), ('1.weight', 0), ('3.weight', 1)]
    >>> [g.name for g in mlp_groups(ls.build_model("mlp", {"widths": [32, 16]}))]
    ['1', '3', '5']
    """
    chain = linear_chain(model)

    def has_bias(name: str) -> bool:
        return model.get_submodule(name).bias is not None

    if len(chain) == 2:
        hidden, out = chain
        parts = [(f"{hidden}.bias", 0)] if has_bias(hidden) else []
        parts += [(f"{hidden}.weight", 0), (f"{out}.weight", 1)]
        return [NeuronGroup(hidden, parts)]
    groups = []
    for k in chain:
        parts = [(f"{k}.weight", 0)] + ([(f"{k}.bias", 0)] if has_bias(k) else [])
        groups.append(NeuronGroup(k, parts))
    return groups


def flow_groups(model: nn.Module) -> list[NeuronGroup]:
    """Neuron groups for flows on any supported network.

    MLPs: :func:`mlp_groups`. Convolutional and residual networks: one group per channel
    group of :func:`~landscape.connect.graph.trace_groups`, made of the parts that write the
    channels (filter rows, bias, BatchNorm weight and bias); BatchNorm running statistics
    (they must stay positive; recompute them along the path) and the layers that only read
    a group (the classifier) follow the straight line in :func:`flow_path`.
    """
    from .structure import structure

    if structure(model).chain is not None:
        return mlp_groups(model)
    from .graph import trace_groups

    params = {n for n, _ in model.named_parameters()}
    return [
        NeuronGroup(g.name, [(p.name, p.axis) for p in g.parts if p.role == "out" and p.name in params])
        for g in trace_groups(model)
    ]


# ============================================================================ flows
def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
    last = nn.Linear(hidden, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    net.append(last)
    return net


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} should be an int >= {minimum}, got {value!r}")
    return int(value)


class _Flow(nn.Module):
    """A bijection of ``R^D`` with a fixed per-dimension standardisation in front.

    Subclasses provide ``self.layers`` (each with ``forward(u) -> (v, logdet)`` in the
    data -> latent direction and ``inverse(v) -> u``).
    """

    kind = ""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = _check_int(dim, "dim", 1)
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


class RealNVP(_Flow):
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
        self.n_couplings = _check_int(n_couplings, "n_couplings", 1)
        self.hidden = _check_int(hidden, "hidden", 1)
        self.seed = _check_int(seed, "seed", 0)
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


class IAF(_Flow):
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
        self.n_layers = _check_int(n_layers, "n_layers", 1)
        self.hidden = _check_int(hidden, "hidden", 1)
        self.seed = _check_int(seed, "seed", 0)
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random state is kept
            torch.manual_seed(self.seed)
            for k in range(self.n_layers):
                order = torch.arange(1, self.dim + 1)
                self.layers.append(_IAFStep(self.dim, self.hidden, order.flip(0) if k % 2 else order))

    def config(self) -> dict[str, int]:
        return {"dim": self.dim, "n_layers": self.n_layers, "hidden": self.hidden, "seed": self.seed}


#: Flow classes by the ``kind`` names of :func:`fit_flows_for` and the saved files.
FLOW_KINDS: dict[str, type[_Flow]] = {"realnvp": RealNVP, "iaf": IAF}


def _where(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True, leave=False)


def _check_positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} should be a positive number, got {value!r}")


def ledoit_wolf(x: Tensor) -> tuple[Tensor, float]:
    """Ledoit-Wolf shrinkage estimate of a covariance matrix.

    .. math::

        \\hat\\Sigma = (1 - \\rho)\\, S + \\rho\\, \\frac{\\operatorname{tr} S}{D}\\, I,

    with :math:`S` the maximum-likelihood covariance of the centred samples and the
    shrinkage :math:`\\rho \\in [0, 1]` that minimises the expected Frobenius error
    (O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
    matrices", J. Multivariate Analysis 2004; the same formula as scikit-learn's
    ``ledoit_wolf``). Positive definite whenever :math:`\\rho > 0`, also for ``N < D``.

    Parameters
    ----------
    x : Tensor[N, D]
        Samples, ``N >= 2``.

    Returns
    -------
    cov : Tensor[D, D]
    shrinkage : float
        :math:`\\rho`.
    """
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] < 2 or not x.is_floating_point():
        got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x should be a floating-point tensor [N >= 2, D], got {got}")
    xd = x.detach().to(torch.float64)
    n, d = xd.shape
    xc = xd - xd.mean(0)
    S = xc.T @ xc / n
    mu = torch.trace(S) / d
    x2 = xc.pow(2)
    beta_ = (x2.T @ x2).sum() / n
    delta_ = S.pow(2).sum()
    beta = (beta_ - delta_) / (d * n)
    delta = (delta_ - 2 * mu * torch.trace(S) + d * mu**2) / d
    beta = torch.minimum(beta, delta)
    rho = 0.0 if float(delta) == 0.0 else float(beta / delta)
    cov = (1 - rho) * S + rho * mu * torch.eye(d, dtype=torch.float64, device=xd.device)
    return cov.to(x.dtype), rho


BASES = ("diagonal", "gaussian")


def fit_flow(
    flow: nn.Module,
    samples: Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    base: str = "diagonal",
    holdout: Tensor | None = None,
) -> list[float]:
    """Fit a flow to samples by maximum likelihood (in place).

    Sets the standardisation buffers ``mean`` and ``std`` to the per-dimension mean and
    standard deviation of ``samples`` (a dimension with zero spread gets ``std = 1``) and,
    with ``base="gaussian"``, ``chol`` to the Cholesky factor of the samples' Ledoit-Wolf
    shrinkage correlation matrix (:func:`ledoit_wolf` of the standardised samples), so that
    the untrained flow (its layers start at the identity) is the maximum-likelihood
    Gaussian with a shrunk covariance. Then it minimises the negative log-likelihood with
    Adam,

    .. math::

        -\\frac1N \\sum_k \\log p(x_k) = \\frac1N \\sum_k \\Bigl[\\tfrac12 \\|\\nu(x_k)\\|^2
        + \\tfrac D2 \\log 2\\pi - \\log|\\det \\partial\\nu / \\partial x|(x_k)\\Bigr].

    Parameters
    ----------
    flow : RealNVP or IAF
        Trained in place, in its own dtype and on its own device.
    samples : Tensor[N, D]
        Training vectors (cast to the flow's dtype and device), ``N >= 2``.
    epochs : int
        Passes over the samples.
    lr : float
        Adam learning rate.
    batch_size : int
        Samples per step (shuffled every epoch).
    weight_decay : float
        Adam weight decay.
    seed : int
        Seed of the shuffling.
    progress : bool
        Show a progress bar (``tqdm.auto``).
    base : {"diagonal", "gaussian"}
        The fixed transform in front of the layers: per-dimension standardisation, or
        standardisation and whitening by the shrunk correlation matrix.
    holdout : Tensor[M, D], optional
        Held-out vectors (e.g. the neurons of networks not in ``samples``): after every
        epoch their mean NLL is measured, and the flow ends with the parameters of the
        best epoch (epoch 0 is the untrained flow, i.e. the base transform alone), so the
        fit never ends worse on them than the base transform (early stopping).

    Returns
    -------
    list of float
        Mean NLL (nats per vector, not per dimension) over each epoch, ``[epochs]``.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(256, 2) * torch.tensor([3.0, 0.5]) + 1
    >>> hist = fit_flow(RealNVP(2, n_couplings=2, hidden=8), x, epochs=3)
    >>> len(hist)
    3
    """
    if not isinstance(flow, _Flow):
        raise ValueError(f"flow should be a RealNVP or IAF, got {type(flow).__name__}")
    if not torch.is_tensor(samples) or samples.dim() != 2 or samples.shape[1] != flow.dim or samples.shape[0] < 2:
        got = list(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
        raise ValueError(f"samples should be a tensor [N >= 2, {flow.dim}] for a flow of dim {flow.dim}, got {got}")
    if not samples.is_floating_point() or not bool(torch.isfinite(samples).all()):
        raise ValueError(f"samples should be finite floating-point values, got {samples.dtype} with NaN/Inf or ints")
    _check_int(epochs, "epochs", 0)
    _check_positive(lr, "lr")
    _check_int(batch_size, "batch_size", 1)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay should be a number >= 0, got {weight_decay!r}")
    if base not in BASES:
        raise ValueError(f"base should be one of {list(BASES)}, got {base!r}")
    if holdout is not None and (
        not torch.is_tensor(holdout) or holdout.dim() != 2 or holdout.shape[1] != flow.dim or holdout.shape[0] < 1
    ):
        got = list(holdout.shape) if torch.is_tensor(holdout) else type(holdout).__name__
        raise ValueError(f"holdout should be a tensor [M >= 1, {flow.dim}] for a flow of dim {flow.dim}, got {got}")
    dtype, device = _where(flow)
    x = samples.detach().to(device=device, dtype=dtype)
    with torch.no_grad():
        mean = x.mean(0)
        std = x.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        flow.mean.copy_(mean)
        flow.std.copy_(std)
        chol = torch.eye(flow.dim, dtype=torch.float64, device=device)
        if base == "gaussian" and flow.dim > 1:
            corr, _ = ledoit_wolf(((x - mean) / std).to(torch.float64))
            chol = torch.linalg.cholesky(corr / corr.diagonal().sqrt().outer(corr.diagonal().sqrt()))
        flow.chol.copy_(chol.to(dtype))
    xh = None if holdout is None else holdout.detach().to(device=device, dtype=dtype)

    def holdout_nll() -> float:
        with torch.no_grad():
            return float(-flow.log_prob(xh).mean())

    best = (holdout_nll(), copy.deepcopy(flow.state_dict())) if xh is not None else None
    opt = torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    history: list[float] = []
    bar = _progress(epochs, "fit flow", progress)
    was_training = flow.training
    flow.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for i in range(0, n, batch_size):
                xb = x[perm[i : i + batch_size]]
                loss = -flow.log_prob(xb).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach() * xb.shape[0]  # no host sync per step
            history.append(float(total) / n)
            if best is not None:
                h = holdout_nll()
                if h < best[0]:
                    best = (h, copy.deepcopy(flow.state_dict()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(nll=f"{history[-1]:.4g}")
    finally:
        flow.train(was_training)
        if bar is not None:
            bar.close()
    if best is not None:
        flow.load_state_dict(best[1])
    return history


# ============================================================================ paths
def _float_entries(w: Mapping[str, Tensor]) -> list[str]:
    return [k for k, v in w.items() if torch.is_tensor(v) and v.is_floating_point()]


def _check_pair(A: Mapping[str, Tensor], B: Mapping[str, Tensor]) -> None:
    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Mapping):
            raise ValueError(f"{name} should be a Weights or a mapping of str to Tensor, got {type(w).__name__}")
    if list(A.keys()) != list(B.keys()):
        only = sorted(set(A) ^ set(B))
        raise ValueError(
            f"A and B have different entries ({len(A)} and {len(B)}; e.g. {only[:3]}); expected the same model"
        )
    for k in A:
        if tuple(A[k].shape) != tuple(B[k].shape):
            raise ValueError(f"entry '{k}' has shape {tuple(A[k].shape)} in A and {tuple(B[k].shape)} in B")


def _check_groups(groups: Sequence[NeuronGroup], weights: Mapping[str, Tensor], flows=None) -> list[NeuronGroup]:
    if isinstance(groups, NeuronGroup) or not isinstance(groups, Sequence):
        raise ValueError(f"groups should be a list of NeuronGroup, got {type(groups).__name__}")
    groups = list(groups)
    owner: dict[str, str] = {}
    names = set()
    for g in groups:
        if not isinstance(g, NeuronGroup):
            raise ValueError(f"groups should hold NeuronGroup objects, got a {type(g).__name__}")
        if g.name in names:
            raise ValueError(f"two groups are named '{g.name}'; expected unique names (flows are keyed by them)")
        names.add(g.name)
        for e in g.entries():
            if e in owner:
                raise ValueError(f"entry '{e}' is in group '{owner[e]}' and in group '{g.name}'; expected one group")
            owner[e] = g.name
        D = g.dim(weights)  # validates the parts against the weights
        if flows is not None:
            if not isinstance(flows, Mapping):
                raise ValueError(f"flows should be a dict of group name to flow, got {type(flows).__name__}")
            if g.name not in flows:
                raise ValueError(f"no flow for group '{g.name}'; flows has {sorted(flows)}")
            fdim = getattr(flows[g.name], "dim", D)
            if fdim != D:
                raise ValueError(f"the flow of group '{g.name}' has dim {fdim} but the group's neurons have D = {D}")
    return groups


def _snap(v: float) -> float:
    """Round values within 1e-15 of -1, 0 or 1 to them (cos(pi/2) = 6e-17 becomes 0)."""
    for r in (-1.0, 0.0, 1.0):
        if abs(v - r) < _SNAP:
            return r
    return v


def _arc(t: float) -> tuple[float, float]:
    """``(cos(pi t / 2), sin(pi t / 2))``, snapped."""
    return _snap(math.cos(0.5 * math.pi * t)), _snap(math.sin(0.5 * math.pi * t))


def _group_path(A, B, g: NeuronGroup, flow: nn.Module, c: Tensor, s: Tensor) -> OrderedDict[str, Tensor]:
    """The group's entries along the path for coefficients ``c, s`` of shape ``[T]`` (or ``[]``)."""
    dtype, device = _where(flow)
    MA = g.matrix(A).to(device=device, dtype=dtype)
    MB = g.matrix(B).to(device=device, dtype=dtype)
    n, D = MA.shape
    zA, _ = flow(MA)
    zB, _ = flow(MB)
    c = c.to(device=device, dtype=dtype)
    s = s.to(device=device, dtype=dtype)
    batch = tuple(c.shape)
    z = c.reshape(*batch, 1, 1) * zA + s.reshape(*batch, 1, 1) * zB
    psi = flow.inverse(z.reshape(-1, D)).reshape(*batch, n, D)
    ref = A[g.parts[0][0]]
    return OrderedDict((k, v.to(ref.device)) for k, v in g.pieces(psi, A).items())


def flow_path_tensors(
    A: Mapping[str, Tensor],
    B: Mapping[str, Tensor],
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    t: float | Tensor,
) -> OrderedDict[str, Tensor]:
    """The point :math:`\\psi(t)` of the flow path, differentiable in the flows' parameters.

    .. math::

        \\psi_i(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A_i)
        + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B_i)\\bigr]

    for every neuron ``i`` of every group (``nu = flows[group.name]``, computed in the flow's
    dtype and device); other floating-point entries are :math:`(1-t)A + tB`, non-float
    entries are ``A``'s.

    Parameters
    ----------
    A, B : Weights or mapping of str to Tensor
        Two weight points of one model.
    groups : list of NeuronGroup
        Disjoint neuron groups (e.g. :func:`mlp_groups`).
    flows : dict of str to RealNVP or IAF
        One flow per group name, of dimension ``group.dim(A)``.
    t : float or Tensor[]
        One path parameter. A tensor ``t`` may itself carry gradients.

    Returns
    -------
    OrderedDict of str to Tensor
        In ``A``'s order, dtypes and devices; the group entries keep the autograd graph
        through the flows (use with :func:`torch.func.functional_call`).

    Notes
    -----
    The ends are not snapped: at ``t = 0`` the group entries are
    :math:`\nu^{-1}(\nu(\theta^A))`, equal to ``A`` up to rounding; :func:`flow_path`
    returns ``A`` and ``B`` exactly there.
    """
    _check_pair(A, B)
    groups = _check_groups(groups, A, flows)
    if torch.is_tensor(t):
        if t.numel() != 1:
            raise ValueError(f"t should be one value (a float or a 0-d tensor), got a tensor of shape {list(t.shape)}")
        t = t.reshape(())
        tv = float(t.detach())
        c, s = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    else:
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
            raise ValueError(f"t should be a float in [0, 1], got {type(t).__name__}")
        tv = float(t)
        cf, sf = _arc(tv)
        c, s = torch.tensor(cf, dtype=torch.float64), torch.tensor(sf, dtype=torch.float64)
    if not (0.0 <= tv <= 1.0):
        raise ValueError(f"t should be in [0, 1], got {tv}")
    grouped: dict[str, Tensor] = {}
    for g in groups:
        grouped.update(_group_path(A, B, g, flows[g.name], c, s))
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, a in A.items():
        if k in grouped:
            out[k] = grouped[k]
        elif torch.is_tensor(a) and a.is_floating_point():
            b = B[k]
            tt = t.to(a.device) if torch.is_tensor(t) else tv
            out[k] = ((1 - tt) * a.to(torch.float64) + tt * b.to(torch.float64)).to(a.dtype)
        else:
            out[k] = a
    return out


def _as_t(t) -> np.ndarray:
    t = np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("t should hold at least one value, got an empty array")
    bad = t[~(np.isfinite(t) & (t >= 0) & (t <= 1))]
    if bad.size:
        raise ValueError(f"t should lie in [0, 1], got {bad[:3].tolist()}")
    return t


def flow_path(
    A: Weights,
    B: Weights,
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    t,
) -> PointSet:
    """The Flow (or Bijection) connection of Anokhin & Yarotsky (2020) at the given ``t``.

    .. math::

        \\psi_i(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A_i)
        + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B_i)\\bigr]

    for every neuron ``i`` (row of ``group.matrix``) of every group, with that group's flow
    ``nu = flows[group.name]`` (computed in the flow's dtype and device, cast back to the
    weights' dtype). Floating-point entries outside every group follow the line
    :math:`(1-t)A + tB`; non-float entries (BatchNorm ``num_batches_tracked``) are ``A``'s.
    If :math:`\\nu` maps the neuron distribution to :math:`\\mathcal N(0, I)`, every point of
    the path has neurons from that distribution.

    Parameters
    ----------
    A, B : Weights
        Two weight points of one model.
    groups : list of NeuronGroup
        Disjoint neuron groups (e.g. :func:`mlp_groups`).
    flows : dict of str to RealNVP or IAF
        One flow per group name (:func:`fit_flows_for`, :func:`fit_bijection`,
        :func:`load_connection_model`).
    t : array-like [T]
        Path parameters in ``[0, 1]``; ``t = 0`` and ``t = 1`` give ``A`` and ``B`` bit for bit.

    Returns
    -------
    PointSet
        Explicit points (identity coefficients), one per ``t``, named ``"t=..."``.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
    >>> groups = mlp_groups(model)
    >>> flows = {g.name: RealNVP(g.dim(a), n_couplings=2, hidden=8) for g in groups}
    >>> path = flow_path(a, b, groups, flows, [0.0, 0.5, 1.0])
    >>> path.K, torch.equal(path.point(2)["1.weight"], b["1.weight"])
    (3, True)
    """
    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Weights):
            raise ValueError(f"{name} should be a landscape Weights, got {type(w).__name__}")
    _check_pair(A, B)
    if A.layout.names() != B.layout.names():
        raise ValueError("A and B have different layouts; expected weights of the same model")
    groups = _check_groups(groups, A, flows)
    ts = _as_t(t)
    cs = np.array([_arc(v) for v in ts], dtype=np.float64)  # [T, 2]
    c, s = torch.from_numpy(cs[:, 0]), torch.from_numpy(cs[:, 1])
    grouped: dict[str, Tensor] = {}
    with torch.no_grad():
        for g in groups:
            grouped.update(_group_path(A, B, g, flows[g.name], c, s))
    points = []
    for k, tv in enumerate(ts):
        if tv == 0.0 or tv == 1.0:
            src = A if tv == 0.0 else B
            tensors = {name: v.clone() for name, v in src.items()}
            for e in A.layout:
                if not e.flat:
                    tensors[e.name] = A[e.name].clone()
        else:
            tensors = {}
            for e in A.layout:
                a = A[e.name]
                if e.name in grouped:
                    tensors[e.name] = grouped[e.name][k]
                elif e.flat:
                    tensors[e.name] = ((1 - tv) * a.to(torch.float64) + tv * B[e.name].to(torch.float64)).to(a.dtype)
                else:
                    tensors[e.name] = a.clone()
        points.append(Weights(tensors, A.layout))
    return PointSet.explicit(points, names=[f"t={v:.6g}" for v in ts])


# ============================================================================ aligned paths
def _mean_weights(weights: Sequence[Weights]) -> Weights:
    tensors = OrderedDict()
    for e in weights[0].layout:
        a = weights[0][e.name]
        if e.flat:
            tensors[e.name] = torch.stack([w[e.name].to(torch.float64) for w in weights]).mean(0).to(a.dtype)
        else:
            tensors[e.name] = a.clone()
    return Weights(tensors, weights[0].layout)


def align_pool(
    model: nn.Module, weights: Sequence[Weights], *, reference: int = 0, rounds: int = 2, neuron: str = "blc"
) -> tuple[list[Weights], Weights]:
    """Reorder the neurons of every network so that they line up with one template.

    Round 1 matches every network to ``weights[reference]``
    (:func:`~landscape.connect.match_neurons`: OT stage 1, layer by layer, so a filter's
    input slices follow the matching of the layer below); the template is then the mean of
    the aligned networks, and every further round matches the original networks to the
    template of the round before. Reordering does not change any network's function
    (:func:`~landscape.connect.permute`), but after it the coordinates of a neuron's input
    slices refer to the same channels in every network: fit flows to the aligned pool
    (:func:`fit_flows_for`, :func:`fit_bijection`) and connect with
    :func:`aligned_flow_path` and the template.

    Parameters
    ----------
    model : nn.Module
        An MLP stack or a network :func:`~landscape.connect.graph.trace_groups` follows.
    weights : list of Weights
        Trained weight points of ``model``.
    reference : int
        Index of the network the first round matches to.
    rounds : int
        Matching rounds (``>= 1``).
    neuron : {"blc", "bl"}
        What the matching compares (:func:`~landscape.connect.match_neurons`).

    Returns
    -------
    aligned : list of Weights
        ``weights`` reordered, in the same order (``aligned[reference]`` is
        ``weights[reference]`` after round 1).
    template : Weights
        The mean of ``aligned`` (entry by entry); non-float entries are ``weights[0]``'s.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.connect.permute(a, model, {"1": torch.randperm(8)})
    >>> aligned, template = align_pool(model, [a, b])
    >>> torch.equal(aligned[1]["1.weight"], a["1.weight"])
    True
    """
    from .matching import match_neurons
    from .neurons import permute

    weights = _check_weights_list(weights, "weights", minimum=1)
    _check_model(model, weights[0])
    _check_int(reference, "reference", 0)
    if reference >= len(weights):
        raise ValueError(f"reference should index weights (0..{len(weights) - 1}), got {reference}")
    rounds = _check_int(rounds, "rounds", 1)
    target = weights[reference]
    aligned: list[Weights] = []
    for _ in range(rounds):
        aligned = [permute(w, model, match_neurons(target, w, model, neuron=neuron)) for w in weights]
        target = _mean_weights(aligned)
    return aligned, target


def aligned_flow_path(
    A: Weights,
    B: Weights,
    model: nn.Module,
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    template: Mapping[str, Tensor],
    t=None,
    *,
    swap_points: int = 1,
    permutations: Mapping[str, Tensor] | None = None,
    neuron: str = "blc",
):
    """The Flow (or Bijection) connection between matched networks, in two stages.

    Stage 1 is :func:`flow_path` from ``A`` to :math:`B' = \\pi(B)`, ``B`` reordered to
    match ``A`` (as in the OT connection), computed in the template's frame: with
    :math:`\\sigma` the reordering that matches ``A`` to ``template``,

    .. math::

        \\psi(t) = \\sigma^{-1}\\Bigl(\\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,
        \\nu(\\sigma A) + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\sigma B')\\bigr]\\Bigr),

    neuron by neuron, so the flows see neurons whose input slices are ordered as in the
    aligned pool they were fitted to (:func:`align_pool`). Reordering a whole point does not
    change its function, so :math:`\\sigma` only fixes which coordinates the flows read.
    Stage 2 goes from :math:`B'` back to ``B`` by swapping two neurons at a time
    (:func:`~landscape.connect.transposition_path`, the OT connection's stage 2).

    Parameters
    ----------
    A, B : Weights
        Weights of ``model``.
    model : nn.Module
        An MLP stack or a network :func:`~landscape.connect.graph.trace_groups` follows.
    groups : list of NeuronGroup
        The flows' groups (:func:`flow_groups`).
    flows : dict of str to RealNVP or IAF
        Fitted to the aligned pool.
    template : Weights or mapping of str to Tensor
        The template of :func:`align_pool` (same entries as ``A``).
    t : array-like [T], optional
        Stage-1 parameters (default ``linspace(0, 1, 11)``).
    swap_points : int
        Points inside each swap of stage 2.
    permutations : dict of str to LongTensor[n], optional
        The matching of ``B`` to ``A`` (default :func:`~landscape.connect.match_neurons`).
    neuron : {"blc", "bl"}
        What the matchings (``B`` to ``A``, ``A`` to ``template``) compare.

    Returns
    -------
    OTPath
        ``stage1`` starts at ``A`` and ``stage2`` ends at ``B``, bit for bit; the stage-1
        end equals the stage-2 start (:math:`B'`) bit for bit.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> model = ls.build_model("mlp", {"widths": [8]})
    >>> a = ls.Weights.from_module(model)
    >>> b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [8]}))
    >>> aligned, template = align_pool(model, [a, b])
    >>> groups = flow_groups(model)
    >>> flows = fit_flows_for(model, aligned, groups, epochs=0, base="gaussian")
    >>> path = aligned_flow_path(a, b, model, groups, flows, template, [0.0, 0.5, 1.0])
    >>> torch.equal(path.stage1.point(0)["1.weight"], a["1.weight"])
    True
    >>> torch.equal(path.stage2.point(path.stage2.K - 1)["1.weight"], b["1.weight"])
    True
    """
    from .matching import match_neurons, transposition_path, two_stage_path
    from .neurons import permute

    for name, w in (("A", A), ("B", B)):
        if not isinstance(w, Weights):
            raise ValueError(f"{name} should be a landscape Weights, got {type(w).__name__}")
    _check_pair(A, B)
    _check_model(model, A)
    if not isinstance(template, Mapping):
        raise ValueError(f"template should be a Weights or a mapping of str to Tensor, got {type(template).__name__}")
    _check_pair(A, template)
    template = template if isinstance(template, Weights) else Weights(OrderedDict(template.items()), A.layout)
    groups = _check_groups(groups, A, flows)
    t1 = _as_t(np.linspace(0.0, 1.0, 11) if t is None else t)
    perms = dict(permutations) if permutations is not None else match_neurons(A, B, model, neuron=neuron)
    Bp = permute(B, model, perms)
    sigma = match_neurons(template, A, model, neuron=neuron)
    back = invert_permutation(sigma)
    frame = flow_path(permute(A, model, sigma), permute(Bp, model, sigma), groups, flows, t1)
    points = [permute(Weights(frame.point(k), A.layout), model, back) for k in range(frame.K)]
    if t1[0] == 0.0:
        points[0] = A
    if t1[-1] == 1.0:
        points[-1] = Bp
    stage1 = PointSet.explicit(points, names=[f"t={v:.6g}" for v in t1])
    stage2, t2, swaps = transposition_path(B, model, perms, swap_points=swap_points)
    return two_stage_path(stage1, t1, stage2, t2, permutations=perms, swaps=swaps, method="aligned-flow")


# ============================================================================ bijection
def _check_weights_list(weights, what: str = "weights", minimum: int = 1) -> list[Mapping[str, Tensor]]:
    if isinstance(weights, Mapping) or not isinstance(weights, Sequence) or len(weights) < minimum:
        got = f"{len(weights)} items" if isinstance(weights, Sequence) else type(weights).__name__
        raise ValueError(f"{what} should be a list of at least {minimum} Weights, got {got}")
    for i, w in enumerate(weights[1:], 1):
        _check_pair(weights[0], w)  # same entries and shapes
        if isinstance(w, Weights) and isinstance(weights[0], Weights):
            if w.layout.names() != weights[0].layout.names():
                raise ValueError(f"{what}[{i}] has a different layout from {what}[0]")
    return list(weights)


def _check_model(model: nn.Module, w: Mapping[str, Tensor]) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model should be an nn.Module, got {type(model).__name__}")
    expected = Layout.from_module(model).names()
    if list(w.keys()) != expected:
        missing = [k for k in expected if k not in w][:3]
        extra = [k for k in w if k not in expected][:3]
        raise ValueError(f"the weights do not match the model (missing {missing}, unexpected {extra})")


def _flow_parameters(flows: Mapping[str, nn.Module]) -> list[nn.Parameter]:
    seen, params = set(), []
    for f in flows.values():
        for p in f.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def fit_bijection(
    model: nn.Module,
    weights: Sequence[Weights],
    groups: Sequence[NeuronGroup],
    flows: Mapping[str, nn.Module],
    data,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    pairs_per_step: int = 1,
    seed: int = 0,
    loss=None,
    forward=None,
    progress: bool = False,
) -> list[float]:
    """Train the flows so that the paths between trained networks have low loss (Bijection).

    .. math::

        l(W) = \\mathbb E_{t \\sim U(0,1),\\; (A, B)}\\;
        \\mathrm{CE}\\bigl(f(x;\\, \\psi_W(t, \\Theta^A, \\Theta^B)),\\, y\\bigr) \\to \\min_W

    over ordered pairs of distinct weights ``A != B`` from ``weights`` and minibatches
    ``(x, y)`` of ``data``, with :math:`\\psi_W` of :func:`flow_path_tensors` and Adam on the
    parameters of all flows (the standardisation buffers stay fixed).

    Start from flows fitted to the pooled neurons of ``weights`` (:func:`fit_flows_for`,
    i.e. the Flow connection): this function does not initialise them.

    Parameters
    ----------
    model : nn.Module
        The architecture (evaluated with :func:`torch.func.functional_call`; its own weights
        are not used nor modified). It is run in ``eval`` mode (BatchNorm layers use the
        path's interpolated running statistics) and its mode is restored afterwards.
    weights : list of Weights
        At least two trained weight points of ``model``.
    groups : list of NeuronGroup
        Disjoint neuron groups, one flow each.
    flows : dict of str to RealNVP or IAF
        Trained in place.
    data : TensorData, (Tensor[N, ...], Tensor[N]), DataLoader, Dataset or iterable of batches
        Inputs and targets of the training loss (:class:`landscape.train.TrainBatches`: in
        memory a seeded shuffle per epoch, a loader's own batches).
    epochs : int
        Passes over ``data``.
    lr : float
        Adam learning rate.
    batch_size : int
        Samples per step.
    pairs_per_step : int
        Pairs ``(A, B)`` (each with its own ``t``) averaged in one step on the same minibatch.
    seed : int
        Seed of the data order, the pairs and ``t``.
    loss : callable, str or Metric, optional
        The path loss on a batch (default cross-entropy; :func:`landscape.train.resolve_loss`).
    forward : callable, optional
        ``forward(model, batch) -> output`` replacing the default model call.
    progress : bool
        Show a progress bar (``tqdm.auto``).

    Returns
    -------
    list of float
        Mean path loss over each epoch, ``[epochs]``.
    """
    weights = _check_weights_list(weights, "weights", minimum=2)
    _check_model(model, weights[0])
    groups = _check_groups(groups, weights[0], flows)
    from ..train import TrainBatches, loss_of, resolve_loss

    lossfn = resolve_loss(loss)
    _check_int(epochs, "epochs", 0)
    _check_positive(lr, "lr")
    _check_int(batch_size, "batch_size", 1)
    _check_int(pairs_per_step, "pairs_per_step", 1)
    params = _flow_parameters({g.name: flows[g.name] for g in groups})
    if not params:
        raise ValueError("the flows have no parameters to train")
    device = params[0].device
    ws = [OrderedDict((k, v.to(device)) for k, v in w.items()) for w in weights]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    dtype = next((v.dtype for v in ws[0].values() if v.is_floating_point()), None)
    batches = TrainBatches(data, batch_size, generator=gen, device=device, dtype=dtype)
    m = len(ws)
    history: list[float] = []
    bar = _progress(epochs, "fit bijection", progress)
    model_mode = model.training
    flow_modes = {g.name: flows[g.name].training for g in groups}
    model.eval()
    for g in groups:
        flows[g.name].train()
    try:
        for _ in range(epochs):
            total, n = 0.0, 0
            for batch in batches.epoch():
                value = 0.0
                for _ in range(pairs_per_step):
                    a = int(torch.randint(m, (1,), generator=gen))
                    b = int(torch.randint(m - 1, (1,), generator=gen))
                    b += b >= a
                    t = float(torch.rand((), generator=gen, dtype=torch.float64))
                    tensors = flow_path_tensors(ws[a], ws[b], groups, flows, t)
                    value = value + loss_of(model, tensors, batch, lossfn, forward)
                value = value / pairs_per_step
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                total = total + value.detach() * batch.count
                n += batch.count
            history.append(float(total) / n)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4g}")
    finally:
        model.train(model_mode)
        for g in groups:
            flows[g.name].train(flow_modes[g.name])
        if bar is not None:
            bar.close()
    return history


def fit_flows_for(
    model: nn.Module,
    weights: Sequence[Weights],
    groups: Sequence[NeuronGroup] | None = None,
    kind: str = "realnvp",
    *,
    hidden: int = 64,
    n_couplings: int = 4,
    n_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    base: str = "diagonal",
    holdout: int = 0,
) -> dict[str, nn.Module]:
    """One flow per neuron group, fitted to the neurons pooled over many networks (Flow).

    For group ``g`` the samples are the rows of ``g.matrix(w)`` for every ``w`` in
    ``weights`` (``len(weights) * n`` vectors of dimension ``D``), fitted with
    :func:`fit_flow`.

    Parameters
    ----------
    model : nn.Module
        The architecture; the weights must match its ``state_dict`` names.
    weights : list of Weights
        Trained weight points of ``model``.
    groups : list of NeuronGroup, optional
        Default :func:`mlp_groups` of ``model``.
    kind : {"realnvp", "iaf"}
        :class:`RealNVP` (``n_couplings`` couplings) or :class:`IAF` (``n_layers`` layers).
    hidden : int
        Conditioner width.
    n_couplings, n_layers : int
        Depth of a RealNVP or an IAF (the other one is ignored).
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64``.
    device : str or torch.device, optional
        Default: the device of the weights.
    epochs, lr, batch_size, weight_decay, seed, progress, base
        Passed to :func:`fit_flow`; ``seed`` also seeds the flows' initial weights.
    holdout : int
        The last ``holdout`` networks of ``weights`` are not fitted: their neurons are the
        held-out vectors of :func:`fit_flow`'s early stopping (``0``: no early stopping).

    Returns
    -------
    dict of str to RealNVP or IAF
        Keyed by group name.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind should be one of {sorted(FLOW_KINDS)}, got {kind!r}")
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype should be torch.float32 or torch.float64, got {dtype}")
    weights = _check_weights_list(weights, "weights", minimum=1)
    _check_model(model, weights[0])
    groups = _check_groups(mlp_groups(model) if groups is None else groups, weights[0])
    if device is None:
        floats = _float_entries(weights[0])
        device = weights[0][floats[0]].device if floats else torch.device("cpu")
    holdout = _check_int(holdout, "holdout", 0)
    if holdout >= len(weights):
        raise ValueError(f"holdout should leave at least one network to fit, got {holdout} of {len(weights)}")
    fitted, held = weights[: len(weights) - holdout], weights[len(weights) - holdout :]
    flows: dict[str, nn.Module] = {}
    for g in groups:
        samples = torch.cat([g.matrix(w).detach().to(device=device, dtype=dtype) for w in fitted])
        held_out = torch.cat([g.matrix(w).detach().to(device=device, dtype=dtype) for w in held]) if held else None
        D = samples.shape[1]
        if kind == "realnvp":
            flow = RealNVP(D, n_couplings=n_couplings, hidden=hidden, seed=seed)
        else:
            flow = IAF(D, n_layers=n_layers, hidden=hidden, seed=seed)
        flow = flow.to(device=device, dtype=dtype)
        fit_flow(
            flow,
            samples,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            seed=seed,
            progress=progress,
            base=base,
            holdout=held_out,
        )
        flows[g.name] = flow
    return flows


# ============================================================================ saving
def _check_plain(obj: Any, where: str) -> None:
    """Only what ``torch.load(weights_only=True)`` reads back: tensors, dicts with str keys,
    lists, tuples, str, int, float, bool and None."""
    if obj is None or isinstance(obj, (str, bool, int, float, Tensor)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a key {k!r} of type {type(k).__name__}; expected str keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} is a {type(obj).__name__}; expected tensors, dicts, lists, str, int, float, bool or None"
    )


def save_connection_model(
    path: str | os.PathLike,
    flows: Mapping[str, nn.Module],
    groups: Sequence[NeuronGroup],
    *,
    kind: str,
    meta: Mapping[str, Any] | None = None,
    template: Mapping[str, Tensor] | None = None,
    force: bool = False,
) -> None:
    """Save a global connection model (flows and their neuron groups) as plain data.

    The file is a ``torch.save`` of dicts, lists, strings, numbers and tensors only
    (constructor arguments, dtype and ``state_dict`` of every flow, the parts of every
    group, ``meta``), readable with ``torch.load(path, weights_only=True)``.

    Parameters
    ----------
    path : str or PathLike
        Output file (``.pt``); written atomically.
    flows : dict of str to RealNVP or IAF
        One flow per group name.
    groups : list of NeuronGroup
        The groups the flows belong to.
    kind : {"realnvp", "iaf"}
        The flows' class (checked).
    meta : dict, optional
        Anything to keep with the model (architecture, data, training settings), made of
        tensors, dicts with str keys, lists, str, int, float, bool and None.
    template : Weights or mapping of str to Tensor, optional
        The template of :func:`align_pool` for flows fitted to an aligned pool (what
        :func:`aligned_flow_path` needs); :func:`load_connection_model` returns it as
        ``meta["template"]``.
    force : bool
        Overwrite an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``force`` is False.
    """
    path = os.fspath(path)
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind should be one of {sorted(FLOW_KINDS)}, got {kind!r}")
    if isinstance(groups, NeuronGroup) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(f"groups should be a non-empty list of NeuronGroup, got {type(groups).__name__}")
    if not isinstance(flows, Mapping):
        raise ValueError(f"flows should be a dict of group name to flow, got {type(flows).__name__}")
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    if "template" in meta:
        raise ValueError('meta has a key "template"; pass the template as template= (it is returned under that key)')
    if template is not None:
        if not isinstance(template, Mapping) or not all(torch.is_tensor(v) for v in template.values()):
            raise ValueError(
                f"template should be a Weights or a mapping of str to Tensor, got {type(template).__name__}"
            )
        template = {k: v.detach().cpu().clone() for k, v in template.items()}
    state_flows: dict[str, Any] = {}
    for g in groups:
        if not isinstance(g, NeuronGroup):
            raise ValueError(f"groups should hold NeuronGroup objects, got a {type(g).__name__}")
        if g.name not in flows:
            raise ValueError(f"no flow for group '{g.name}'; flows has {sorted(flows)}")
        f = flows[g.name]
        if not isinstance(f, FLOW_KINDS[kind]):
            expected = FLOW_KINDS[kind].__name__
            raise ValueError(f"the flow of group '{g.name}' is a {type(f).__name__}; kind={kind!r} expects {expected}")
        dtype, _ = _where(f)
        if dtype not in _DTYPES.values():
            raise ValueError(f"the flow of group '{g.name}' is {dtype}; expected float32 or float64")
        state_flows[g.name] = {
            "config": dict(f.config()),
            "dtype": str(dtype).removeprefix("torch."),
            "state_dict": {k: v.detach().cpu().clone() for k, v in f.state_dict().items()},
        }
    extra = sorted(set(flows) - {g.name for g in groups})
    if extra:
        raise ValueError(f"flows {extra} belong to no group; expected one flow per group")
    state = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "kind": kind,
        "groups": [{"name": g.name, "parts": [[n, a] for n, a in g.parts]} for g in groups],
        "flows": state_flows,
        "meta": meta,
        "template": template,
    }
    save_atomic(state, path, force=force)


def load_connection_model(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, nn.Module], list[NeuronGroup], dict[str, Any]]:
    """Load what :func:`save_connection_model` wrote (safely: ``weights_only=True``).

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device
        Where the flows go.

    Returns
    -------
    flows : dict of str to RealNVP or IAF
        In eval mode; their ``kind`` attribute tells RealNVP from IAF.
    groups : list of NeuronGroup
    meta : dict
        With the template of an aligned model under ``"template"`` (an OrderedDict of
        tensors, in the saved order) when it was saved with one.

    Notes
    -----
    Files of format version 1 (before the Gaussian base) load as flows whose ``chol`` is
    the identity, i.e. exactly the flows they held.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"connection model '{path}' does not exist or is not a file")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
        raise ValueError(f"'{path}' is not a connection model saved by save_connection_model")
    version = pt_version(state, _FORMAT, path)
    kind = state["kind"]
    if kind not in FLOW_KINDS:
        raise ValueError(f"'{path}' has flows of kind {kind!r}; expected one of {sorted(FLOW_KINDS)}")
    groups = [NeuronGroup(g["name"], [tuple(p) for p in g["parts"]]) for g in state["groups"]]
    flows: dict[str, nn.Module] = {}
    for g in groups:
        entry = state["flows"][g.name]
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"'{path}': flow '{g.name}' has dtype {entry['dtype']!r}; expected float32 or float64")
        flow = FLOW_KINDS[kind](**entry["config"]).to(dtype=_DTYPES[entry["dtype"]])
        sd = dict(entry["state_dict"])
        if version == 1:  # no Gaussian base yet: the identity
            sd.setdefault("chol", torch.eye(flow.dim, dtype=_DTYPES[entry["dtype"]]))
        flow.load_state_dict(sd)
        flows[g.name] = flow.to(map_location).eval()
    meta = dict(state["meta"])
    if state.get("template") is not None:
        meta["template"] = OrderedDict(state["template"].items())
    return flows, groups, meta
