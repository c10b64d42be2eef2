// Shared declarations of the landscape::batched_linear and landscape::fused_mlp2 ops (schemas
// and input checks in csrc/batched_linear.cpp, kernels in csrc/cpu/batched_linear.cpp and
// csrc/cuda/batched_linear_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace landscape {

// Checks what every kernel of batched_linear needs: x [N, in] or [K, N, in] float32 or
// float64; basis_weight [J, out, in] with J >= 1; basis_bias [J, out] or None; coeffs [K, J];
// all of x's dtype and device. Raises ValueError with a one-line message naming what arrived.
// Device-type and backend limits are the kernels' own.
void check_batched_linear_inputs(const at::Tensor& x, const at::Tensor& basis_weight,
                                 const std::optional<at::Tensor>& basis_bias,
                                 const at::Tensor& coeffs);

// The same for fused_mlp2: x [N, in] float32 or float64; w1_basis [J, H, in] with J >= 1;
// b1_basis [J, H] or None; w2_basis [J, O, H]; b2_basis [J, O] or None; coeffs [K, J]; all of
// x's dtype and device; activation 0 (identity), 1 (relu) or 2 (tanh).
void check_fused_mlp2_inputs(const at::Tensor& x, const at::Tensor& w1_basis,
                             const std::optional<at::Tensor>& b1_basis,
                             const at::Tensor& w2_basis,
                             const std::optional<at::Tensor>& b2_basis, const at::Tensor& coeffs,
                             int64_t activation);

}  // namespace landscape
