// CPU kernel of landscape::lanczos_step (float32, float64).
//
// The loops are in lanczos_step_kernels.h (torch-free, unit-tested by
// csrc/tests/test_lanczos_step_kernels.cpp); this file checks the inputs, allocates the
// outputs, and runs the passes with at::parallel_for over rows (and over parts of each row
// when there are fewer rows than threads). See the header for the pass structure and the
// precision of the dot products.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "../lanczos_step.h"
#include "lanczos_step_kernels.h"

namespace landscape {
namespace cpu {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lanczos_step_cpu(const at::Tensor& Q,
                                                                const at::Tensor& w, int64_t j,
                                                                const at::Tensor& beta_prev,
                                                                bool full_reorth) {
  check_lanczos_step_inputs(Q, w, j, beta_prev);
  TORCH_CHECK(Q.device().is_cpu(), "Q should be a CPU tensor for the CPU kernel, got ", Q.device());
  const int64_t m = Q.size(0), n = Q.size(2);
  // The loops need contiguous elements within each vector; rows and basis slots may have any
  // stride (a slice of a larger basis is read in place). Otherwise only the slots read are
  // copied.
  const at::Tensor basis = (Q.stride(2) == 1 || n <= 1) ? Q : Q.narrow(1, 0, j + 1).contiguous();
  const at::Tensor wv = (w.stride(1) == 1 || n <= 1) ? w : w.contiguous();
  at::Tensor alpha = at::empty({m}, Q.options());
  at::Tensor beta = at::empty({m}, Q.options());
  at::Tensor q_next = at::empty({m, n}, Q.options());
  if (m == 0) return {alpha, beta, q_next};

  AT_DISPATCH_FLOATING_TYPES(Q.scalar_type(), "lanczos_step_cpu", [&] {
    lanczos::LanczosStepProblem<scalar_t> p;
    p.Q = basis.const_data_ptr<scalar_t>();
    p.q_row_stride = basis.stride(0);
    p.q_vec_stride = basis.stride(1);
    p.w = wv.const_data_ptr<scalar_t>();
    p.w_row_stride = wv.stride(0);
    p.beta_prev = beta_prev.const_data_ptr<scalar_t>();
    p.beta_stride = beta_prev.stride(0);
    p.alpha = alpha.mutable_data_ptr<scalar_t>();
    p.beta = beta.mutable_data_ptr<scalar_t>();
    p.q_next = q_next.mutable_data_ptr<scalar_t>();
    p.m = m;
    p.n = n;
    p.j = j;
    p.full = full_reorth;
    p.threads = at::get_num_threads();
    const int64_t parts = lanczos::lanczos_parts(m, n, at::get_num_threads());
    lanczos::lanczos_step<scalar_t>(p, parts, [](int64_t begin, int64_t end, const auto& fn) {
      at::parallel_for(begin, end, 1, fn);
    });
  });
  return {alpha, beta, q_next};
}

}  // namespace cpu
}  // namespace landscape

TORCH_LIBRARY_IMPL(landscape, CPU, m) {
  m.impl("lanczos_step", &landscape::cpu::lanczos_step_cpu);
}
