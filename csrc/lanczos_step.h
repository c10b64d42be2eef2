// Shared declarations of the landscape::lanczos_step op (schema in csrc/lanczos_step.cpp,
// kernels in csrc/cpu/lanczos_step.cpp and csrc/cuda/lanczos_step_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace landscape {

// Checks what every kernel of lanczos_step needs: Q [m, S, n], w [m, n], beta_prev [m], all
// float32 or float64 of one dtype on one device, 0 <= j < S. Raises ValueError with a one-line
// message naming what arrived (csrc/input_checks.h). Device type checks are the kernels' own.
void check_lanczos_step_inputs(const at::Tensor& Q, const at::Tensor& w, int64_t j,
                               const at::Tensor& beta_prev);

}  // namespace landscape
