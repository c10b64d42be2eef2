r"""Linear layers evaluated at many weight points at once.

A set of K weight points whose layer weights are linear combinations of J basis tensors,

.. math::

    W_k = \sum_{j} C_{kj} B^W_j, \qquad b_k = \sum_{j} C_{kj} B^b_j,

is evaluated without materialising the K weight matrices: with a shared input the J
products :math:`x B_j^{W\top}` are computed once and combined with the coefficients.

Each op has a compiled kernel (``torch.ops.landscape.<op>``, CPU float32/float64 and CUDA)
and a pure-PyTorch reference (``<op>_reference``) that is the test oracle and the fallback
when the extension is unavailable. Gradients flow to the input, the bases and the
coefficients through both paths (the kernels' backward recomputes the reference).
"""

from __future__ import annotations

import torch

from ._extension import extension_available

__all__ = [
    "ACTIVATIONS",
    "batched_linear",
    "batched_linear_reference",
    "fused_mlp2",
    "fused_mlp2_reference",
]

#: Activation names accepted by :func:`fused_mlp2`, with the integer code of the kernel.
ACTIVATIONS = {"identity": 0, "relu": 1, "tanh": 2}

# Set to False (e.g. with pytest's monkeypatch) to force the pure-PyTorch references.
_USE_EXTENSION = extension_available()

_KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64),
}


# --------------------------------------------------------------------------------------
# Argument checks of the references (one-line messages). The kernels check their inputs in
# C++ with the same messages (check_batched_linear_inputs, check_fused_mlp2_inputs in
# csrc/batched_linear.cpp), so the faces check only what the ops cannot: activation names.
# --------------------------------------------------------------------------------------


def _check_same_dtype_device(t: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if t.dtype != x.dtype:
        raise ValueError(f"{name} should have dtype {x.dtype} like x, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} should be on {x.device} like x, got {t.device}")


def _check_coeffs(coeffs: torch.Tensor, J: int, x: torch.Tensor) -> None:
    if coeffs.dim() != 2:
        raise ValueError(f"coeffs should be a 2d tensor [K, J], got {coeffs.dim()}D")
    if coeffs.shape[1] != J:
        raise ValueError(f"coeffs should have J={J} columns (one per basis tensor), got shape {list(coeffs.shape)}")
    _check_same_dtype_device(coeffs, "coeffs", x)


def _check_bias(bias: torch.Tensor | None, name: str, J: int, M: int, x: torch.Tensor) -> None:
    if bias is None:
        return
    if bias.dim() != 2:
        raise ValueError(f"{name} should be a 2d tensor [J, {M}], got {bias.dim()}D")
    if tuple(bias.shape) != (J, M):
        raise ValueError(f"{name} should have shape [{J}, {M}], got {list(bias.shape)}")
    _check_same_dtype_device(bias, name, x)


def _check_batched_linear_args(x, basis_weight, basis_bias, coeffs) -> None:
    if x.dim() not in (2, 3):
        raise ValueError(f"x should be a 2d tensor [N, in] or a 3d tensor [K, N, in], got {x.dim()}D")
    if basis_weight.dim() != 3:
        raise ValueError(f"basis_weight should be a 3d tensor [J, out, in], got {basis_weight.dim()}D")
    _check_same_dtype_device(basis_weight, "basis_weight", x)
    J, out_features, in_features = basis_weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(
            f"x should have in={in_features} features (the last dim of basis_weight), got shape {list(x.shape)}"
        )
    _check_bias(basis_bias, "basis_bias", J, out_features, x)
    _check_coeffs(coeffs, J, x)
    if x.dim() == 3 and x.shape[0] != coeffs.shape[0]:
        raise ValueError(
            f"x of shape [K, N, in] should have K={coeffs.shape[0]} points (the rows of "
            f"coeffs), got shape {list(x.shape)}"
        )


def _check_fused_mlp2_args(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation):
    if x.dim() != 2:
        raise ValueError(f"x should be a 2d tensor [N, in] (shared by all points), got {x.dim()}D")
    if w1_basis.dim() != 3:
        raise ValueError(f"w1_basis should be a 3d tensor [J, H, in], got {w1_basis.dim()}D")
    if w2_basis.dim() != 3:
        raise ValueError(f"w2_basis should be a 3d tensor [J, O, H], got {w2_basis.dim()}D")
    _check_same_dtype_device(w1_basis, "w1_basis", x)
    _check_same_dtype_device(w2_basis, "w2_basis", x)
    J, H, in_features = w1_basis.shape
    if x.shape[1] != in_features:
        raise ValueError(
            f"x should have in={in_features} features (the last dim of w1_basis), got shape {list(x.shape)}"
        )
    if w2_basis.shape[0] != J or w2_basis.shape[2] != H:
        raise ValueError(
            f"w2_basis should have shape [{J}, O, {H}] to match w1_basis [J, H, in], got {list(w2_basis.shape)}"
        )
    _check_bias(b1_basis, "b1_basis", J, H, x)
    _check_bias(b2_basis, "b2_basis", J, w2_basis.shape[1], x)
    _check_coeffs(coeffs, J, x)
    if activation not in ACTIVATIONS.values():
        raise ValueError(f"activation should be one of {sorted(ACTIVATIONS)} or codes 0, 1, 2, got {activation!r}")


def _activation_code(activation: str | int) -> int:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation should be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        return ACTIVATIONS[activation]
    return int(activation)


def _apply_activation(h: torch.Tensor, activation: int) -> torch.Tensor:
    if activation == 1:
        return torch.relu(h)
    if activation == 2:
        return torch.tanh(h)
    return h


def _has_kernel(op_name: str, tensors: list[torch.Tensor | None]) -> bool:
    """Whether a compiled kernel handles these tensors' device and dtype."""
    if not _USE_EXTENSION:
        return False
    first = tensors[0]
    dtypes = _KERNEL_DTYPES.get(first.device.type)
    if dtypes is None or first.dtype not in dtypes:
        return False
    if first.device.type != "cpu":
        key = first.device.type.upper()
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"landscape::{op_name}", key):
            return False
    return True


# --------------------------------------------------------------------------------------
# References (pure PyTorch): the oracle of the tests and the fallback path.
# --------------------------------------------------------------------------------------


def _shared_projections(x: torch.Tensor) -> bool:
    r"""Whether a layer may combine the per-basis products of a shared input ``x[N, in]``,
    :math:`\sum_j C_{kj} (x B_j^\top)`, instead of forming :math:`x (\sum_j C_{kj} B_j)^\top`.

    Only for finite inputs: the two differ by rounding there, but with an infinite input they
    can differ in kind (a zero coefficient times inf is NaN; the +inf and -inf products of two
    bases add to NaN where the point's own weight has one sign, whose infinite product ReLU or
    tanh would turn into 0 or +-1). Inputs with NaN or inf are therefore computed the way plain
    PyTorch computes each point. The compiled kernels make the same choice.
    """
    return x.dim() == 2 and bool(torch.isfinite(x).all())


def batched_linear_reference(
    x: torch.Tensor,
    basis_weight: torch.Tensor,
    basis_bias: torch.Tensor | None,
    coeffs: torch.Tensor,
) -> torch.Tensor:
    r"""Pure-PyTorch reference of :func:`batched_linear` (same arguments and result).

    With a finite shared input the J projections :math:`x B_j^{W\top}` are combined with
    the coefficients; with a per-point input, or a shared one holding NaN or infinity, the K
    weight matrices are materialised (see :func:`_shared_projections`).
    """
    _check_batched_linear_args(x, basis_weight, basis_bias, coeffs)
    return _batched_linear(x, basis_weight, basis_bias, coeffs, _shared_projections(x))


def _batched_linear(x, basis_weight, basis_bias, coeffs, shared: bool) -> torch.Tensor:
    """:func:`batched_linear_reference` with the formula chosen by ``shared`` (the backward
    of the kernels uses the projections: no data-dependent branch there)."""
    J, out_features, in_features = basis_weight.shape
    if shared:
        proj = (x @ basis_weight.reshape(J * out_features, in_features).T).reshape(x.shape[0], J, out_features)
        out = torch.einsum("kj,njo->kno", coeffs, proj)
    else:
        weights = torch.einsum("kj,joi->koi", coeffs, basis_weight)
        out = torch.matmul(x, weights.transpose(1, 2))
    if basis_bias is not None:
        out = out + (coeffs @ basis_bias).unsqueeze(1)
    return out


def fused_mlp2_reference(
    x: torch.Tensor,
    w1_basis: torch.Tensor,
    b1_basis: torch.Tensor | None,
    w2_basis: torch.Tensor,
    b2_basis: torch.Tensor | None,
    coeffs: torch.Tensor,
    activation: str | int = "relu",
) -> torch.Tensor:
    r"""Pure-PyTorch reference of :func:`fused_mlp2` (same arguments and result).

    Materialises the hidden activations of all points, a [K, N, H] tensor (and the
    first-layer weights of all points when ``x`` holds NaN or infinity).
    """
    activation = _activation_code(activation)
    _check_fused_mlp2_args(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation)
    return _fused_mlp2(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation, _shared_projections(x))


def _fused_mlp2(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation: int, shared: bool) -> torch.Tensor:
    """:func:`fused_mlp2_reference` with the first-layer formula chosen by ``shared``."""
    J, H, in_features = w1_basis.shape
    if shared:
        z = (x @ w1_basis.reshape(J * H, in_features).T).reshape(x.shape[0], J, H)
        hidden = torch.einsum("kj,njh->knh", coeffs, z)
    else:
        hidden = torch.matmul(x, torch.einsum("kj,jhi->kih", coeffs, w1_basis))
    if b1_basis is not None:
        hidden = hidden + (coeffs @ b1_basis).unsqueeze(1)
    hidden = _apply_activation(hidden, activation)
    w2 = torch.einsum("kj,joh->koh", coeffs, w2_basis)
    out = torch.bmm(hidden, w2.transpose(1, 2))
    if b2_basis is not None:
        out = out + (coeffs @ b2_basis).unsqueeze(1)
    return out


# --------------------------------------------------------------------------------------
# Python faces.
# --------------------------------------------------------------------------------------


def batched_linear(
    x: torch.Tensor,
    basis_weight: torch.Tensor,
    basis_bias: torch.Tensor | None,
    coeffs: torch.Tensor,
) -> torch.Tensor:
    r"""A linear layer evaluated at K weight points given by basis and coefficients.

    .. math::

        \mathrm{out}_k = x_k W_k^\top + b_k, \qquad
        W_k = \sum_j C_{kj} B^W_j, \qquad b_k = \sum_j C_{kj} B^b_j

    With a shared input (``x`` of shape [N, in]) the kernel computes the J products
    :math:`x B_j^{W\top}` once (J GEMMs instead of K) and combines them with the
    coefficients. With a per-point input ([K, N, in]) it synthesises each :math:`W_k` in a
    scratch buffer and runs one GEMM per point; the K weight matrices are never all stored.

    Parameters
    ----------
    x : Tensor[N, in] or Tensor[K, N, in]
        Input shared by all points, or one input per point.
    basis_weight : Tensor[J, out, in]
        The J basis tensors of the layer weight.
    basis_bias : Tensor[J, out] or None
        The J basis tensors of the layer bias; None for a layer without bias.
    coeffs : Tensor[K, J]
        Coefficients of the K points (rows) on the J basis tensors.

    Returns
    -------
    Tensor[K, N, out]
        The layer output at every point.

    Notes
    -----
    Uses ``torch.ops.landscape.batched_linear`` (CPU float32/float64, CUDA) when the
    extension is available, and :func:`batched_linear_reference` otherwise. Differentiable
    with respect to ``x``, ``basis_weight``, ``basis_bias`` and ``coeffs``.

    Examples
    --------
    >>> import torch
    >>> from landscape.ops import batched_linear
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> basis = torch.randn(2, 3, 4, dtype=torch.float64)
    >>> coeffs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    >>> out = batched_linear(x, basis, None, coeffs)
    >>> out.shape
    torch.Size([2, 5, 3])
    >>> torch.allclose(out[0], x @ basis[0].T)
    True
    """
    if _has_kernel("batched_linear", [x, basis_weight, basis_bias, coeffs]):
        return torch.ops.landscape.batched_linear.default(x, basis_weight, basis_bias, coeffs)
    return batched_linear_reference(x, basis_weight, basis_bias, coeffs)


def fused_mlp2(
    x: torch.Tensor,
    w1_basis: torch.Tensor,
    b1_basis: torch.Tensor | None,
    w2_basis: torch.Tensor,
    b2_basis: torch.Tensor | None,
    coeffs: torch.Tensor,
    activation: str | int = "relu",
) -> torch.Tensor:
    r"""A two-layer MLP evaluated at K weight points, without storing hidden activations.

    .. math::

        \mathrm{out}_k = \sigma\!\left(x W_{1,k}^\top + b_{1,k}\right) W_{2,k}^\top + b_{2,k},
        \qquad W_{i,k} = \sum_j C_{kj} B^{W_i}_j, \quad b_{i,k} = \sum_j C_{kj} B^{b_i}_j

    The kernel computes :math:`Z = x\,[B^{W_1}_0; \dots; B^{W_1}_{J-1}]^\top` as one GEMM,
    then, tile by tile over the samples, forms each point's hidden row
    :math:`\sigma(\sum_j C_{kj} Z_{:, j} + b_{1,k})` in a small scratch buffer and applies
    :math:`W_{2,k}` at once: the [K, N, H] hidden tensor is never written. For a plane
    (J=3) this is about a fifth of the arithmetic of running each point separately.

    Parameters
    ----------
    x : Tensor[N, in]
        Input shared by all points.
    w1_basis : Tensor[J, H, in]
        Basis of the first-layer weight.
    b1_basis : Tensor[J, H] or None
        Basis of the first-layer bias.
    w2_basis : Tensor[J, O, H]
        Basis of the second-layer weight.
    b2_basis : Tensor[J, O] or None
        Basis of the second-layer bias.
    coeffs : Tensor[K, J]
        Coefficients of the K points on the J basis tensors.
    activation : {"relu", "tanh", "identity"} or int, default "relu"
        Hidden activation :math:`\sigma` (kernel codes 0 identity, 1 relu, 2 tanh).

    Returns
    -------
    Tensor[K, N, O]
        The network output (logits) at every point.

    Examples
    --------
    >>> import torch
    >>> from landscape.ops import fused_mlp2
    >>> x = torch.randn(6, 4, dtype=torch.float64)
    >>> w1, w2 = torch.randn(3, 8, 4, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64)
    >>> coeffs = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    >>> out = fused_mlp2(x, w1, None, w2, None, coeffs, "relu")
    >>> torch.allclose(out[0], torch.relu(x @ w1[0].T) @ w2[0].T)
    True
    """
    activation = _activation_code(activation)
    if _has_kernel("fused_mlp2", [x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs]):
        return torch.ops.landscape.fused_mlp2.default(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation)
    return fused_mlp2_reference(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation)


# --------------------------------------------------------------------------------------
# Registration of fake (meta) functions and autograd for the compiled ops.
# --------------------------------------------------------------------------------------


def _batched_linear_projections(x, basis_weight, basis_bias, coeffs):
    return _batched_linear(x, basis_weight, basis_bias, coeffs, x.dim() == 2)


def _fused_mlp2_projections(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation):
    return _fused_mlp2(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation, True)


def _backward_through_reference(reference, ctx, grad_output, n_inputs):
    """Gradients of ``reference(*saved)`` for the saved inputs that need them."""
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad
    with torch.enable_grad():
        inputs = []
        wrt = []
        for i, t in enumerate(saved):
            if t is not None and needs[i]:
                t = t.detach().requires_grad_(True)
                wrt.append(i)
            inputs.append(t)
        if not wrt:
            return (None,) * n_inputs
        out = reference(*inputs, *ctx.extra_args)
        grads = torch.autograd.grad(out, [inputs[i] for i in wrt], grad_output, allow_unused=True)
    result = [None] * n_inputs
    for i, g in zip(wrt, grads, strict=True):
        result[i] = g if g is not None else torch.zeros_like(inputs[i])
    return tuple(result)


def _register_compiled_ops() -> None:
    @torch.library.register_fake("landscape::batched_linear")
    def _batched_linear_fake(x, basis_weight, basis_bias, coeffs):
        torch._check(x.dim() in (2, 3), lambda: f"x should be 2d or 3d, got {x.dim()}D")
        torch._check(basis_weight.dim() == 3, lambda: "basis_weight should be 3d [J, out, in]")
        torch._check(coeffs.dim() == 2, lambda: "coeffs should be 2d [K, J]")
        return x.new_empty((coeffs.shape[0], x.shape[-2], basis_weight.shape[1]))

    @torch.library.register_fake("landscape::fused_mlp2")
    def _fused_mlp2_fake(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation):
        torch._check(x.dim() == 2, lambda: f"x should be 2d [N, in], got {x.dim()}D")
        torch._check(w2_basis.dim() == 3, lambda: "w2_basis should be 3d [J, O, H]")
        torch._check(coeffs.dim() == 2, lambda: "coeffs should be 2d [K, J]")
        return x.new_empty((coeffs.shape[0], x.shape[0], w2_basis.shape[1]))

    def _batched_linear_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.extra_args = ()

    def _batched_linear_backward(ctx, grad_output):
        return _backward_through_reference(_batched_linear_projections, ctx, grad_output, 4)

    def _fused_mlp2_setup(ctx, inputs, output):
        *tensors, activation = inputs
        ctx.save_for_backward(*tensors)
        ctx.extra_args = (activation,)

    def _fused_mlp2_backward(ctx, grad_output):
        return _backward_through_reference(_fused_mlp2_projections, ctx, grad_output, 7)

    torch.library.register_autograd(
        "landscape::batched_linear", _batched_linear_backward, setup_context=_batched_linear_setup
    )
    torch.library.register_autograd("landscape::fused_mlp2", _fused_mlp2_backward, setup_context=_fused_mlp2_setup)


if extension_available():
    _register_compiled_ops()
