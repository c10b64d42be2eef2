// Schema of the batched Lanczos step (namespace `landscape`) and its input checks.
//
// For m independent Krylov bases Q [m, S, n] (only Q[:, :j + 1] is read), w = A q_j [m, n]
// and beta_prev [m]:
//   alpha = <q_j, w>,  r = w - alpha q_j - beta_prev q_{j-1} (j > 0),
//   full_reorth: twice r -= B^T (B r) with B = Q[:, :j + 1] (classical Gram-Schmidt, repeated),
//   beta = ||r||,  q_next = r / beta (r where beta == 0).
// Returns (alpha [m], beta [m], q_next [m, n]) in the dtype of Q. Not differentiable.
// Kernels: csrc/cpu/lanczos_step.cpp (CPU), csrc/cuda/lanczos_step_cuda.cpp (CUDA).
// Python face, fake function and the pure-PyTorch reference: landscape/ops/lanczos_step.py.
#include "lanczos_step.h"

#include <torch/library.h>

#include "input_checks.h"

namespace landscape {

void check_lanczos_step_inputs(const at::Tensor& Q, const at::Tensor& w, int64_t j,
                               const at::Tensor& beta_prev) {
  TORCH_CHECK_VALUE(Q.dim() == 3, "Q should be a 3d tensor [m, S, n], got ", Q.dim(), "D");
  TORCH_CHECK_VALUE(w.dim() == 2, "w should be a 2d tensor [m, n], got ", w.dim(), "D");
  TORCH_CHECK_VALUE(beta_prev.dim() == 1, "beta_prev should be a 1d tensor [m], got ",
                    beta_prev.dim(), "D");
  check_floating(Q, "Q");
  check_like(w, "w", Q, "Q");
  check_like(beta_prev, "beta_prev", Q, "Q");
  const int64_t m = Q.size(0), S = Q.size(1), n = Q.size(2);
  TORCH_CHECK_VALUE(w.size(0) == m && w.size(1) == n, "w should have shape [", m, ", ", n,
                    "] like Q of shape ", Q.sizes(), ", got ", w.sizes());
  TORCH_CHECK_VALUE(beta_prev.size(0) == m, "beta_prev should have shape [", m,
                    "] (one per row of Q), got ", beta_prev.sizes());
  TORCH_CHECK_VALUE(0 <= j && j < S, "j should satisfy 0 <= j < S = ", S,
                    " (the basis slots of Q of shape ", Q.sizes(), "), got j = ", j);
}

}  // namespace landscape

TORCH_LIBRARY_FRAGMENT(landscape, m) {
  // Q: [m, S, n]; w: [m, n]; j: index of the current vector; beta_prev: [m];
  // full_reorth: two classical Gram-Schmidt passes against Q[:, :j + 1].
  // Returns alpha [m], beta [m], q_next [m, n].
  m.def(
      "lanczos_step(Tensor Q, Tensor w, int j, Tensor beta_prev, bool full_reorth) -> "
      "(Tensor alpha, Tensor beta, Tensor q_next)");
}
