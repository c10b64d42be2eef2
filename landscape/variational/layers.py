"""Linear and convolutional layers with a Gaussian posterior over their weights.

Each weight has :math:`q(w_{ij}) = \\mathcal N(\\mu_{ij}, \\sigma_{ij}^2)`; the
``parameterization`` says how :math:`\\sigma^2` is stored:

==============  =========================================  ======================================
name            posterior                                  noise parameter
==============  =========================================  ======================================
``layer``       :math:`\\mathcal N(\\mu_{ij}, \\alpha \\mu_{ij}^2)`       ``log_alpha``, shape ``()``
``neuron``      :math:`\\mathcal N(\\mu_{ij}, \\alpha_j \\mu_{ij}^2)`     ``log_alpha``, shape ``(out,)``
``weight``      :math:`\\mathcal N(\\mu_{ij}, \\alpha_{ij} \\mu_{ij}^2)`  ``log_alpha``, like ``weight``
``additive``    :math:`\\mathcal N(\\mu_{ij}, \\sigma_{ij}^2)`            ``log_sigma2``, like ``weight``
``variance``    :math:`\\mathcal N(0, \\sigma_{ij}^2)`                    ``log_sigma2``, like ``weight``
==============  =========================================  ======================================

``weight`` is the mean :math:`\\mu` (an ``nn.Parameter``); a variance layer has no mean:
its ``weight`` is ``None`` (registered as an absent parameter, so it is not in the
``state_dict``) and :meth:`~VariationalLinear.mean_weight` returns zeros. ``bias`` is
deterministic. With ``train_alpha=False`` the noise parameter is a buffer: a layer-wise
layer with fixed :math:`\\alpha = p / (1 - p)` is Gaussian dropout of rate ``p`` on the
weights.

Forward passes depend on the layer's mode (:func:`variational_mode`): ``"sample"`` draws
pre-activations with the local reparameterization trick, ``"mean"`` uses the means as
weights. The default (mode ``None``) is ``"sample"`` in training mode and ``"mean"`` in
evaluation mode.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .kl import neg_kl_log_uniform

__all__ = [
    "MODES",
    "PARAMETERIZATIONS",
    "VariationalConv2d",
    "VariationalLayer",
    "VariationalLinear",
    "kl_divergence",
    "variational_layers",
    "variational_mode",
]

PARAMETERIZATIONS = ("layer", "neuron", "weight", "additive", "variance")
MODES = ("sample", "mean")
MULTIPLICATIVE = ("layer", "neuron", "weight")

#: added to the pre-activation variance before the square root (finite gradients at 0)
VAR_EPS = 1e-8
#: added to :math:`\mu^2` in :math:`\log \alpha = \log \sigma^2 - \log \mu^2` (additive layers)
MU2_EPS = 1e-16


def check_parameterization(parameterization: str) -> str:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization should be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    return parameterization


class VariationalLayer(nn.Module):
    """Shared machinery of :class:`VariationalLinear` and :class:`VariationalConv2d`.

    Subclasses provide ``_op(x, weight, bias)`` (the deterministic layer's operation) and
    ``to_deterministic()``.
    """

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        parameterization: str = "weight",
        *,
        alpha: float = 0.01,
        log_sigma2: float | None = None,
        train_alpha: bool = True,
        variance_init: str = "weights",
    ) -> VariationalLayer:
        """A variational layer whose means (and bias) are copies of ``module``'s weights
        (an ``nn.Linear`` for :class:`VariationalLinear`, an ``nn.Conv2d`` for
        :class:`VariationalConv2d`; the subclass's ``_take`` copies its shape attributes)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._take(module)
        layer._setup(module, parameterization, alpha, log_sigma2, train_alpha, variance_init)
        return layer.train(module.training)

    def _setup(
        self,
        ref: nn.Module,
        parameterization: str,
        alpha: float,
        log_sigma2: float | None,
        train_alpha: bool,
        variance_init: str = "weights",
    ) -> None:
        """Means, bias and noise parameter from the (deterministic) reference layer ``ref``."""
        check_parameterization(parameterization)
        if not alpha > 0:
            raise ValueError(f"alpha should be positive, got {alpha!r}")
        if variance_init not in ("weights", "he"):
            raise ValueError(f"variance_init should be 'weights' or 'he', got {variance_init!r}")
        w = ref.weight.detach()
        self.parameterization = parameterization
        self.train_alpha = bool(train_alpha)
        #: None (follow train/eval), "sample" or "mean"
        self.mode: str | None = None
        self.weight_shape = tuple(w.shape)
        if parameterization == "variance":
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(w.clone())
        if ref.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(ref.bias.detach().clone())
        register = (lambda n, t: self.register_parameter(n, nn.Parameter(t))) if train_alpha else self.register_buffer
        if parameterization in MULTIPLICATIVE:
            shape = {"layer": (), "neuron": (w.shape[0],), "weight": w.shape}[parameterization]
            register("log_alpha", torch.full(shape, math.log(alpha), dtype=w.dtype, device=w.device))
        elif log_sigma2 is not None:
            register("log_sigma2", torch.full(w.shape, float(log_sigma2), dtype=w.dtype, device=w.device))
        elif parameterization == "additive":  # the same q as the weight-wise layer with this alpha
            register("log_sigma2", math.log(alpha) + torch.log(w * w + MU2_EPS))
        elif variance_init == "he":
            fan_in = w[0].numel()
            register("log_sigma2", torch.full(w.shape, math.log(2.0 / fan_in), dtype=w.dtype, device=w.device))
        else:  # sigma = |w| of the reference layer: its scale, and different for every weight
            register("log_sigma2", torch.log(w * w + MU2_EPS))

    # ------------------------------------------------------------------ posterior
    def _log_alpha_view(self) -> torch.Tensor:
        la = self.log_alpha
        if self.parameterization == "neuron":
            return la.view(-1, *([1] * (len(self.weight_shape) - 1)))
        return la

    def mean_weight(self) -> torch.Tensor:
        """The posterior means :math:`\\mu` (zeros for a variance layer)."""
        if self.weight is None:
            return torch.zeros(self.weight_shape, dtype=self.log_sigma2.dtype, device=self.log_sigma2.device)
        return self.weight

    def sigma2(self) -> torch.Tensor:
        """Posterior variances :math:`\\sigma^2`, shaped like the weight."""
        if self.parameterization in MULTIPLICATIVE:
            return torch.exp(self._log_alpha_view()) * self.weight * self.weight
        return torch.exp(self.log_sigma2)

    def log_alpha_full(self) -> torch.Tensor:
        """:math:`\\log \\alpha = \\log(\\sigma^2 / \\mu^2)` shaped like the weight: the stored
        ``log_alpha`` broadcast; for additive layers ``log_sigma2 - log(mu^2 + 1e-16)``; ``+inf``
        for variance layers."""
        if self.parameterization in MULTIPLICATIVE:
            return self._log_alpha_view().expand(self.weight_shape).clone()
        if self.parameterization == "variance":
            return torch.full_like(self.log_sigma2, math.inf)
        return self.log_sigma2 - torch.log(self.weight * self.weight + MU2_EPS)

    def kl(self) -> torch.Tensor:
        """:math:`\\sum_{ij} \\mathrm{KL}(q(w_{ij}) \\,\\|\\, p(w_{ij}))` for the log-uniform
        prior (:func:`~landscape.variational.neg_kl_log_uniform`), a scalar.

        A variance layer returns 0: its KL does not depend on :math:`\\sigma` (the constant
        is dropped, and it is the limit :math:`\\alpha \\to \\infty` of the approximation,
        which is 0 with :math:`C = -k_1`). Layer- and neuron-wise layers count each
        :math:`\\alpha` once per weight that shares it.
        """
        p = self.parameterization
        if p == "variance":
            return torch.zeros((), dtype=self.log_sigma2.dtype, device=self.log_sigma2.device)
        numel = math.prod(self.weight_shape)
        if p == "layer":
            return -numel * neg_kl_log_uniform(self.log_alpha)
        if p == "neuron":
            return -(numel // self.weight_shape[0]) * neg_kl_log_uniform(self.log_alpha).sum()
        if p == "weight":
            return -neg_kl_log_uniform(self.log_alpha).sum()
        return -neg_kl_log_uniform(self.log_alpha_full()).sum()

    # ------------------------------------------------------------------ forward
    def effective_mode(self) -> str:
        """The mode a forward pass uses now."""
        if self.mode is None:
            return "sample" if self.training else "mean"
        return self.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.effective_mode() == "mean":
            return self._op(x, self.mean_weight(), self.bias)
        # local reparameterization: the pre-activations are Gaussian given x
        var = self._op(x * x, self.sigma2(), None)
        if self.weight is None:
            mean = torch.zeros_like(var) if self.bias is None else self._bias_like(var)
        else:
            mean = self._op(x, self.weight, self.bias)
        return mean + torch.sqrt(var + VAR_EPS) * torch.randn_like(mean)

    def sample_weight(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw :math:`w = \\mu + \\sigma \\epsilon` of the whole weight (not the LRT),
        detached, on the CPU (``generator`` is a CPU generator)."""
        with torch.no_grad():
            mu = self.mean_weight().detach().cpu()
            sd = self.sigma2().detach().cpu().sqrt()
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            return mu + sd * eps

    def _copy_means_to(self, det: nn.Module) -> nn.Module:
        with torch.no_grad():
            det.weight.copy_(self.mean_weight())
            if self.bias is not None:
                det.bias.copy_(self.bias)
        return det.train(self.training)

    def _noise_repr(self) -> str:
        fixed = "" if self.train_alpha else ", train_alpha=False"
        return f"parameterization={self.parameterization!r}{fixed}"


class VariationalLinear(VariationalLayer):
    """``nn.Linear`` with a Gaussian posterior over its weight (see the module docstring).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        A deterministic bias.
    parameterization : {"layer", "neuron", "weight", "additive", "variance"}
    alpha : float
        Initial (or, with ``train_alpha=False``, fixed) :math:`\\alpha` of the multiplicative
        parameterizations; additive layers start at :math:`\\sigma^2 = \\alpha \\mu^2` unless
        ``log_sigma2`` is given.
    log_sigma2 : float, optional
        Initial :math:`\\log \\sigma^2` (additive and variance layers), the same for every weight.
    train_alpha : bool
        Learn the noise parameter (``False``: a buffer, e.g. Gaussian dropout).
    variance_init : {"weights", "he"}
        Variance layers without ``log_sigma2``: :math:`\\sigma = |w|` of the freshly
        initialised (or converted) layer, or :math:`\\sigma^2 = 2 / \\mathrm{fan\\_in}`.
    device, dtype
        As for ``nn.Linear``.

    Examples
    --------
    >>> import torch
    >>> layer = VariationalLinear(3, 2, parameterization="weight", alpha=0.1)
    >>> layer.log_alpha.shape, layer.eval()(torch.ones(4, 3)).shape
    (torch.Size([2, 3]), torch.Size([4, 2]))
    >>> bool(torch.allclose(layer.sigma2(), 0.1 * layer.weight**2))
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        parameterization: str = "weight",
        alpha: float = 0.01,
        log_sigma2: float | None = None,
        train_alpha: bool = True,
        variance_init: str = "weights",
        device=None,
        dtype=None,
    ):
        super().__init__()
        ref = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self._take(ref)
        self._setup(ref, parameterization, alpha, log_sigma2, train_alpha, variance_init)

    def _take(self, ref: nn.Linear) -> None:
        self.in_features, self.out_features = ref.in_features, ref.out_features

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def _bias_like(self, out: torch.Tensor) -> torch.Tensor:
        return self.bias.expand_as(out)

    def to_deterministic(self) -> nn.Linear:
        """A plain ``nn.Linear`` of the same shape holding the means."""
        ref = self.bias if self.bias is not None else self.mean_weight()
        det = nn.Linear(self.in_features, self.out_features, self.bias is not None, device=ref.device, dtype=ref.dtype)
        return self._copy_means_to(det)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, {self._noise_repr()}"


class VariationalConv2d(VariationalLayer):
    """``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode) with a Gaussian
    posterior over its weight; ``neuron`` means one :math:`\\alpha` per output filter. Other
    parameters as for :class:`VariationalLinear`.

    Examples
    --------
    >>> import torch
    >>> conv = VariationalConv2d(2, 4, 3, padding=1, groups=2, parameterization="neuron")
    >>> conv.log_alpha.shape, conv(torch.ones(1, 2, 5, 5)).shape
    (torch.Size([4]), torch.Size([1, 4, 5, 5]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        parameterization: str = "weight",
        alpha: float = 0.01,
        log_sigma2: float | None = None,
        train_alpha: bool = True,
        variance_init: str = "weights",
        device=None,
        dtype=None,
    ):
        super().__init__()
        ref = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self._take(ref)
        self._setup(ref, parameterization, alpha, log_sigma2, train_alpha, variance_init)

    def _take(self, ref: nn.Conv2d) -> None:
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, name, getattr(ref, name))
        self.padding_mode = ref.padding_mode
        self._reversed_padding_repeated_twice = list(ref._reversed_padding_repeated_twice)

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":  # as nn.Conv2d; squaring commutes with these paddings
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _bias_like(self, out: torch.Tensor) -> torch.Tensor:
        return self.bias.view(-1, 1, 1).expand_as(out)

    def to_deterministic(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` of the same configuration holding the means."""
        ref = self.bias if self.bias is not None else self.mean_weight()
        det = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
            self.padding_mode,
            device=ref.device,
            dtype=ref.dtype,
        )
        return self._copy_means_to(det)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"{self._noise_repr()}"
        )


def variational_layers(model: nn.Module) -> list[tuple[str, VariationalLayer]]:
    """``(name, layer)`` for every variational layer of ``model`` (``""`` when ``model`` is
    one), each layer once."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, VariationalLayer)]


@contextlib.contextmanager
def variational_mode(model: nn.Module, mode: str | None) -> Iterator[nn.Module]:
    """Set the forward mode of every variational layer of ``model`` for a ``with`` block.

    Parameters
    ----------
    model : nn.Module
    mode : {"sample", "mean"} or None
        ``"sample"``: local reparameterization (a fresh Gaussian pre-activation for every
        input); ``"mean"``: the means as weights; None: ``"sample"`` in training mode and
        ``"mean"`` in evaluation mode. The previous modes are restored on exit.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode should be one of {MODES} or None, got {mode!r}")
    layers = [m for _, m in variational_layers(model)]
    before = [m.mode for m in layers]
    for m in layers:
        m.mode = mode
    try:
        yield model
    finally:
        for m, b in zip(layers, before):
            m.mode = b


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of :meth:`~landscape.variational.VariationalLinear.kl` over the variational layers
    of ``model`` (each layer once, also when it is used at several places); a scalar tensor,
    0 for a model without variational layers."""
    layers = [layer for _, layer in variational_layers(model)]
    if not layers:
        return torch.zeros(())
    return torch.stack([layer.kl() for layer in layers]).sum()
