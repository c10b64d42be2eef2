r"""One Lanczos step's bookkeeping for m Krylov bases at once: the fused op and its reference.

:func:`~landscape.hessian.lanczos_batched` runs m Lanczos iterations in lock step and calls a
*step function* ``step(Q, w, j, beta_prev, reorthogonalize) -> (alpha, beta, q_next)`` once
per step on the whole batch. :func:`lanczos_step_reference` is that function in plain
PyTorch, and the definition of its result; :func:`lanczos_step` computes the same with the
compiled op ``torch.ops.landscape.lanczos_step`` (CPU float32/float64, CUDA) and can be
passed as ``step=``:

>>> import torch
>>> from landscape.hessian import lanczos_batched
>>> from landscape.ops import lanczos_step
>>> A = torch.diag(torch.linspace(1.0, 2.0, 30, dtype=torch.float64))
>>> res = lanczos_batched(A, 1, tol=1e-10, step=lanczos_step)[0]
>>> round(res.lambda_max, 8), round(res.lambda_min, 8)
(2.0, 1.0)

The CPU kernel makes three sweeps over the basis instead of the reference's four, fuses the
recurrence, both Gram-Schmidt passes, the norm and the scaling block by block over n, and
runs rows (and parts of rows when there are fewer rows than threads) in parallel; see
``csrc/cpu/lanczos_step_kernels.h``. The op is not differentiable (a backward through it
raises); the reference is.
"""

from __future__ import annotations

import operator

import torch

from ._extension import extension_available

__all__ = ["REORTHOGONALIZE", "lanczos_step", "lanczos_step_reference"]

#: Accepted values of ``reorthogonalize``.
REORTHOGONALIZE = ("full", "none")

# Set to False (e.g. with pytest's monkeypatch) to force the pure-PyTorch reference.
_USE_EXTENSION = extension_available()

_KERNEL_DTYPES = (torch.float32, torch.float64)


def lanczos_step_reference(
    Q: torch.Tensor, w: torch.Tensor, j: int, beta_prev: torch.Tensor, reorthogonalize: str = "full"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lanczos step's bookkeeping for m independent Krylov bases (pure PyTorch).

    The reference (and definition) of the step that :func:`~landscape.hessian.lanczos_batched`
    calls; an accelerated op must take the same arguments and return the same values up to
    rounding.

    Parameters
    ----------
    Q : Tensor[m, S, n]
        The bases; ``Q[:, :j + 1]`` holds the orthonormal vectors :math:`q_0 .. q_j` of each
        row (later slots are ignored and not written).
    w : Tensor[m, n]
        :math:`A_i q_j` for each row i (its operator applied to its current vector); not
        modified.
    j : int
        Index of the current vector, ``0 <= j < S``.
    beta_prev : Tensor[m]
        :math:`\\beta_{j-1}`, the previous step's norm (ignored when ``j == 0``).
    reorthogonalize : {"full", "none"}
        ``"full"``: after the three-term recurrence, project ``w`` off all of
        ``Q[:, :j + 1]`` twice (classical Gram-Schmidt, repeated: orthogonal to working
        precision); ``"none"``: the plain three-term recurrence.

    Returns
    -------
    alpha : Tensor[m]
        :math:`\\alpha_j = q_j^T A q_j`.
    beta : Tensor[m]
        :math:`\\beta_j = \\lVert r\\rVert`, the norm of the orthogonalised residual r.
    q_next : Tensor[m, n]
        :math:`q_{j+1} = r / \\beta_j` (r itself where ``beta`` is 0).

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    >>> Q = torch.zeros(1, 3, 3, dtype=torch.float64)
    >>> Q[0, 0] = torch.ones(3, dtype=torch.float64) / 3**0.5
    >>> alpha, beta, q1 = lanczos_step_reference(Q, Q[:, 0] @ A, 0, torch.zeros(1, dtype=torch.float64))
    >>> round(float(alpha[0]), 12), round(float(q1[0] @ Q[0, 0]), 12)
    (2.0, 0.0)
    """
    if reorthogonalize not in REORTHOGONALIZE:
        raise ValueError(f"reorthogonalize should be one of {REORTHOGONALIZE}, got {reorthogonalize!r}")
    q = Q[:, j]
    alpha = torch.linalg.vecdot(q, w)
    r = w - alpha[:, None] * q
    if j > 0:
        r = r - beta_prev.to(r)[:, None] * Q[:, j - 1]
    if reorthogonalize == "full":
        B = Q[:, : j + 1]  # [m, j + 1, n]
        for _ in range(2):
            r = r - torch.bmm(B.transpose(1, 2), torch.bmm(B, r[:, :, None]))[:, :, 0]
    beta = torch.linalg.vector_norm(r, dim=-1)
    q_next = r / torch.where(beta > 0, beta, torch.ones_like(beta))[:, None]
    return alpha, beta, q_next


def _check_step_options(j: int, reorthogonalize: str) -> None:
    """What the op cannot check: the name of the reorthogonalisation, an integer j."""
    if reorthogonalize not in REORTHOGONALIZE:
        raise ValueError(f"reorthogonalize should be one of {REORTHOGONALIZE}, got {reorthogonalize!r}")
    if isinstance(j, bool) or not hasattr(j, "__index__"):
        raise ValueError(f"j should be an integer index into the basis slots of Q, got j = {j!r}")


def _check_lanczos_step_args(Q: torch.Tensor, w: torch.Tensor, j: int) -> None:
    """The op's checks of Q, w and j with its messages, for the reference path.

    The kernels check their inputs in C++ (check_lanczos_step_inputs in
    csrc/lanczos_step.cpp). ``beta_prev`` is not checked: the reference converts it and
    ignores it at ``j == 0``.
    """
    if Q.dim() != 3:
        raise ValueError(f"Q should be a 3d tensor [m, S, n], got {Q.dim()}D")
    if w.dim() != 2:
        raise ValueError(f"w should be a 2d tensor [m, n], got {w.dim()}D")
    m, S, n = Q.shape
    if tuple(w.shape) != (m, n):
        raise ValueError(f"w should have shape [{m}, {n}] like Q of shape {list(Q.shape)}, got {list(w.shape)}")
    if w.device != Q.device:
        raise ValueError(f"w should be on {Q.device} like Q, got {w.device}")
    if not 0 <= j < S:
        raise ValueError(
            f"j should satisfy 0 <= j < S = {S} (the basis slots of Q of shape {list(Q.shape)}), got j = {j!r}"
        )


def _has_kernel(Q: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the compiled op handles these tensors' device and dtype."""
    if not _USE_EXTENSION or Q.dtype not in _KERNEL_DTYPES or w.dtype != Q.dtype:
        return False
    if Q.device.type == "cpu":
        return True
    if Q.device.type == "cuda":
        return torch._C._dispatch_has_kernel_for_dispatch_key("landscape::lanczos_step", "CUDA")
    return False


def lanczos_step(
    Q: torch.Tensor, w: torch.Tensor, j: int, beta_prev: torch.Tensor, reorthogonalize: str = "full"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One Lanczos step's bookkeeping for m Krylov bases, with the fused compiled op.

    For each row i, with :math:`B = [q_0, \dots, q_j]^T` the first j + 1 vectors of its basis
    and :math:`w = A_i q_j`:

    .. math::

        \alpha_j = q_j^T w, \qquad r = w - \alpha_j q_j - \beta_{j-1} q_{j-1}, \\
        r \leftarrow r - B^T (B r) \quad \text{(twice, for } \texttt{"full"}\text{)}, \qquad
        \beta_j = \lVert r \rVert, \qquad q_{j+1} = r / \beta_j .

    This is the Lanczos iteration with full reorthogonalisation by classical Gram-Schmidt
    applied twice ("twice is enough"; Giraud, Langou, Rozloznik and van den Eshof 2005,
    Numer. Math. 101:87-100); see Golub and Van Loan, *Matrix Computations*, 4th ed., chapter 10.

    Parameters
    ----------
    Q : Tensor[m, S, n]
        The bases; only ``Q[:, :j + 1]`` is read. May be a strided view (a slice of a larger
        basis): it is read in place when its last dimension is contiguous.
    w : Tensor[m, n]
        :math:`A_i q_j` for each row; not modified.
    j : int
        Index of the current vector, ``0 <= j < S``.
    beta_prev : Tensor[m]
        :math:`\beta_{j-1}` (ignored when ``j == 0``); converted to Q's dtype and device.
    reorthogonalize : {"full", "none"}
        See :func:`lanczos_step_reference`.

    Returns
    -------
    alpha : Tensor[m]
    beta : Tensor[m]
    q_next : Tensor[m, n]
        As :func:`lanczos_step_reference`, in the dtype of Q, equal to it up to rounding.

    Notes
    -----
    Uses ``torch.ops.landscape.lanczos_step`` for float32/float64 tensors on the CPU or a
    CUDA device when the extension is available, :func:`lanczos_step_reference` otherwise.
    Dot products and norms accumulate in double on both devices (float32 inputs: float32
    partial sums over blocks of at most 512 elements on the CPU). Not differentiable: a
    backward through the op raises (:func:`~landscape.hessian.lanczos_batched` does not need
    one; :func:`lanczos_step_reference` is differentiable).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> Q = torch.linalg.qr(torch.randn(2, 50, 4, generator=g, dtype=torch.float64)).Q.transpose(1, 2)
    >>> w = torch.randn(2, 50, generator=g, dtype=torch.float64)
    >>> beta_prev = torch.tensor([0.5, 1.0], dtype=torch.float64)
    >>> alpha, beta, q_next = lanczos_step(Q, w, 3, beta_prev)
    >>> expected = lanczos_step_reference(Q, w, 3, beta_prev)
    >>> all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip((alpha, beta, q_next), expected))
    True
    >>> float((Q @ q_next[:, :, None]).abs().max()) < 1e-14
    True
    """
    _check_step_options(j, reorthogonalize)
    j = operator.index(j)
    if not _has_kernel(Q, w):
        _check_lanczos_step_args(Q, w, j)
        return lanczos_step_reference(Q, w, j, beta_prev, reorthogonalize)
    if j == 0:  # ignored at j = 0, as in the reference (which accepts anything there)
        beta_prev = Q.new_zeros(Q.shape[:1])
    else:
        beta_prev = torch.as_tensor(beta_prev).to(device=Q.device, dtype=Q.dtype)
    return torch.ops.landscape.lanczos_step.default(Q, w, j, beta_prev, reorthogonalize == "full")


def _register_compiled_op() -> None:
    @torch.library.register_fake("landscape::lanczos_step")
    def _lanczos_step_fake(Q, w, j, beta_prev, full_reorth):
        torch._check(Q.dim() == 3, lambda: f"Q should be a 3d tensor [m, S, n], got {Q.dim()}D")
        torch._check(w.dim() == 2, lambda: f"w should be a 2d tensor [m, n], got {w.dim()}D")
        m, _, n = Q.shape
        return Q.new_empty((m,)), Q.new_empty((m,)), Q.new_empty((m, n))

    # Not differentiable: a backward through the op raises instead of silently returning no
    # gradient (PyTorch's fallback for ops without an autograd kernel).
    def _setup_context(ctx, inputs, output):
        pass

    def _backward(ctx, *grads):
        raise RuntimeError(
            "landscape::lanczos_step is not differentiable; differentiate through "
            "landscape.ops.lanczos_step_reference instead"
        )

    torch.library.register_autograd("landscape::lanczos_step", _backward, setup_context=_setup_context)


if extension_available():
    _register_compiled_op()
