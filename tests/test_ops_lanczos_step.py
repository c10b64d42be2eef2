"""Tests of landscape.ops.lanczos_step: the fused op against its pure-PyTorch reference."""

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import landscape.ops as ops
from landscape.hessian import MatrixOperator, lanczos_batched
from landscape.hessian import eig as eig_module
from landscape.ops import lanczos_step, lanczos_step_reference

# The module (landscape.ops.lanczos_step is the function of the same name).
ls_module = importlib.import_module("landscape.ops.lanczos_step")

needs_extension = pytest.mark.skipif(
    not ops.extension_available(),
    reason="the compiled extension landscape._C is not built; only the reference path exists",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
EPS32 = torch.finfo(torch.float32).eps

# (m, S, n, j): j = 0 and j = S - 1; n not a multiple of any vector width, block (64..512) or
# CUDA tile (1024); m = 1 with n large enough that the CPU kernel splits the row over two
# threads (parts of >= 16384 elements), m >= 2 where it runs one task per row.
SHAPES = [
    (1, 1, 7, 0),
    (3, 6, 37, 0),
    (3, 6, 37, 5),
    (2, 41, 1000, 40),
    (5, 12, 1031, 7),
    (4, 41, 2049, 10),
    (1, 20, 70001, 19),
    (2, 9, 40003, 8),
]
SHAPE_IDS = [f"m{m}-S{S}-n{n}-j{j}" for m, S, n, j in SHAPES]


def make_inputs(m, S, n, j, dtype=F64, device="cpu", seed=0):
    """Q [m, S, n] with orthonormal rows Q[:, :j + 1] and garbage after them, w, beta_prev."""
    g = torch.Generator().manual_seed(seed)
    Q = 1e3 * torch.randn(m, S, n, generator=g, dtype=F64)  # slots > j: never read
    Q[:, : j + 1] = torch.linalg.qr(torch.randn(m, n, j + 1, generator=g, dtype=F64)).Q.transpose(1, 2)
    w = 3.0 * torch.randn(m, n, generator=g, dtype=F64)
    beta_prev = 0.5 + torch.rand(m, generator=g, dtype=F64)
    return Q.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device), beta_prev.to(dtype=dtype, device=device)


def max_errors(out, expected, w):
    """Max errors of (alpha, beta) relative to |w| of each row, and the max abs error of q_next."""
    w_norm = torch.linalg.vector_norm(w.double(), dim=-1).clamp(min=1.0)
    alpha = float(((out[0].double() - expected[0].double()).abs() / w_norm).max()) if w.shape[0] else 0.0
    beta = float(((out[1].double() - expected[1].double()).abs() / w_norm).max()) if w.shape[0] else 0.0
    q = float((out[2].double() - expected[2].double()).abs().max()) if out[2].numel() else 0.0
    return alpha, beta, q


def assert_matches_reference_float64(Q, w, j, beta_prev, reorthogonalize):
    out = lanczos_step(Q, w, j, beta_prev, reorthogonalize)
    expected = lanczos_step_reference(Q, w, j, beta_prev, reorthogonalize)
    for a, b in zip(out, expected):
        assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    # Same sums in a different order: within 32 eps of the scale (|w| for alpha and beta, 1 for
    # the unit vector q_next). Observed: up to 7 eps for beta at n = 7e4, below 1 eps otherwise.
    errors = max_errors(out, expected, w)
    assert max(errors) <= 32 * EPS64, errors
    return out


# ---- float64 against the reference ------------------------------------------------------


@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float64_matches_reference(shape, reorthogonalize):
    m, S, n, j = shape
    Q, w, beta_prev = make_inputs(m, S, n, j, seed=n + j)
    _, _, q_next = assert_matches_reference_float64(Q, w, j, beta_prev, reorthogonalize)
    if reorthogonalize == "full" and n > j + 1:
        # q_next is a unit vector orthogonal to the basis to working precision
        B = Q[:, : j + 1]
        assert float((B @ q_next[:, :, None]).abs().max()) < 1e-14
        torch.testing.assert_close(torch.linalg.vector_norm(q_next, dim=-1), torch.ones(m, dtype=F64))


@pytest.mark.parametrize("threads", [1, 2])
def test_float64_matches_reference_for_any_thread_count(threads):
    """One part per row (1 thread) and rows split over threads (m = 1, 2 threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m in (1, 3):
            Q, w, beta_prev = make_inputs(m, 12, 50_001, 11, seed=m)
            assert_matches_reference_float64(Q, w, 11, beta_prev, "full")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_error_like_pytorch(shape, reorthogonalize):
    """float32 error within twice the reference's own float32 error (flash-attention rule),
    both measured against the reference in float64 on the same (rounded) inputs."""
    m, S, n, j = shape
    Q, w, beta_prev = make_inputs(m, S, n, j, dtype=torch.float32, seed=2 * n + j)
    oracle = lanczos_step_reference(Q.double(), w.double(), j, beta_prev.double(), reorthogonalize)
    ours = max_errors(lanczos_step(Q, w, j, beta_prev, reorthogonalize), oracle, w)
    pytorch = max_errors(lanczos_step_reference(Q, w, j, beta_prev, reorthogonalize), oracle, w)
    for name, e_ours, e_ref in zip(("alpha", "beta", "q_next"), ours, pytorch):
        # a floor of a few eps where PyTorch happens to be exact
        assert e_ours <= 2 * e_ref + 4 * EPS32, (name, e_ours, e_ref)


# ---- layouts and special values -------------------------------------------------------------


@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
def test_non_contiguous_inputs(reorthogonalize):
    m, S, n, j = 3, 7, 1003, 4
    Q, w, beta_prev = make_inputs(m, S, n, j, seed=5)
    # a slice of a bigger basis: strided rows and slots, contiguous elements (read in place)
    big = torch.randn(m + 1, S + 3, n + 5, dtype=F64)
    big[1:, 2 : S + 2, 3 : n + 3] = Q
    sliced = big[1:, 2 : S + 2, 3 : n + 3]
    # every other element of a wider tensor (copied by the kernel)
    wide = torch.randn(m, S, 2 * n, dtype=F64)
    wide[..., ::2] = Q
    strided = wide[..., ::2]
    # basis slots as the leading dimension of the storage: [S, m, n] transposed
    transposed = Q.transpose(0, 1).contiguous().transpose(0, 1)
    w_wide = torch.randn(m, 2 * n, dtype=F64)
    w_wide[:, ::2] = w
    w_strided = w_wide[:, ::2]
    w_sliced = torch.cat([torch.randn(m, 3, dtype=F64), w], dim=1)[:, 3:]
    expected = lanczos_step_reference(Q, w, j, beta_prev, reorthogonalize)
    for q_view in (sliced, strided, transposed):
        for w_view in (w_strided, w_sliced):
            assert not q_view.is_contiguous() and not w_view.is_contiguous()
            out = lanczos_step(q_view, w_view, j, beta_prev[::1], reorthogonalize)
            assert max(max_errors(out, expected, w)) <= 32 * EPS64
    # a strided beta_prev (every other element)
    bp_wide = torch.zeros(2 * m, dtype=F64)
    bp_wide[::2] = beta_prev
    out = lanczos_step(sliced, w, j, bp_wide[::2], reorthogonalize)
    assert max(max_errors(out, expected, w)) <= 32 * EPS64


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
def test_zero_residual_rows_give_beta_zero_and_r(dtype, reorthogonalize):
    """A row whose residual is exactly zero: beta = 0 and q_next = r = 0, no NaN."""
    m, S, n, j = 3, 5, 777, 2
    Q, w, beta_prev = make_inputs(m, S, n, j, dtype=dtype, seed=7)
    w[1] = 0.0
    beta_prev[1] = 0.0  # r = 0 - 0 q_j - 0 q_{j-1} = 0 exactly
    alpha, beta, q_next = lanczos_step(Q, w, j, beta_prev, reorthogonalize)
    assert float(alpha[1]) == 0.0 and float(beta[1]) == 0.0
    assert torch.equal(q_next[1], torch.zeros(n, dtype=dtype))
    assert bool(torch.isfinite(q_next).all()) and bool((beta[[0, 2]] > 0).all())
    expected = lanczos_step_reference(Q, w, j, beta_prev, reorthogonalize)
    assert torch.equal(expected[2][1], q_next[1]) and float(expected[1][1]) == 0.0
    # j = 0 with w = 0: the same without beta_prev
    alpha, beta, q_next = lanczos_step(Q, torch.zeros_like(w), 0, beta_prev, reorthogonalize)
    assert not bool(beta.any()) and not bool(q_next.any()) and not bool(alpha.any())


def test_empty_and_tiny_shapes():
    for m, S, n, j in [(0, 3, 10, 1), (2, 4, 0, 1), (2, 1, 1, 0)]:
        Q, w, beta_prev = make_inputs(m, S, max(n, 1), j)
        Q, w = Q[..., :n], w[..., :n]
        alpha, beta, q_next = lanczos_step(Q, w, j, beta_prev)
        assert alpha.shape == beta.shape == (m,) and q_next.shape == (m, n)
        ref = lanczos_step_reference(Q, w, j, beta_prev)
        torch.testing.assert_close(alpha, ref[0], rtol=0, atol=1e-15)
        torch.testing.assert_close(beta, ref[1], rtol=0, atol=1e-15)
        torch.testing.assert_close(q_next, ref[2], rtol=0, atol=1e-15)


def test_beta_prev_is_ignored_at_j0_and_converted_otherwise():
    Q, w, beta_prev = make_inputs(2, 4, 100, 2, dtype=torch.float32)
    first = lanczos_step(Q, w, 0, None)
    torch.testing.assert_close(first, lanczos_step_reference(Q, w, 0, None))
    # a float64 beta_prev for float32 bases is converted, as in the reference
    out = lanczos_step(Q, w, 2, beta_prev.double())
    torch.testing.assert_close(out, lanczos_step_reference(Q, w, 2, beta_prev.double()))
    assert all(t.dtype == torch.float32 for t in out)


def test_inputs_are_not_modified():
    Q, w, beta_prev = make_inputs(2, 6, 300, 4)
    copies = [t.clone() for t in (Q, w, beta_prev)]
    lanczos_step(Q, w, 4, beta_prev)
    for t, c in zip((Q, w, beta_prev), copies):
        assert torch.equal(t, c)


@needs_extension
def test_backward_through_the_op_raises():
    Q, w, beta_prev = make_inputs(2, 4, 50, 1)
    alpha, beta, q_next = lanczos_step(Q.requires_grad_(), w, 1, beta_prev)
    with pytest.raises(RuntimeError, match="lanczos_step is not differentiable"):
        beta.sum().backward()


# ---- the whole Lanczos run ------------------------------------------------------------------


def random_spd(n, seed, dtype=F64, spread=100.0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64)).Q
    eig = torch.logspace(0, np.log10(spread), n, dtype=F64)
    return ((U * eig) @ U.T).to(dtype)


def assert_same_runs(ours, reference, rtol):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert a.steps == b.steps and a.converged == b.converged
        scale = max(abs(b.lambda_max), abs(b.lambda_min))
        np.testing.assert_allclose(a.alpha, b.alpha, rtol=0, atol=rtol * scale)
        np.testing.assert_allclose(a.beta, b.beta, rtol=0, atol=rtol * scale)
        np.testing.assert_allclose([a.lambda_max, a.lambda_min], [b.lambda_max, b.lambda_min], rtol=rtol)


@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
def test_lanczos_batched_with_the_op_equals_the_reference_run(reorthogonalize):
    """m SPD operators in lock step: same tridiagonals, Ritz values and stopping steps."""
    operators = [MatrixOperator(random_spd(80, seed)) for seed in range(3)]
    # Without reorthogonalisation the basis loses orthogonality once a Ritz value converges,
    # and rounding differences then grow exponentially (any two implementations part ways
    # after ~30 steps here): compare the first 20 steps only.
    max_iter = 40 if reorthogonalize == "full" else 20
    kw = dict(max_iter=max_iter, tol=1e-8, seed=3, reorthogonalize=reorthogonalize)
    ours = lanczos_batched(operators, step=lanczos_step, **kw)
    reference = lanczos_batched(operators, step=lanczos_step_reference, **kw)
    assert_same_runs(ours, reference, rtol=1e-9)
    # and the largest eigenvalue (well separated on this log-spaced spectrum) is found
    for op, res in zip(operators, ours):
        eig = torch.linalg.eigvalsh(op.A)
        assert abs(res.lambda_max - float(eig[-1])) <= 1e-6 * float(eig[-1])


def test_lanczos_batched_several_starts_on_one_operator_and_float32():
    A = random_spd(300, 11)
    kw = dict(max_iter=30, tol=0.0, seed=4)
    ours = lanczos_batched(MatrixOperator(A), 5, step=lanczos_step, **kw)
    reference = lanczos_batched(MatrixOperator(A), 5, step=lanczos_step_reference, **kw)
    assert_same_runs(ours, reference, rtol=1e-9)
    # float32 operator: the runs agree to float32 precision
    ours32 = lanczos_batched(MatrixOperator(A.float()), 5, step=lanczos_step, **kw)
    reference32 = lanczos_batched(MatrixOperator(A.float()), 5, step=lanczos_step_reference, **kw)
    assert_same_runs(ours32, reference32, rtol=1e-4)


def test_reference_still_importable_from_hessian():
    from landscape.hessian import lanczos_step_reference as from_hessian

    assert from_hessian is lanczos_step_reference is eig_module.lanczos_step_reference


# ---- registration: opcheck, fallbacks ------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_opcheck(full, dtype):
    Q, w, beta_prev = make_inputs(3, 5, 70, 3, dtype=dtype, seed=8)
    torch.library.opcheck(torch.ops.landscape.lanczos_step.default, (Q, w, 3, beta_prev, full))
    torch.library.opcheck(torch.ops.landscape.lanczos_step.default, (Q[:, :, 1:], w[:, 1:], 0, beta_prev, full))


@needs_extension
def test_face_calls_the_op_for_float_tensors_on_the_cpu():
    Q, w, _ = make_inputs(1, 2, 10, 1)
    assert ls_module._has_kernel(Q, w) and ls_module._has_kernel(Q.float(), w.float())
    assert not ls_module._has_kernel(Q.bfloat16(), w.bfloat16())
    assert not ls_module._has_kernel(Q, w.float())  # mixed dtypes: the reference promotes


def test_reference_path_when_extension_forced_off(monkeypatch):
    monkeypatch.setattr(ls_module, "_USE_EXTENSION", False)
    calls = []

    def counting(*args):
        calls.append(args[2])
        return lanczos_step_reference(*args)

    monkeypatch.setattr(ls_module, "lanczos_step_reference", counting)
    Q, w, beta_prev = make_inputs(2, 4, 30, 2)
    out = ls_module.lanczos_step(Q, w, 2, beta_prev)
    torch.testing.assert_close(out, lanczos_step_reference(Q, w, 2, beta_prev), rtol=0, atol=0)
    assert calls == [2]


def test_reference_used_for_unsupported_dtype():
    """bfloat16 has no kernel: the face falls back to the reference."""
    Q, w, beta_prev = make_inputs(2, 4, 64, 2, dtype=torch.bfloat16)
    out = lanczos_step(Q, w, 2, beta_prev)
    assert out[2].dtype == torch.bfloat16
    for a, b in zip(out, lanczos_step_reference(Q, w, 2, beta_prev)):
        assert torch.equal(a, b)


def test_missing_extension_falls_back_to_the_reference():
    code = (
        "import sys, warnings\n"
        "sys.modules['landscape._C'] = None\n"  # makes `from landscape import _C` fail
        "warnings.simplefilter('ignore')\n"
        "import torch\n"
        "from landscape.ops import extension_available, lanczos_step, lanczos_step_reference\n"
        "Q = torch.linalg.qr(torch.randn(2, 40, 3, dtype=torch.float64)).Q.transpose(1, 2)\n"
        "w = torch.randn(2, 40, dtype=torch.float64); b = torch.ones(2, dtype=torch.float64)\n"
        "out = lanczos_step(Q, w, 2, b)\n"
        "assert all(torch.equal(x, y) for x, y in zip(out, lanczos_step_reference(Q, w, 2, b)))\n"
        "print(extension_available())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"


# ---- bad inputs -----------------------------------------------------------------------------


# The kernels check their inputs in C++ (check_lanczos_step_inputs), the reference path of the
# face in Python: both reject a bad argument with the same ValueError and message.
@pytest.mark.parametrize("use_extension", [True, False], ids=["kernel", "reference"])
def test_face_bad_inputs_name_what_arrived(monkeypatch, use_extension):
    monkeypatch.setattr(ls_module, "_USE_EXTENSION", use_extension and ops.extension_available())
    Q, w, beta_prev = make_inputs(3, 5, 20, 2)
    with pytest.raises(ValueError, match=r"reorthogonalize should be one of \('full', 'none'\), got 'partial'"):
        lanczos_step(Q, w, 2, beta_prev, "partial")
    with pytest.raises(ValueError, match=r"Q should be a 3d tensor \[m, S, n\], got 2D"):
        lanczos_step(Q[0], w, 2, beta_prev)
    with pytest.raises(ValueError, match=r"w should be a 2d tensor \[m, n\], got 3D"):
        lanczos_step(Q, w[None], 2, beta_prev)
    with pytest.raises(ValueError, match=r"w should have shape \[3, 20\] like Q of shape \[3, 5, 20\], got \[3, 19\]"):
        lanczos_step(Q, w[:, 1:], 2, beta_prev)
    with pytest.raises(ValueError, match=r"j should satisfy 0 <= j < S = 5 .* got j = 5"):
        lanczos_step(Q, w, 5, beta_prev)
    with pytest.raises(ValueError, match=r"got j = -1"):
        lanczos_step(Q, w, -1, beta_prev)
    with pytest.raises(ValueError, match=r"got j = 1.0"):
        lanczos_step(Q, w, 1.0, beta_prev)
    with pytest.raises(ValueError, match=r"got j = True"):
        lanczos_step(Q, w, True, beta_prev)


@needs_extension
def test_face_bad_beta_prev_names_what_arrived():
    Q, w, beta_prev = make_inputs(3, 5, 20, 2)
    with pytest.raises(ValueError, match=r"beta_prev should have shape \[3\] \(one per row of Q\), got \[2\]"):
        lanczos_step(Q, w, 2, beta_prev[:2])


@needs_extension
def test_kernel_errors_name_what_arrived():
    op = torch.ops.landscape.lanczos_step
    Q, w, b = make_inputs(3, 5, 20, 2)
    cases = [
        ((Q[0], w, 2, b), r"Q should be a 3d tensor \[m, S, n\], got 2D"),
        ((Q, w[None], 2, b), r"w should be a 2d tensor \[m, n\], got 3D"),
        ((Q, w, 2, b[None]), r"beta_prev should be a 1d tensor \[m\], got 2D"),
        (
            (Q.to(torch.int64), w.to(torch.int64), 2, b.to(torch.int64)),
            r"Q should be float32 or float64, got torch.int64",
        ),
        ((Q, w.float(), 2, b), r"w should have dtype torch.float64 like Q, got torch.float32"),
        ((Q, w, 2, b.float()), r"beta_prev should have dtype torch.float64 like Q, got torch.float32"),
        ((Q, w[:2], 2, b), r"w should have shape \[3, 20\] like Q of shape \[3, 5, 20\], got \[2, 20\]"),
        ((Q, w, 2, b[:2]), r"beta_prev should have shape \[3\] \(one per row of Q\), got \[2\]"),
        ((Q, w, 5, b), r"j should satisfy 0 <= j < S = 5 \(the basis slots of Q of shape \[3, 5, 20\]\), got j = 5"),
        ((Q, w, -1, b), r"j should satisfy 0 <= j < S = 5 .*got j = -1"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            op(*args, True)


# ---- CUDA -----------------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("reorthogonalize", ["full", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cuda_float64_matches_reference(shape, reorthogonalize):
    m, S, n, j = shape
    Q, w, beta_prev = make_inputs(m, S, n, j, device="cuda", seed=n + j)
    assert ls_module._has_kernel(Q, w)
    out = assert_matches_reference_float64(Q, w, j, beta_prev, reorthogonalize)
    assert all(t.is_cuda for t in out)
    # and the CUDA result agrees with the CPU kernel
    cpu = lanczos_step(Q.cpu(), w.cpu(), j, beta_prev.cpu(), reorthogonalize)
    assert max(max_errors([t.cpu() for t in out], cpu, w.cpu())) <= 32 * EPS64


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cuda_float32_error_like_pytorch(shape):
    m, S, n, j = shape
    Q, w, beta_prev = make_inputs(m, S, n, j, dtype=torch.float32, device="cuda", seed=2 * n + j)
    oracle = lanczos_step_reference(Q.double(), w.double(), j, beta_prev.double())
    ours = max_errors(lanczos_step(Q, w, j, beta_prev), oracle, w)
    pytorch = max_errors(lanczos_step_reference(Q, w, j, beta_prev), oracle, w)
    for name, e_ours, e_ref in zip(("alpha", "beta", "q_next"), ours, pytorch):
        assert e_ours <= 2 * e_ref + 4 * EPS32, (name, e_ours, e_ref)


@pytest.mark.cuda
@needs_cuda
def test_cuda_non_contiguous_and_zero_rows():
    m, S, n, j = 3, 7, 3001, 4
    Q, w, beta_prev = make_inputs(m, S, n, j, device="cuda", seed=9)
    w[1] = 0.0
    beta_prev[1] = 0.0
    expected = lanczos_step_reference(Q, w, j, beta_prev)
    big = torch.randn(m, S + 2, n + 3, dtype=F64, device="cuda")
    big[:, 1 : S + 1, 2 : n + 2] = Q
    wide = torch.randn(m, 2 * n, dtype=F64, device="cuda")
    wide[:, ::2] = w
    for q_view, w_view in [
        (big[:, 1 : S + 1, 2 : n + 2], wide[:, ::2]),
        (Q.transpose(0, 1).contiguous().transpose(0, 1), w),
    ]:
        out = lanczos_step(q_view, w_view, j, beta_prev)
        assert max(max_errors(out, expected, w)) <= 32 * EPS64
        assert float(out[1][1]) == 0.0 and not bool(out[2][1].any())
    empty = lanczos_step(Q[:, :, :0], w[:, :0], j, beta_prev)
    assert not bool(empty[0].any()) and not bool(empty[1].any()) and empty[2].shape == (m, 0)


@pytest.mark.cuda
@needs_cuda
def test_cuda_lanczos_batched_equals_the_reference_run():
    operators = [MatrixOperator(random_spd(80, seed).cuda()) for seed in range(3)]
    kw = dict(max_iter=40, tol=1e-8, seed=3)
    ours = lanczos_batched(operators, step=lanczos_step, **kw)
    reference = lanczos_batched(operators, step=lanczos_step_reference, **kw)
    assert_same_runs(ours, reference, rtol=1e-9)


@pytest.mark.cuda
@needs_cuda
def test_cuda_opcheck_and_errors():
    Q, w, beta_prev = make_inputs(3, 5, 70, 3, device="cuda", seed=8)
    for full in (True, False):
        torch.library.opcheck(torch.ops.landscape.lanczos_step.default, (Q, w, 3, beta_prev, full))
    with pytest.raises(ValueError, match=r"beta_prev should be on cuda:0 like Q, got cpu"):
        torch.ops.landscape.lanczos_step(Q, w, 3, beta_prev.cpu(), True)
