"""Tests of landscape.ops.batched_linear: kernels against naive per-point loops."""

import importlib
import subprocess
import sys

import pytest
import torch

import landscape.ops as ops
from landscape.ops import (
    batched_linear,
    batched_linear_reference,
    fused_mlp2,
    fused_mlp2_reference,
)

# The module (landscape.ops.batched_linear is the function of the same name).
bl_module = importlib.import_module("landscape.ops.batched_linear")

needs_extension = pytest.mark.skipif(
    not ops.extension_available(),
    reason="the compiled extension landscape._C is not built; only the reference path exists",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEEDS = [0, 1, 2]


# ---- naive oracles: materialise every point's weights, loop over points in Python ----------


def naive_batched_linear(x, basis_weight, basis_bias, coeffs):
    x, basis_weight, coeffs = x.double(), basis_weight.double(), coeffs.double()
    outputs = []
    for k in range(coeffs.shape[0]):
        weight = sum(coeffs[k, j] * basis_weight[j] for j in range(coeffs.shape[1]))
        xk = x if x.dim() == 2 else x[k]
        out = xk @ weight.T
        if basis_bias is not None:
            bias = sum(coeffs[k, j] * basis_bias[j].double() for j in range(coeffs.shape[1]))
            out = out + bias
        outputs.append(out)
    return torch.stack(outputs)


def naive_fused_mlp2(x, w1, b1, w2, b2, coeffs, activation):
    act = {0: lambda t: t, 1: torch.relu, 2: torch.tanh}[activation]
    x, coeffs = x.double(), coeffs.double()
    J = coeffs.shape[1]
    outputs = []
    for k in range(coeffs.shape[0]):
        W1 = sum(coeffs[k, j] * w1[j].double() for j in range(J))
        W2 = sum(coeffs[k, j] * w2[j].double() for j in range(J))
        h = x @ W1.T
        if b1 is not None:
            h = h + sum(coeffs[k, j] * b1[j].double() for j in range(J))
        out = act(h) @ W2.T
        if b2 is not None:
            out = out + sum(coeffs[k, j] * b2[j].double() for j in range(J))
        outputs.append(out)
    return torch.stack(outputs)


def make_linear_inputs(seed, per_point, bias, dtype=torch.float64, K=5, N=9, J=3, n_in=7, n_out=6):
    g = torch.Generator().manual_seed(seed)
    shape = (K, N, n_in) if per_point else (N, n_in)
    x = torch.randn(shape, generator=g, dtype=dtype)
    basis_weight = torch.randn(J, n_out, n_in, generator=g, dtype=dtype)
    basis_bias = torch.randn(J, n_out, generator=g, dtype=dtype) if bias else None
    coeffs = torch.randn(K, J, generator=g, dtype=dtype)
    return x, basis_weight, basis_bias, coeffs


def make_mlp_inputs(seed, bias, dtype=torch.float64, K=5, N=13, J=3, n_in=6, H=19, n_out=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, n_in, generator=g, dtype=dtype)
    w1 = torch.randn(J, H, n_in, generator=g, dtype=dtype)
    b1 = torch.randn(J, H, generator=g, dtype=dtype) if bias else None
    w2 = torch.randn(J, n_out, H, generator=g, dtype=dtype)
    b2 = torch.randn(J, n_out, generator=g, dtype=dtype) if bias else None
    coeffs = torch.randn(K, J, generator=g, dtype=dtype)
    return x, w1, b1, w2, b2, coeffs


def non_contiguous(t):
    """The same values as t, as a strided view (every other element of a wider tensor)."""
    if t is None:
        return None
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert not view.is_contiguous()
    return view


def transposed(t):
    """The same values as a 2d+ tensor t, as the transpose of a contiguous tensor."""
    view = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert t.shape[-1] == 1 or t.shape[-2] == 1 or not view.is_contiguous()
    return view


# ---- batched_linear ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per_point"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_batched_linear_float64_matches_naive_loop(seed, per_point, bias):
    inputs = make_linear_inputs(seed, per_point, bias)
    out = batched_linear(*inputs)
    expected = naive_batched_linear(*inputs)
    assert out.shape == expected.shape == (5, 9, 6)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched_linear_reference(*inputs), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per_point"])
@pytest.mark.parametrize("layout", [non_contiguous, transposed], ids=["strided", "transposed"])
def test_batched_linear_non_contiguous_inputs(per_point, layout):
    x, bw, bb, c = make_linear_inputs(3, per_point, bias=True)
    strided = (layout(x), layout(bw), layout(bb), layout(c))
    torch.testing.assert_close(batched_linear(*strided), naive_batched_linear(x, bw, bb, c), rtol=1e-12, atol=1e-12)


def test_batched_linear_coefficient_row_selects_basis_exactly():
    """A one-hot coefficient row reproduces that basis layer (the curve endpoints)."""
    x, bw, bb, _ = make_linear_inputs(4, per_point=False, bias=True, dtype=torch.float32)
    coeffs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = batched_linear(x, bw, bb, coeffs)
    torch.testing.assert_close(out[0], torch.nn.functional.linear(x, bw[0], bb[0]))
    torch.testing.assert_close(out[1], torch.nn.functional.linear(x, bw[2], bb[2]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per_point"])
def test_batched_linear_float32_error_like_pytorch(seed, per_point):
    """float32 error within a small multiple of PyTorch's own float32 error (flash-attn rule)."""
    inputs64 = make_linear_inputs(seed, per_point, True, K=6, N=33, n_in=50, n_out=40)
    inputs32 = tuple(t.float() for t in inputs64)
    expected = naive_batched_linear(*inputs64)
    torch_error = (naive_batched_linear(*inputs32).float().double() - expected).abs().max()
    # PyTorch's own float32 computation: per-point F.linear with float32 weights.
    x, bw, bb, c = inputs32
    per_point_f32 = torch.stack(
        [
            torch.nn.functional.linear(x if x.dim() == 2 else x[k], torch.einsum("j,joi->oi", c[k], bw), c[k] @ bb)
            for k in range(c.shape[0])
        ]
    )
    torch_error = max(torch_error, (per_point_f32.double() - expected).abs().max())
    ours = (batched_linear(*inputs32).double() - expected).abs().max()
    assert batched_linear(*inputs32).dtype == torch.float32
    assert ours <= 4 * torch_error + 1e-6


def test_batched_linear_gradcheck():
    for per_point in (False, True):
        x, bw, bb, c = make_linear_inputs(5, per_point, True, K=3, N=4, J=2, n_in=3, n_out=2)
        args = [t.requires_grad_() for t in (x, bw, bb, c)]
        assert torch.autograd.gradcheck(batched_linear, args)


def test_batched_linear_gradients_match_reference():
    x, bw, bb, c = make_linear_inputs(6, per_point=False, bias=True)
    grads = []
    for fn in (batched_linear, batched_linear_reference):
        args = [t.clone().requires_grad_() for t in (x, bw, bb, c)]
        (fn(*args) ** 2).sum().backward()
        grads.append([a.grad for a in args])
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


# The kernels check their inputs in C++ (check_batched_linear_inputs), the references in Python:
# both paths of the face reject a bad argument with the same ValueError and message.
both_paths = pytest.mark.parametrize("use_extension", [True, False], ids=["kernel", "reference"])


@both_paths
def test_batched_linear_bad_shapes_name_what_arrived(monkeypatch, use_extension):
    monkeypatch.setattr(bl_module, "_USE_EXTENSION", use_extension and ops.extension_available())
    x, bw, bb, c = make_linear_inputs(0, False, True)
    with pytest.raises(ValueError, match=r"x should be a 2d tensor \[N, in\] or a 3d tensor \[K, N, in\], got 1D"):
        batched_linear(x[0], bw, bb, c)
    with pytest.raises(ValueError, match=r"basis_weight should be a 3d tensor \[J, out, in\], got 2D"):
        batched_linear(x, bw[0], bb, c)
    with pytest.raises(ValueError, match=r"coeffs should have J=3 columns"):
        batched_linear(x, bw, bb, c[:, :2])
    with pytest.raises(ValueError, match=r"x should have in=7 features"):
        batched_linear(x[:, :3], bw, bb, c)
    with pytest.raises(ValueError, match=r"basis_bias should have shape \[3, 6\]"):
        batched_linear(x, bw, bb[:, :2], c)
    with pytest.raises(ValueError, match=r"x of shape \[K, N, in\] should have K=5"):
        batched_linear(x.expand(4, -1, -1), bw, bb, c)
    with pytest.raises(ValueError, match=r"coeffs should have dtype torch.float64 like x, got torch.float32"):
        batched_linear(x, bw, bb, c.float())
    with pytest.raises(ValueError, match=r"coeffs should be a 2d tensor \[K, J\], got 1D"):
        batched_linear(x, bw, bb, c[0])


@needs_extension
def test_batched_linear_kernel_errors_name_what_arrived():
    op = torch.ops.landscape.batched_linear
    x, bw, bb, c = make_linear_inputs(0, False, True)
    cases = [
        ((x, bw[0], bb, c), r"basis_weight should be a 3d tensor \[J, out, in\], got 2D"),
        ((x.long(), bw.long(), bb.long(), c.long()), r"x should be float32 or float64, got torch.int64"),
        ((x, bw.float(), bb, c), r"basis_weight should have dtype torch.float64 like x, got torch.float32"),
        ((x, bw[:0], bb[:0], c[:, :0]), r"basis_weight should hold at least one basis tensor, got J=0"),
        ((x, bw, bb[None], c), r"basis_bias should be a 2d tensor \[J, 6\], got 3D"),
        ((x, bw, bb, c[:, :2]), r"coeffs should have J=3 columns \(one per basis tensor\), got shape \[5, 2\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            op(*args)


# ---- fused_mlp2 ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_fused_mlp2_float64_matches_naive_loop(seed, activation, bias):
    inputs = make_mlp_inputs(seed, bias)
    code = bl_module.ACTIVATIONS[activation]
    expected = naive_fused_mlp2(*inputs, code)
    out = fused_mlp2(*inputs, activation)
    assert out.shape == expected.shape == (5, 13, 4)
    torch.testing.assert_close(out, expected, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(fused_mlp2(*inputs, code), expected, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(fused_mlp2_reference(*inputs, code), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    "sizes",
    [dict(N=1, H=1, n_out=1, J=1), dict(N=70, H=40, n_out=10, J=3), dict(N=9, H=33, n_out=17, J=5, K=1)],
    ids=["tiny", "digits_like", "odd"],
)
def test_fused_mlp2_shapes_cover_tiles_and_tails(sizes):
    inputs = make_mlp_inputs(7, True, **sizes)
    torch.testing.assert_close(fused_mlp2(*inputs, "relu"), naive_fused_mlp2(*inputs, 1), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("layout", [non_contiguous, transposed], ids=["strided", "transposed"])
def test_fused_mlp2_non_contiguous_inputs(layout):
    inputs = make_mlp_inputs(8, True)
    strided = tuple(layout(t) for t in inputs)
    torch.testing.assert_close(fused_mlp2(*strided, "tanh"), naive_fused_mlp2(*inputs, 2), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("seed", SEEDS)
def test_fused_mlp2_float32_error_like_pytorch(seed):
    inputs64 = make_mlp_inputs(seed, True, K=8, N=70, n_in=64, H=200, n_out=10)
    inputs32 = tuple(t.float() for t in inputs64)
    expected = naive_fused_mlp2(*inputs64, 1)
    x, w1, b1, w2, b2, c = inputs32
    torch_f32 = torch.stack(
        [
            torch.nn.functional.linear(
                torch.relu(torch.nn.functional.linear(x, torch.einsum("j,jhi->hi", c[k], w1), c[k] @ b1)),
                torch.einsum("j,joh->oh", c[k], w2),
                c[k] @ b2,
            )
            for k in range(c.shape[0])
        ]
    )
    torch_error = (torch_f32.double() - expected).abs().max()
    out = fused_mlp2(*inputs32, "relu")
    assert out.dtype == torch.float32
    assert (out.double() - expected).abs().max() <= 4 * torch_error + 1e-6


def test_fused_mlp2_gradcheck():
    for activation in ("relu", "tanh"):
        x, w1, b1, w2, b2, c = make_mlp_inputs(9, True, K=2, N=3, J=2, n_in=3, H=4, n_out=2)
        args = [t.requires_grad_() for t in (x, w1, b1, w2, b2, c)]
        assert torch.autograd.gradcheck(lambda *a, act=activation: fused_mlp2(*a, act), args)


def test_fused_mlp2_gradients_without_bias():
    x, w1, _, w2, _, c = make_mlp_inputs(10, False)
    args = [t.clone().requires_grad_() for t in (x, w1, w2, c)]
    fused_mlp2(args[0], args[1], None, args[2], None, args[3], "tanh").sum().backward()
    ref_args = [t.clone().requires_grad_() for t in (x, w1, w2, c)]
    fused_mlp2_reference(ref_args[0], ref_args[1], None, ref_args[2], None, ref_args[3], "tanh").sum().backward()
    for a, r in zip(args, ref_args, strict=True):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-10, atol=1e-10)


@both_paths
def test_fused_mlp2_bad_arguments_name_what_arrived(monkeypatch, use_extension):
    monkeypatch.setattr(bl_module, "_USE_EXTENSION", use_extension and ops.extension_available())
    x, w1, b1, w2, b2, c = make_mlp_inputs(0, True)
    with pytest.raises(ValueError, match=r"activation should be one of"):
        fused_mlp2(x, w1, b1, w2, b2, c, "gelu")
    with pytest.raises(ValueError, match=r"w2_basis should have shape \[3, O, 19\]"):
        fused_mlp2(x, w1, b1, w2[:, :, :5], b2, c)
    with pytest.raises(ValueError, match=r"x should be a 2d tensor \[N, in\]"):
        fused_mlp2(x.unsqueeze(0), w1, b1, w2, b2, c)
    with pytest.raises(ValueError, match=r"b1_basis should have shape \[3, 19\], got \[3, 18\]"):
        fused_mlp2(x, w1, b1[:, 1:], w2, b2, c)
    with pytest.raises(ValueError, match=r"w2_basis should have dtype torch.float64 like x, got torch.float32"):
        fused_mlp2(x, w1, b1, w2.float(), b2, c)


@needs_extension
def test_fused_mlp2_kernel_rejects_unknown_activation_code():
    x, w1, b1, w2, b2, c = make_mlp_inputs(0, True)
    with pytest.raises(ValueError, match=r"activation should be 0 \(identity\), 1 \(relu\) or 2 \(tanh\), got 7"):
        torch.ops.landscape.fused_mlp2(x, w1, b1, w2, b2, c, 7)


# ---- registration: opcheck -----------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per_point"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_batched_linear(per_point, bias):
    x, bw, bb, c = make_linear_inputs(11, per_point, bias, K=3, N=4, J=2, n_in=3, n_out=2)
    args = [x.requires_grad_(), bw.requires_grad_(), bb, c.requires_grad_()]
    torch.library.opcheck(torch.ops.landscape.batched_linear.default, args)


@needs_extension
@pytest.mark.parametrize("activation", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_fused_mlp2(activation, bias):
    x, w1, b1, w2, b2, c = make_mlp_inputs(12, bias, K=3, N=5, J=2, n_in=3, H=6, n_out=2)
    args = [x.requires_grad_(), w1.requires_grad_(), b1, w2.requires_grad_(), b2, c, activation]
    torch.library.opcheck(torch.ops.landscape.fused_mlp2.default, args)


# ---- the reference path when the extension is off ------------------------------------------


def test_reference_path_when_extension_forced_off(monkeypatch):
    monkeypatch.setattr(bl_module, "_USE_EXTENSION", False)
    calls = []
    monkeypatch.setattr(
        bl_module,
        "batched_linear_reference",
        lambda *a: calls.append("batched_linear") or batched_linear_reference(*a),
    )
    monkeypatch.setattr(
        bl_module,
        "fused_mlp2_reference",
        lambda *a: calls.append("fused_mlp2") or fused_mlp2_reference(*a),
    )
    inputs = make_linear_inputs(13, per_point=True, bias=True)
    args = [t.clone().requires_grad_() for t in inputs]
    out = bl_module.batched_linear(*args)
    torch.testing.assert_close(out, naive_batched_linear(*inputs), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert all(a.grad is not None for a in args)
    mlp_inputs = make_mlp_inputs(13, True)
    torch.testing.assert_close(
        bl_module.fused_mlp2(*mlp_inputs, "relu"),
        naive_fused_mlp2(*mlp_inputs, 1),
        rtol=1e-11,
        atol=1e-11,
    )
    assert calls == ["batched_linear", "fused_mlp2"]


def test_reference_used_for_unsupported_dtype():
    """bfloat16 has no CPU kernel: the face falls back to the reference."""
    inputs = make_linear_inputs(14, per_point=False, bias=True, dtype=torch.bfloat16)
    out = batched_linear(*inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), naive_batched_linear(*inputs), rtol=0.05, atol=0.2)


def test_missing_extension_warns_once_and_falls_back():
    code = (
        "import sys, warnings\n"
        "sys.modules['landscape._C'] = None\n"  # makes `from landscape import _C` fail
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import landscape.ops as ops\n"
        "    import importlib; importlib.import_module('landscape.ops.batched_linear')\n"
        "    ops._extension._warn_extension_unavailable()\n"
        "import torch\n"
        "x = torch.randn(3, 2, dtype=torch.float64); b = torch.randn(1, 4, 2, dtype=torch.float64)\n"
        "out = ops.batched_linear(x, b, None, torch.ones(2, 1, dtype=torch.float64))\n"
        "assert torch.allclose(out[1], x @ b[0].T)\n"
        "msgs = [str(w.message) for w in caught if 'compiled extension' in str(w.message)]\n"
        "print(ops.extension_available(), len(msgs))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["False", "1"]


# ---- CUDA ----------------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per_point"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_linear_cuda_matches_naive_loop(per_point, dtype):
    inputs = make_linear_inputs(15, per_point, True, dtype=dtype, K=4, N=37, n_in=40, n_out=19)
    out = batched_linear(*(t.cuda() for t in inputs))
    assert out.is_cuda
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(out.cpu().double(), naive_batched_linear(*inputs), rtol=tol, atol=tol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("activation", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_mlp2_cuda_matches_naive_loop(activation, dtype):
    inputs = make_mlp_inputs(16, True, dtype=dtype, K=4, N=37, n_in=20, H=70, n_out=10)
    out = fused_mlp2(*(t.cuda() for t in inputs), activation)
    assert out.is_cuda
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(out.cpu().double(), naive_fused_mlp2(*inputs, activation), rtol=tol, atol=tol)


@pytest.mark.cuda
@needs_cuda
@needs_extension
def test_opcheck_cuda():
    x, w1, b1, w2, b2, c = (t.cuda() for t in make_mlp_inputs(17, True, K=3, N=5, J=2, n_in=3, H=6, n_out=2))
    torch.library.opcheck(torch.ops.landscape.fused_mlp2.default, [x, w1, b1, w2, b2, c, 1])
    xl, bw, bb, cl = (t.cuda() for t in make_linear_inputs(17, False, True, K=3, N=4, J=2, n_in=3, n_out=2))
    torch.library.opcheck(torch.ops.landscape.batched_linear.default, [xl, bw, bb, cl])
