// Helpers of the ops' input-check functions (check_<op>_inputs in csrc/<op>.cpp, called by
// the CPU and the CUDA kernel of the op alike).
//
// Messages are one line and name what arrived, torchvision style ("x should be a 2d tensor
// [N, in], got 3D"); dtypes are spelled as in Python (torch.float32) so that a kernel and the
// op's pure-PyTorch reference reject a bad argument with the same text. Bad arguments raise
// c10::ValueError, which Python sees as ValueError, like the references' checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>

namespace landscape {

// "torch.float32" for at::kFloat.
inline std::string dtype_name(at::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

// t is float32 or float64 (the dtypes every kernel handles).
inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                    " should be float32 or float64, got ", dtype_name(t.scalar_type()));
}

// t has the dtype and the device of ref (the argument named ref_name).
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), name, " should have dtype ",
                    dtype_name(ref.scalar_type()), " like ", ref_name, ", got ",
                    dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " should be on ", ref.device(), " like ",
                    ref_name, ", got ", t.device());
}

}  // namespace landscape
